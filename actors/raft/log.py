"""The in-memory Raft log of one node: snapshot boundary + entries + commit/apply marks.

Theory of operation
-------------------
The log is ``[snapshot (index S, term T)] + entries[S+1 .. last]``. Everything at or
below S has been folded into a state-machine snapshot; the entry terms after it are
kept in memory (the actor holds the durable copy on disk).

Three pointers partition it, always ``S <= applied <= committed <= last``:

* ``committed``: known to be stored on a quorum (§5.3/§5.4.2); only moves forward.
* ``applied``: handed to the state machine and acknowledged by ``advance``.
* ``unstable_from``: the first index not yet known to be durable on this node.
  Entries at or above it go out in the next Ready's ``entries``; the actor writes
  them and ``stable_to`` (called from ``advance``) moves the pointer. A conflicting
  append (§5.3) can move it *down*, because the replaced entries are no longer the
  ones on disk.

``pending_snapshot`` is a snapshot received from the leader that the actor has not
installed yet (it goes out in the next Ready).

Nothing here decides *whether* something is allowed; RaftCore does that. This module
only keeps the indices straight, so its checks are assertions.
"""

from __future__ import annotations

from transport.raft_messages import Entry, SnapshotMeta


class RaftLog:
    __slots__ = (
        "snapshot",
        "snap_index",
        "snap_term",
        "_entries",
        "committed",
        "applied",
        "unstable_from",
        "pending_snapshot",
    )

    def __init__(
        self,
        snapshot: SnapshotMeta | None,
        entries: tuple[Entry, ...],
        committed: int,
        applied: int,
    ) -> None:
        self.snapshot = snapshot
        self.snap_index = snapshot.index if snapshot is not None else 0
        self.snap_term = snapshot.term if snapshot is not None else 0
        self._entries: list[Entry] = list(entries)
        self.committed = committed
        self.applied = applied
        # Everything loaded from disk is durable by definition.
        self.unstable_from = self.last_index + 1
        self.pending_snapshot: SnapshotMeta | None = None

    # -- queries ---------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.snap_index + 1

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snap_term

    @property
    def stable_last(self) -> int:
        """The highest index known to be on this node's disk."""
        return self.unstable_from - 1

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`; None if compacted away or beyond the end."""
        offset = index - self.snap_index
        if offset == 0:
            return self.snap_term
        if offset < 0 or offset > len(self._entries):
            return None
        return self._entries[offset - 1].term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log is at least as up to date as ours if its last term is higher,
        or the same with an index at least as long."""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def slice(self, lo: int, hi: int) -> tuple[Entry, ...]:
        """Entries lo..hi inclusive; both must be in memory."""
        assert self.snap_index < lo, (lo, self.snap_index)
        assert hi <= self.last_index, (hi, self.last_index)
        base = self.snap_index + 1
        return tuple(self._entries[lo - base : hi - base + 1])

    def entries_from(self, lo: int, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Up to max_entries entries starting at lo, cut at max_bytes of payload (but
        always at least one entry, or a big entry could never be sent)."""
        if lo > self.last_index:
            return ()
        assert lo > self.snap_index, (lo, self.snap_index)
        start = lo - self.snap_index - 1
        end = min(len(self._entries), start + max_entries)
        total = 0
        for j in range(start, end):
            total += len(self._entries[j].data)
            if total > max_bytes and j > start:
                end = j
                break
        return tuple(self._entries[start:end])

    def unstable_entries(self) -> tuple[Entry, ...]:
        if self.unstable_from > self.last_index:
            return ()
        return tuple(self._entries[self.unstable_from - self.snap_index - 1 :])

    def next_committed_entries(self) -> tuple[Entry, ...]:
        """Committed entries the state machine has not been given yet. A pending
        snapshot covers everything up to its index."""
        lo = self.applied + 1
        if self.pending_snapshot is not None:
            lo = max(lo, self.pending_snapshot.index + 1)
        if lo > self.committed:
            return ()
        return self.slice(lo, self.committed)

    def has_next_committed(self) -> bool:
        lo = self.applied + 1
        if self.pending_snapshot is not None:
            lo = max(lo, self.pending_snapshot.index + 1)
        return lo <= self.committed

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """Index of the first entry whose term differs from ours (or that we lack);
        0 if we already hold all of them."""
        for e in entries:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term`. Used on both sides of
        a rejected MsgApp to skip a whole term of mismatching entries per round trip
        (thesis §5.3 fast backtracking). Stops at the snapshot boundary: below it we
        no longer know terms, and the leader will send a snapshot anyway."""
        if index > self.last_index:
            index = self.last_index
        while index > self.snap_index:
            t = self.term(index)
            assert t is not None
            if t <= term:
                return index
            index -= 1
        return index

    # -- mutations -------------------------------------------------------

    def append(self, entries: tuple[Entry, ...]) -> None:
        """Leader-side append at the end of the log."""
        assert entries and entries[0].index == self.last_index + 1, (entries[0], self.last_index)
        self._entries.extend(entries)

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """§5.3 AppendEntries receiver: if our entry at `index` has `log_term`, store
        `entries` after it, truncating at the first conflict, and advance commit.
        Returns the last index now known to match the leader, or None on mismatch."""
        if self.term(index) != log_term:
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            # §5.4 Leader Completeness: a committed entry can never be overwritten.
            assert conflict > self.committed, ("conflict with committed entry", conflict, self.committed)
            self._truncate_and_append(entries[conflict - index - 1 :])
        # §5.3: commit = min(leaderCommit, index of last new entry); entries beyond
        # last_new may be stale leftovers from another leader.
        self.commit_to(min(commit, last_new))
        return last_new

    def _truncate_and_append(self, entries: tuple[Entry, ...]) -> None:
        first = entries[0].index
        assert first > self.snap_index and first <= self.last_index + 1, (first, self.snap_index)
        del self._entries[first - self.snap_index - 1 :]
        self._entries.extend(entries)
        # The disk still holds the replaced entries; they must be rewritten.
        self.unstable_from = min(self.unstable_from, first)

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index, ("commit beyond log", index, self.last_index)
            self.committed = index

    def stable_to(self, index: int, term: int) -> None:
        """The actor persisted entries up to (index, term). If the entry there changed
        meanwhile (a conflicting append), the disk holds something stale and the
        pointer stays; (index, term) identifies a unique entry prefix (Log Matching,
        §5.3), so a term match proves everything up to index is what was persisted."""
        if self.term(index) == term:
            self.unstable_from = max(self.unstable_from, index + 1)

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self.snapshot = meta
        self.snap_index = meta.index
        self.snap_term = meta.term
        self._entries = []
        self.committed = meta.index
        self.unstable_from = meta.index + 1
        self.pending_snapshot = meta

    def compact(self, index: int, voters: tuple[int, ...], learners: tuple[int, ...] = ()) -> SnapshotMeta:
        """Drop entries <= index; the state machine has a snapshot at `index`, and
        (voters, learners) was the configuration there."""
        assert self.snap_index < index <= self.applied, (index, self.snap_index, self.applied)
        term = self.term(index)
        assert term is not None
        del self._entries[: index - self.snap_index]
        meta = SnapshotMeta(index=index, term=term, voters=voters, learners=learners)
        self.snapshot = meta
        self.snap_index = index
        self.snap_term = term
        return meta
