"""The Raft log and hard state in LMDB (written by the raft actor only).

Layout (environment <data_dir>/raft):
  db "entries": key = index as 8-byte big-endian (so LMDB's order is log order),
                value = CBOR [term, data], or [term, data, kind] for an entry whose kind
                is not ENTRY_NORMAL (a configuration change), so a static cluster's
                log keeps the format it always had
  db "meta":    b"hard_state" -> CBOR [term, vote, commit]
                b"snapshot"   -> CBOR [index, term, [voters...]] or, with learners,
                                 [index, term, [voters...], [learners...]]
                                 (the log's compacted prefix and its configuration)

`save` writes one Ready's worth (hard state, snapshot, entries with conflict
truncation, compaction) in one transaction: one fsync per batch.
"""

from __future__ import annotations

import struct

import cbor2

from transport.raft_messages import ENTRY_NORMAL, Entry, HardState, SnapshotMeta

_INDEX = struct.Struct(">Q")
HARD_STATE_KEY = b"hard_state"
SNAPSHOT_KEY = b"snapshot"


class RaftLogStore:
    def __init__(self, env):
        self.env = env
        self.entries_db = env.open_db(b"entries")
        self.meta_db = env.open_db(b"meta")

    def load(self) -> tuple[HardState, SnapshotMeta | None, tuple[Entry, ...]]:
        with self.env.begin() as txn:
            raw = txn.get(HARD_STATE_KEY, db=self.meta_db)
            hard_state = HardState(*cbor2.loads(raw)) if raw else HardState()
            raw = txn.get(SNAPSHOT_KEY, db=self.meta_db)
            snapshot = None
            if raw:
                snapshot = _snapshot_from_record(cbor2.loads(raw))
            first = snapshot.index + 1 if snapshot else 1
            entries = []
            cursor = txn.cursor(db=self.entries_db)
            if cursor.set_range(_INDEX.pack(first)):
                for key, value in cursor:
                    entries.append(_entry_from_record(_INDEX.unpack(key)[0], cbor2.loads(value)))
        return hard_state, snapshot, tuple(entries)

    def save(self, hard_state: HardState | None, entries, snapshot: SnapshotMeta | None = None, compact_to: int = 0) -> None:
        """Persist one batch durably. entries[0].index replaces any stored entries
        from that index on (Raft §5.3 conflict truncation)."""
        if hard_state is None and not entries and snapshot is None and not compact_to:
            return
        with self.env.begin(write=True) as txn:
            if snapshot is not None:
                txn.put(SNAPSHOT_KEY, cbor2.dumps(_snapshot_record(snapshot.index, snapshot.term, snapshot.voters, snapshot.learners)), db=self.meta_db)
                self._delete_from(txn, 0, snapshot.index + 1)  # an installed snapshot replaces the whole log before it
                self._delete_from(txn, snapshot.index + 1, None)
            if entries:
                self._delete_from(txn, entries[0].index, None)
                cursor = txn.cursor(db=self.entries_db)
                cursor.putmulti(
                    [(_INDEX.pack(e.index), cbor2.dumps(_entry_record(e))) for e in entries], append=True
                )
            if compact_to:
                self._delete_from(txn, 0, compact_to + 1)
            if hard_state is not None:
                txn.put(HARD_STATE_KEY, cbor2.dumps([hard_state.term, hard_state.vote, hard_state.commit]), db=self.meta_db)

    def save_compaction(self, index: int, term: int, voters: tuple[int, ...], learners: tuple[int, ...] = ()) -> None:
        """Record that the log now begins after (index, term), with the configuration
        there, and drop the prefix."""
        with self.env.begin(write=True) as txn:
            txn.put(SNAPSHOT_KEY, cbor2.dumps(_snapshot_record(index, term, voters, learners)), db=self.meta_db)
            self._delete_from(txn, 0, index + 1)

    def entries(self, low: int, high: int) -> tuple[Entry, ...]:
        """Stored entries with low <= index < high (fewer if compacted or missing)."""
        found = []
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.entries_db)
            if cursor.set_range(_INDEX.pack(low)):
                for key, value in cursor:
                    index = _INDEX.unpack(key)[0]
                    if index >= high:
                        break
                    found.append(_entry_from_record(index, cbor2.loads(value)))
        return tuple(found)

    def term(self, index: int) -> int:
        """The term of a stored entry, or of the snapshot when index is its index."""
        with self.env.begin() as txn:
            raw = txn.get(_INDEX.pack(index), db=self.entries_db)
            if raw is not None:
                return cbor2.loads(raw)[0]
            raw = txn.get(SNAPSHOT_KEY, db=self.meta_db)
        if raw:
            snapshot = _snapshot_from_record(cbor2.loads(raw))
            if snapshot.index == index:
                return snapshot.term
        raise KeyError(f"no entry at index {index}")

    def _delete_from(self, txn, low: int, high: int | None) -> None:
        """Delete entries with low <= index < high (high None = to the end)."""
        cursor = txn.cursor(db=self.entries_db)
        if not cursor.set_range(_INDEX.pack(low)):
            return
        while True:
            key = cursor.key()
            if high is not None and _INDEX.unpack(key)[0] >= high:
                return
            if not cursor.delete():
                return
            if cursor.key() == b"":
                return


def _entry_record(e: Entry) -> list:
    return [e.term, e.data] if e.kind == ENTRY_NORMAL else [e.term, e.data, e.kind]


def _entry_from_record(index: int, record: list) -> Entry:
    if len(record) == 2:
        return Entry(index, record[0], record[1])
    term, data, kind = record
    return Entry(index, term, data, kind)


def _snapshot_record(index: int, term: int, voters, learners) -> list:
    record = [index, term, list(voters)]
    if learners:
        record.append(list(learners))
    return record


def _snapshot_from_record(record: list) -> SnapshotMeta:
    learners = tuple(record[3]) if len(record) > 3 else ()
    return SnapshotMeta(record[0], record[1], tuple(record[2]), learners)
