"""The keyspace's own counters, in the `kv_meta` db (see store/LAYOUT.md).

They live in the same environment as the keys, so each one commits in the
same LMDB transaction as the writes it describes: after a crash the applied
index, the current revision and the records always agree.
"""

from __future__ import annotations

from store.revisions import uint64_bytes, uint64_value

APPLIED_INDEX = b"applied_index"  # last Raft log index applied to this keyspace
CURRENT_REVISION = b"current_revision"  # store revision; absent = 1 (etcd starts at 1)
COMPACT_REVISION = b"compact_revision"  # absent = never compacted (0)
COMPACT_POSITION = b"compact_position"  # present while physical compaction is unfinished
PHYSICAL_REVISION = b"physical_revision"  # revision of the last finished physical compaction; absent = 0
LAYOUT_VERSION = b"layout_version"

LAYOUT = 1
FIRST_REVISION = 1


def get_int(txn, db, name: bytes, default: int) -> int:
    encoded = txn.get(name, db=db)
    return default if encoded is None else uint64_value(encoded)


def put_int(txn, db, name: bytes, value: int) -> None:
    txn.put(name, uint64_bytes(value), db=db)
