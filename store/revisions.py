"""Fixed-width encodings of revisions and counters (see store/LAYOUT.md).

Every integer that LMDB must order is big-endian and fixed-width, so LMDB's
memcmp order is numeric order and a cursor seek finds "the first revision >= R"
without decoding anything.

A revision is (main, sub), as in etcd: `main` is the store revision a request
created, `sub` numbers the changes inside it (a txn writing three keys makes
main N with subs 0, 1, 2). 8 bytes of main + 4 bytes of sub = 12 bytes; a sub
never reaches 2**32 because one request changes at most max_txn_ops keys or the
keys of one lease.
"""

from __future__ import annotations

import struct

_REVISION = struct.Struct(">QI")
_UINT64 = struct.Struct(">Q")
_INT64 = struct.Struct(">q")

REVISION_BYTES = _REVISION.size  # 12

# Index entries are the 12 revision bytes plus one mark byte telling whether
# that revision put the key or deleted it (a tombstone), so a historical
# existence check needs no record fetch.
MARK_PUT = b"\x00"
MARK_TOMBSTONE = b"\x01"
INDEX_ENTRY_BYTES = REVISION_BYTES + 1  # 13, every dup of the index db (DUPFIXED)


def revision_bytes(main: int, sub: int = 0) -> bytes:
    return _REVISION.pack(main, sub)


def revision_main(encoded: bytes) -> int:
    """The main revision of 12 revision bytes (or of a 13-byte index entry)."""
    return _UINT64.unpack_from(encoded)[0]


def index_entry(main: int, sub: int, tombstone: bool) -> bytes:
    return _REVISION.pack(main, sub) + (MARK_TOMBSTONE if tombstone else MARK_PUT)


def index_seek(main: int) -> bytes:
    """The smallest index entry of revision `main`: seeking to it finds the
    first entry with a main revision >= `main`."""
    return _REVISION.pack(main, 0) + MARK_PUT


def is_tombstone(entry: bytes) -> bool:
    return entry[REVISION_BYTES] == 1


def uint64_bytes(value: int) -> bytes:
    return _UINT64.pack(value)


def uint64_value(encoded: bytes) -> int:
    return _UINT64.unpack(encoded)[0]


def int64_bytes(value: int) -> bytes:
    return _INT64.pack(value)


def int64_value(encoded: bytes) -> int:
    return _INT64.unpack(encoded)[0]
