"""The payload of a Raft entry: who proposed it and what.

payload = origin member id (8 bytes, big-endian) + the request's frame, exactly
as the client sent it. The frontend validated the frame already, so it is
forwarded into the log without re-encoding; only the apply actor decodes it,
once. The origin tells every member's apply actor whether it must answer: only
the member that took the request does.
"""

from __future__ import annotations

import struct

_ORIGIN = struct.Struct(">Q")
ORIGIN_BYTES = _ORIGIN.size


def make_payload(origin: int, frame: bytes) -> bytes:
    return _ORIGIN.pack(origin) + frame


def split_payload(payload: bytes) -> tuple[int, bytes]:
    return _ORIGIN.unpack_from(payload)[0], payload[ORIGIN_BYTES:]
