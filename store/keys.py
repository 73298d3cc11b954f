"""Key ranges as etcd spells them, and cursor seeks that accept any key length.

etcd's range convention (rpc.proto RangeRequest):
  range_end == b""     the single key `key`
  range_end == b"\\0"   every key >= key (key b"\\0" too: then the whole keyspace)
  otherwise            the half-open interval [key, range_end)

Internally every range becomes a half-open interval [start, end) with end None
for "no upper bound"; a single key k is [k, k + b"\\0"), the interval holding
exactly k, so one scan loop serves points and ranges alike.
"""

from __future__ import annotations

from transport.errors import EmptyKeyError


def bounds(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    """[start, end) for an etcd (key, range_end) pair; end None = unbounded."""
    if not range_end:
        return key, key + b"\0"
    if range_end == b"\0":
        return key, None
    return key, range_end


def contains(start: bytes, end: bytes | None, key: bytes) -> bool:
    return start <= key and (end is None or key < end)


def require_key(key: bytes) -> None:
    """etcd rejects an empty key before anything runs (v3rpc checkRangeRequest,
    checkPutRequest, checkDeleteRequest; compares in checkTxnRequest)."""
    if not key:
        raise EmptyKeyError()


def seek(cursor, start: bytes, max_key_bytes: int) -> bool:
    """Position `cursor` on the first stored key >= start (its first duplicate
    in a dupsort db). LMDB refuses seek keys longer than its key limit; no
    stored key is that long, so the first stored key >= start is the first one
    > start[:max], i.e. >= start[:max] skipping start[:max] itself."""
    if len(start) <= max_key_bytes:
        return cursor.set_range(start)
    prefix = start[:max_key_bytes]
    if not cursor.set_range(prefix):
        return False
    if cursor.key() == prefix:
        return cursor.next_nodup()
    return True
