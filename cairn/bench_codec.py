"""`cairn bench codec`: µs to encode and to decode each frame a put carries.

Why: a sequential put is bound by per-operation latency, and each put's frames
go through transport/codec.py several times (client door, frontend -> raft,
raft -> peers and back, raft -> apply, apply -> frontend). This measures that
cost alone, with no cluster, so a change to the codec can be judged before a
cluster run. Each figure is the best of several repeats (the least disturbed
by the other processes on a small machine).
"""

from __future__ import annotations

import json
import timeit

from transport import codec
from transport import messages as m
from transport.entries import make_payload
from transport.raft_messages import MSG_APP, MSG_APP_RESP, Entry, RaftMessage

MEMBER_A, MEMBER_B = 0x8E9E05C52164694D, 0x91BC3C398FB3C146
HEADER = m.ResponseHeader(0x4E1B9A3C5F2D7E10, MEMBER_A, 12345, 7)


def put_frames(key_size: int = 8, value_size: int = 8) -> dict[str, tuple[object, int]]:
    """name -> (message, request id): the frames one sequential put carries,
    built with the real classes as the actors build them."""
    put = m.PutRequest(b"k" * key_size, b"v" * value_size)
    put_frame = codec.encode(put, 42)
    payload = make_payload(MEMBER_A, put_frame, user="")
    entry = Entry(12346, 7, payload)
    response = m.PutResponse(HEADER)
    txn = m.TxnRequest(success=(put,))
    return {
        "PutRequest (client)": (put, 42),
        "TxnRequest (1 put)": (txn, 43),
        "ProposeBatch": (m.ProposeBatch((42,), (payload,)), 42),
        "RaftBatch MSG_APP": (m.RaftBatch(MEMBER_A, (RaftMessage(MSG_APP, MEMBER_B, MEMBER_A, 7, 7, 12345, (entry,), 12345),)), 0),
        "RaftBatch MSG_APP_RESP": (m.RaftBatch(MEMBER_B, (RaftMessage(MSG_APP_RESP, MEMBER_A, MEMBER_B, 7, index=12346),)), 0),
        "CommittedEntries": (m.CommittedEntries((entry,)), 0),
        "Applied (frontend)": (m.Applied(12346, 12346, (42,), (codec.encode(response, 42),)), 0),
        "PutResponse": (response, 42),
    }


def measure(repeats: int = 5, number: int = 20000, key_size: int = 8, value_size: int = 8) -> list[dict]:
    """[{frame, bytes, encode_us, decode_us}] for each frame of a put."""
    rows = []
    for name, (message, request_id) in put_frames(key_size, value_size).items():
        frame = codec.encode(message, request_id)
        assert codec.decode(frame) == (request_id, message), name
        encode = timeit.repeat(lambda: codec.encode(message, request_id), repeat=repeats, number=number)
        decode = timeit.repeat(lambda: codec.decode(frame), repeat=repeats, number=number)
        rows.append({
            "frame": name,
            "bytes": len(frame),
            "encode_us": round(min(encode) / number * 1e6, 2),
            "decode_us": round(min(decode) / number * 1e6, 2),
        })
    return rows


def render(rows: list[dict]) -> str:
    lines = [f"{'frame':<24} {'bytes':>6} {'encode µs':>10} {'decode µs':>10}"]
    for row in rows:
        lines.append(f"{row['frame']:<24} {row['bytes']:>6} {row['encode_us']:>10.2f} {row['decode_us']:>10.2f}")
    lines.append(f"{'total':<24} {'':>6} {sum(r['encode_us'] for r in rows):>10.2f} {sum(r['decode_us'] for r in rows):>10.2f}")
    return "\n".join(lines)


def add_codec_parser(commands) -> None:
    codec_ = commands.add_parser("codec", help="µs to encode and decode each frame of a put (no cluster)")
    codec_.add_argument("--repeats", type=int, default=5)
    codec_.add_argument("--number", type=int, default=20000, help="runs per repeat")
    codec_.add_argument("--key-size", type=int, default=8)
    codec_.add_argument("--val-size", type=int, default=8)
    codec_.add_argument("--json", action="store_true")


def run_codec(args) -> int:
    rows = measure(args.repeats, args.number, args.key_size, args.val_size)
    print(json.dumps(rows, indent=2) if args.json else render(rows))
    return 0
