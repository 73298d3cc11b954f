"""Helpers for tests that handle the Raft log's files directly (store/raftlog.py):
finding frames, damaging them, and writing the LMDB log that came before."""

from __future__ import annotations

import cbor2
import lmdb

from store.raftlog_lmdb import legacy_path
from store.wal_format import FRAME_HEADER_BYTES


def frame_offsets(path) -> list[int]:
    """Where each frame of a segment file begins, and last where the frames end
    (the preallocated zeros, if any, begin); read from the lengths alone."""
    with open(path, "rb") as handle:
        data = handle.read()
    offsets, offset = [], 0
    while offset < len(data) and data[offset : offset + 4] != bytes(4):
        offsets.append(offset)
        offset += FRAME_HEADER_BYTES + int.from_bytes(data[offset + 4 : offset + 8], "big")
    return offsets + [offset]


def flip_bit(path, offset: int) -> None:
    """Damage one byte of a file in place, as a bad sector or a stray write would."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x10]))


def write_legacy_raft_log(data_dir, hard_state, snapshot, stored) -> None:
    """An LMDB Raft log as cairn wrote it before the WAL (store/raftlog_lmdb.py's
    layout), written here independently of the code that reads it."""
    env = lmdb.open(legacy_path(str(data_dir)), map_size=64 << 20, max_dbs=4)
    with env.begin(write=True) as txn:
        entries_db = env.open_db(b"entries", txn=txn)
        meta_db = env.open_db(b"meta", txn=txn)
        txn.put(b"hard_state", cbor2.dumps([hard_state.term, hard_state.vote, hard_state.commit]), db=meta_db)
        if snapshot is not None:
            record = [snapshot.index, snapshot.term, list(snapshot.voters)] + ([list(snapshot.learners)] if snapshot.learners else [])
            txn.put(b"snapshot", cbor2.dumps(record), db=meta_db)
        for e in stored:
            value = [e.term, e.data] if e.kind == 0 else [e.term, e.data, e.kind]
            txn.put(e.index.to_bytes(8, "big"), cbor2.dumps(value), db=entries_db)
    env.close()
