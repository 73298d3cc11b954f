"""Reading the keyspace at a revision: point lookups, ordered scans, counts and
history replay, through one LMDB transaction (read-only, or the apply actor's
write transaction, which sees its own earlier writes).

Theory of operation
-------------------
Reads at the view's own revision (the latest state) walk the `live` db, which
holds only keys that exist now, each with a pointer to its current record: the
cost is the keys returned (plus the keys counted), never the history.

Reads at an older revision R walk the `index` db (every key that has history,
dupsort, one 13-byte entry per version in revision order). For each key the
version visible at R is found with at most two seeks inside that key's
duplicates: the last entry (the common case, nothing newer than R), or the
entry just before the first one > R. A tombstone entry means "absent at R".

History replay walks the `revs` db, which is ordered by (main, sub) revision,
exactly the order etcd's watch delivers events in.
"""

from __future__ import annotations

from transport.errors import CompactedError, FutureRevisionError
from transport.messages import EVENT_DELETE, EVENT_PUT, Event, KeyValue

from store import records
from store.keys import contains, seek
from store.revisions import (
    MARK_PUT,
    REVISION_BYTES,
    index_seek,
    is_tombstone,
    revision_bytes,
    revision_main,
)

# Bytes a KeyValue costs beyond its key and value, for paging by size: four
# varint revisions/version/lease and protobuf field tags, roughly.
KV_OVERHEAD_BYTES = 32


