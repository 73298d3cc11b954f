"""The payload of a Raft entry: who proposed it, for whom, and what.

payload = origin member id (8 bytes, big-endian) + the request's frame, exactly
as the client sent it. The frontend validated the frame already, so it is
forwarded into the log without re-encoding; only the apply actor decodes it,
once. The origin tells every member's apply actor whether it must answer: only
the member that took the request does.

With auth (etcd's checks in the state machine), the frontend also records the
user the request runs as:

    payload = origin (8 bytes) + 0x00 + user length (2 bytes, big-endian) + user (UTF-8) + frame

A frame is a CBOR array, so its first byte is never 0x00: a payload without
the marker is the older form (no user: a member's own proposal, or an entry
written before auth existed), which apply does not check. user "" is a client
that sent no token.
"""

from __future__ import annotations

import struct

_ORIGIN = struct.Struct(">Q")
ORIGIN_BYTES = _ORIGIN.size
_USER_MARK = 0x00
_USER_LEN = struct.Struct(">H")
MAX_USER_BYTES = 0xFFFF


def make_payload(origin: int, frame: bytes, user: str | None = None) -> bytes:
    if user is None:
        return _ORIGIN.pack(origin) + frame
    name = user.encode()
    if len(name) > MAX_USER_BYTES:
        raise ValueError("user name too long")
    return _ORIGIN.pack(origin) + bytes((_USER_MARK,)) + _USER_LEN.pack(len(name)) + name + frame


def split_payload_user(payload: bytes) -> tuple[int, str | None, bytes]:
    """(origin, user or None, frame)."""
    origin = _ORIGIN.unpack_from(payload)[0]
    if len(payload) > ORIGIN_BYTES and payload[ORIGIN_BYTES] == _USER_MARK:
        (length,) = _USER_LEN.unpack_from(payload, ORIGIN_BYTES + 1)
        start = ORIGIN_BYTES + 1 + _USER_LEN.size
        if start + length > len(payload):
            raise struct.error("user name runs past the payload")
        return origin, payload[start:start + length].decode(), payload[start + length:]
    return origin, None, payload[ORIGIN_BYTES:]


def split_payload(payload: bytes) -> tuple[int, bytes]:
    origin, _, frame = split_payload_user(payload)
    return origin, frame
