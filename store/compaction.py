"""Compaction: forget history below a revision, in bounded steps.

Logical compaction (Writer.compact) records the compact revision C; from then
on reads below C raise CompactedError. Physical compaction then removes every
record no read at a revision >= C can see, with its index entry, so LMDB puts
the pages on its free list and later writes reuse them:
  - a version superseded at C: an older version of a key that has a newer
    version at or below C (etcd keeps "the latest version of every key at C");
  - a tombstone below C (the key is absent from then on either way). A
    tombstone exactly at C is kept until the next compaction, so a watch
    replaying from C (allowed, as in etcd) still sees the deletes made at C.

The walk visits the `revs` records from the previous completed compaction P
(inclusive: its kept tombstones go now) up to C, in revision order. Visiting a
record of key k removes k's versions older than it; visiting a tombstone below
C removes the tombstone too. What lies below P was already minimal, so the work
is proportional to the history written since P, not to the number of keys.

The walk's position is stored in kv_meta (COMPACT_POSITION), so the apply actor
may spread a large compaction over many write transactions (compact_step with
a record budget, one call per batch, until it returns True); reads are exact at
every step, since only records invisible at revisions >= C are removed. A newer
compaction before the walk finished restarts it from P toward the new C.
"""

from __future__ import annotations

from store import meta, records
from store.revisions import MARK_TOMBSTONE, REVISION_BYTES, revision_bytes, revision_main


def begin(space, txn, revision: int) -> None:
    """Record compact revision `revision` and (re)start the physical walk."""
    meta.put_int(txn, space.meta_db, meta.COMPACT_REVISION, revision)
    done = meta.get_int(txn, space.meta_db, meta.PHYSICAL_REVISION, 0)
    txn.put(meta.COMPACT_POSITION, revision_bytes(done), db=space.meta_db)


def pending(space, txn) -> bool:
    return txn.get(meta.COMPACT_POSITION, db=space.meta_db) is not None


def step(space, txn, max_records: int) -> bool:
    """Visit up to max_records records (0 = no limit); True when done."""
    position = txn.get(meta.COMPACT_POSITION, db=space.meta_db)
    if position is None:
        return True
    compact = meta.get_int(txn, space.meta_db, meta.COMPACT_REVISION, 0)
    stop = revision_bytes(compact + 1)
    revs = txn.cursor(db=space.revs_db)
    index = txn.cursor(db=space.index_db)
    visited = 0
    # Re-seek for every record: visiting one deletes records behind the cursor.
    while revs.set_range(position) and revs.key() < stop:
        if max_records and visited >= max_records:
            txn.put(meta.COMPACT_POSITION, position, db=space.meta_db)
            return False
        pointer = revs.key()
        _visit(txn, space, index, pointer, revs.value(), compact)
        position = pointer + b"\0"  # the smallest key after pointer (keys are 12 bytes)
        visited += 1
    txn.delete(meta.COMPACT_POSITION, db=space.meta_db)
    meta.put_int(txn, space.meta_db, meta.PHYSICAL_REVISION, compact)
    return True


def _visit(txn, space, index, pointer: bytes, record: bytes, compact: int) -> None:
    key = records.record_key(record)
    _remove_older(txn, space, index, key, pointer)
    if records.record_is_tombstone(record) and revision_main(pointer) < compact:
        txn.delete(key, pointer + MARK_TOMBSTONE, db=space.index_db)
        txn.delete(pointer, db=space.revs_db)


def _remove_older(txn, space, index, key: bytes, pointer: bytes) -> None:
    """Remove key's versions older than the one at `pointer` (superseded by it;
    `pointer` is at or below the compact revision)."""
    index.set_key(key)
    while True:
        entry = index.value()
        older = entry[:REVISION_BYTES]
        if older >= pointer:
            return
        txn.delete(older, db=space.revs_db)
        index.delete()  # moves to the key's next entry (this record's own, at least)

