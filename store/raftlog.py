"""The Raft log and hard state in LMDB (written by the raft actor only).

Layout (environment <data_dir>/raft):
  db "entries": key = index as 8-byte big-endian (so LMDB's order is log order),
                value = CBOR [term, data]
  db "meta":    b"hard_state" -> CBOR [term, vote, commit]
                b"snapshot"   -> CBOR [index, term, [voters...]]  (the log's compacted prefix)

`save` writes one Ready's worth (hard state, snapshot, entries with conflict
truncation, compaction) in one transaction: one fsync per batch.
"""

from __future__ import annotations

import struct

import cbor2

from transport.raft_messages import Entry, HardState, SnapshotMeta

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
                index, term, voters = cbor2.loads(raw)
                snapshot = SnapshotMeta(index, term, tuple(voters))
            first = snapshot.index + 1 if snapshot else 1
            entries = []
            cursor = txn.cursor(db=self.entries_db)
            if cursor.set_range(_INDEX.pack(first)):
                for key, value in cursor:
                    term, data = cbor2.loads(value)
                    entries.append(Entry(_INDEX.unpack(key)[0], term, data))
        return hard_state, snapshot, tuple(entries)

    def save(self, hard_state: HardState | None, entries, snapshot: SnapshotMeta | None = None, compact_to: int = 0) -> None:
        """Persist one batch durably. entries[0].index replaces any stored entries
        from that index on (Raft §5.3 conflict truncation)."""
        if hard_state is None and not entries and snapshot is None and not compact_to:
            return
        with self.env.begin(write=True) as txn:
            if snapshot is not None:
                txn.put(SNAPSHOT_KEY, cbor2.dumps([snapshot.index, snapshot.term, list(snapshot.voters)]), db=self.meta_db)
                self._delete_from(txn, 0, snapshot.index + 1)  # an installed snapshot replaces the whole log before it
                self._delete_from(txn, snapshot.index + 1, None)
            if entries:
                self._delete_from(txn, entries[0].index, None)
                cursor = txn.cursor(db=self.entries_db)
                cursor.putmulti(
                    [(_INDEX.pack(e.index), cbor2.dumps([e.term, e.data])) for e in entries], append=True
                )
            if compact_to:
                self._delete_from(txn, 0, compact_to + 1)
            if hard_state is not None:
                txn.put(HARD_STATE_KEY, cbor2.dumps([hard_state.term, hard_state.vote, hard_state.commit]), db=self.meta_db)

    def save_compaction(self, index: int, term: int, voters: tuple[int, ...]) -> None:
        """Record that the log now begins after (index, term) and drop the prefix."""
        with self.env.begin(write=True) as txn:
            txn.put(SNAPSHOT_KEY, cbor2.dumps([index, term, list(voters)]), db=self.meta_db)
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
                    term, data = cbor2.loads(value)
                    found.append(Entry(index, term, data))
        return tuple(found)

    def term(self, index: int) -> int:
        """The term of a stored entry, or of the snapshot when index is its index."""
        with self.env.begin() as txn:
            raw = txn.get(_INDEX.pack(index), db=self.entries_db)
            if raw is not None:
                return cbor2.loads(raw)[0]
            raw = txn.get(SNAPSHOT_KEY, db=self.meta_db)
        if raw:
            snapshot_index, snapshot_term, _ = cbor2.loads(raw)
            if snapshot_index == index:
                return snapshot_term
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