class View:
    """The keyspace through `txn`, whose latest state is store revision
    `revision`; `compact_revision` is 0 until the first compaction."""

    __slots__ = ("_txn", "_space", "revision", "compact_revision", "_max_key", "_cursors")

    def __init__(self, txn, space, revision: int, compact_revision: int):
        self._txn = txn
        self._space = space
        self.revision = revision
        self.compact_revision = compact_revision
        self._max_key = space.max_key_bytes
        self._cursors = {}

    # -- cursors are opened on first use: most requests touch one or two dbs --

    def cursor(self, name: str):
        cursor = self._cursors.get(name)
        if cursor is None:
            db = {"live": self._space.live_db, "index": self._space.index_db, "probe": self._space.index_db}[name]
            cursor = self._cursors[name] = self._txn.cursor(db=db)
        return cursor

    # -- revisions --

    def resolve(self, requested: int) -> int:
        """The revision a range request reads (etcd rangeKeys order: a future
        revision first, then 0 = latest, then compacted; R == compact is readable)."""
        if requested > self.revision:
            raise FutureRevisionError()
        if requested <= 0:
            return self.revision
        if requested < self.compact_revision:
            raise CompactedError(compact_revision=self.compact_revision)
        return requested

    # -- point lookups --

    def current_pointer(self, key: bytes) -> bytes | None:
        """The revision bytes of key's live record, None if the key is absent."""
        if len(key) > self._max_key:
            return None
        return self._txn.get(key, db=self._space.live_db)

    def record(self, pointer: bytes) -> KeyValue:
        return records.decode(revision_main(pointer), self._txn.get(pointer[:REVISION_BYTES], db=self._space.revs_db))

    def current(self, key: bytes) -> KeyValue | None:
        pointer = self.current_pointer(key)
        return None if pointer is None else self.record(pointer)

    def _entry_at(self, index, key: bytes, revision: int) -> bytes | None:
        """The last index entry of `key` with main revision <= revision. `index`
        is on one of key's entries and stays on key (its last entry)."""
        index.last_dup()
        entry = index.value()
        if revision_main(entry) <= revision:
            return entry
        probe = self.cursor("probe")
        probe.set_range_dup(key, index_seek(revision + 1))  # exists: the last entry is > revision
        return probe.value() if probe.prev_dup() else None

    # -- ordered scans --

    def scan(self, start: bytes, end: bytes | None, revision: int, fetch_limit: int) -> tuple[list[KeyValue], int]:
        """(the first fetch_limit KeyValues of [start, end) at revision, 0 = all;
        how many keys the range holds at revision), in key order."""
        if revision >= self.revision:
            return self._scan_live(start, end, fetch_limit)
        kvs, total = [], 0
        for entry in self._visible_entries(start, end, revision):
            total += 1
            if not fetch_limit or len(kvs) < fetch_limit:
                kvs.append(self.record(entry))
        return kvs, total

    def _scan_live(self, start: bytes, end: bytes | None, fetch_limit: int) -> tuple[list[KeyValue], int]:
        live = self.cursor("live")
        if not seek(live, start, self._max_key):
            return [], 0
        kvs, record = [], self.record
        for key, pointer in live.iternext():
            if end is not None and key >= end:
                return kvs, len(kvs)
            if fetch_limit and len(kvs) == fetch_limit:
                break  # the cursor rests on the first key not fetched
            kvs.append(record(pointer))
        else:
            return kvs, len(kvs)
        whole = self._whole_live_count(start, end)
        return kvs, whole if whole is not None else len(kvs) + _count_keys(live, end)

    def count(self, start: bytes, end: bytes | None, revision: int) -> int:
        if revision < self.revision:
            return sum(1 for _ in self._visible_entries(start, end, revision))
        whole = self._whole_live_count(start, end)
        if whole is not None:
            return whole
        live = self.cursor("live")
        return _count_keys(live, end) if seek(live, start, self._max_key) else 0

    def _whole_live_count(self, start: bytes, end: bytes | None) -> int | None:
        """O(1) count when [start, end) covers every live key (a whole-keyspace
        listing, the common count): LMDB keeps the entry count of each db."""
        if end is not None:
            return None
        first = self._txn.cursor(db=self._space.live_db)
        if first.first() and start > first.key():
            return None
        return self._txn.stat(self._space.live_db)["entries"]

    def iterate(self, start: bytes, end: bytes | None, revision: int):
        """KeyValues of [start, end) at revision in key order, lazily (paging)."""
        if revision < self.revision:
            for entry in self._visible_entries(start, end, revision):
                yield self.record(entry)
            return
        live = self.cursor("live")
        if not seek(live, start, self._max_key):
            return
        for key, pointer in live.iternext():
            if end is not None and key >= end:
                return
            yield self.record(pointer)

    def _visible_entries(self, start: bytes, end: bytes | None, revision: int):
        """Index entries of the keys of [start, end) that exist at revision."""
        index = self.cursor("index")
        if not seek(index, start, self._max_key):
            return
        while True:
            key = index.key()
            if end is not None and key >= end:
                return
            entry = self._entry_at(index, key, revision)
            if entry is not None and not is_tombstone(entry):
                yield entry
            if not index.next_nodup():
                return

    # -- history --

    def events(
        self, start_revision: int, start: bytes, end: bytes | None, max_events: int, prev_kv: bool, max_records: int
    ) -> tuple[list[Event], int]:
        """Events of [start, end) from start_revision on, whole revisions only
        (a revision is never split, so a resumed replay never repeats or skips
        an event; one revision larger than max_events is returned whole).
        Returns (events, the next revision to read)."""
        revs = self._txn.cursor(db=self._space.revs_db)
        events: list[Event] = []
        pending: list[Event] = []
        pending_main, scanned = 0, 0
        if revs.set_range(revision_bytes(start_revision)):
            for pointer, stored in revs.iternext():
                main = revision_main(pointer)
                if main != pending_main:
                    if events and len(events) + len(pending) > max_events:
                        return events, pending_main
                    events.extend(pending)
                    pending = []
                    if len(events) >= max_events or (max_records and scanned >= max_records):
                        return events, main
                    pending_main = main
                scanned += 1
                key = records.record_key(stored)
                if contains(start, end, key):
                    pending.append(self._event(pointer, stored, key, prev_kv))
        if events and len(events) + len(pending) > max_events:
            return events, pending_main
        events.extend(pending)
        return events, max(start_revision, self.revision + 1)

    def _event(self, pointer: bytes, stored: bytes, key: bytes, with_prev: bool) -> Event:
        main = revision_main(pointer)
        kv = records.decode(main, stored)
        previous = self._previous(pointer, key, main) if with_prev else None
        return Event(EVENT_PUT if kv.version else EVENT_DELETE, kv, previous)

    def _previous(self, pointer: bytes, key: bytes, main: int) -> KeyValue | None:
        """The version of key just before the one at `pointer` (None after a
        tombstone or none). At exactly the compact revision the previous version
        may be physically gone, so it is never given there (etcd's watch reads
        prev_kv at mod_revision - 1, which is compacted then, and omits it too)."""
        probe = self.cursor("probe")
        probe.set_range_dup(key, pointer + MARK_PUT)  # this record's own entry
        if not probe.prev_dup():
            return None
        entry = probe.value()
        if is_tombstone(entry) or (main == self.compact_revision and revision_main(entry) < main):
            return None
        return self.record(entry)


def _count_keys(cursor, end: bytes | None) -> int:
    """Keys from the cursor's position up to end, without reading values."""
    if end is None:
        return sum(1 for _ in cursor.iternext(keys=True, values=False))
    count = 0
    for key in cursor.iternext(keys=True, values=False):
        if key >= end:
            break
        count += 1
    return count
