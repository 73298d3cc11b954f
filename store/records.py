"""The stored form of one key version (the value of the `revs` db).

    create_revision u64 | version u64 | lease i64 | key length u16 | key | value

26 fixed bytes, then the key, then the value to the end of the record: packing
with one precompiled struct is the cheapest encoding in CPython (cbor2 costs a
dict or list and a type dispatch per field). The mod_revision is not stored: it
is the main part of the record's own LMDB key. A tombstone is a record with
version 0 (and create_revision 0, no lease, no value), exactly the KeyValue that
etcd puts in a DELETE event.
"""

from __future__ import annotations

import struct

from transport.messages import KeyValue

_HEAD = struct.Struct(">QQqH")
HEAD_BYTES = _HEAD.size  # 26


def encode_put(key: bytes, create_revision: int, version: int, lease: int, value: bytes) -> bytes:
    return _HEAD.pack(create_revision, version, lease, len(key)) + key + value


def encode_tombstone(key: bytes) -> bytes:
    return _HEAD.pack(0, 0, 0, len(key)) + key


def decode(mod_revision: int, record: bytes) -> KeyValue:
    """The KeyValue a record stands for (a tombstone decodes with version 0)."""
    create_revision, version, lease, key_length = _HEAD.unpack_from(record)
    end = HEAD_BYTES + key_length
    return KeyValue(record[HEAD_BYTES:end], create_revision, mod_revision, version, record[end:], lease)


def record_key(record: bytes) -> bytes:
    key_length = _HEAD.unpack_from(record)[3]
    return record[HEAD_BYTES : HEAD_BYTES + key_length]


def record_is_tombstone(record: bytes) -> bool:
    return _HEAD.unpack_from(record)[1] == 0
