"""What a leader knows about each follower's log (etcd's tracker.Progress).

Theory of operation
-------------------
For every voter the leader keeps ``match`` (highest index known to be durable on that
node; §5.3 matchIndex) and ``next`` (the next index to send; §5.3 nextIndex), plus a
flow-control state:

* PROBE: we do not know where the follower's log diverges. Send one MsgApp, then
  pause until it is answered (or a heartbeat response arrives, so a lost message
  costs one heartbeat interval, not forever).
* REPLICATE: the follower is known to match up to ``match``; stream MsgApps
  optimistically (``next`` jumps ahead as soon as a message is sent), bounded by an
  ``Inflights`` window of unacknowledged messages.
* SNAPSHOT: the follower needs entries we compacted; a MsgSnap is out. Send nothing
  until the actor reports the snapshot's fate or the follower acknowledges an index
  at or past it.

``last_heard`` (in core ticks) backs check-quorum and ``quorum_active``.

``commit_sent`` is the highest commit index the follower has been told and can
act on (a message lets it commit at most what the message shows it holds);
``commit_wanted`` is the highest index whose commit it waits for: an entry it
forwarded (its client waits for the answer) or a read index it asked for. A core
that defers commit notices (RaftConfig.defer_commit_notice) tells at once only
the followers whose ``commit_wanted`` is newly committed; see core.py.
"""

from __future__ import annotations

from collections import deque

PROBE = 0
REPLICATE = 1
SNAPSHOT = 2
STATE_NAMES = {PROBE: "probe", REPLICATE: "replicate", SNAPSHOT: "snapshot"}

NEVER = -(1 << 62)


class Inflights:
    """Last indexes of the MsgApps sent and not yet acknowledged, oldest first."""

    __slots__ = ("capacity", "_q")

    def __init__(self, capacity: int) -> None:
        assert capacity >= 1
        self.capacity = capacity
        self._q: deque[int] = deque()

    def add(self, last_index: int) -> None:
        assert len(self._q) < self.capacity
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()


class Progress:
    __slots__ = ("match", "next", "state", "pending_snapshot", "probe_sent", "inflights", "last_heard", "commit_sent",
                 "commit_wanted")

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.last_heard = NEVER
        self.commit_sent = 0
        self.commit_wanted = 0

    def _reset_state(self, state: int) -> None:
        # What the follower was told may not have reached it (a rejection, a
        # lost connection, a snapshot): assume nothing.
        self.commit_sent = 0
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            # The follower may have installed the snapshot: resume after it.
            pending = self.pending_snapshot
            self._reset_state(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def is_paused(self) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return self.inflights.full()
        return True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`. Returns whether match moved (stale or
        duplicated acks must not regress anything)."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the MsgApp whose previous index was `rejected`; the follower
        suggests `match_hint` may match. Returns False for a stale rejection."""
        if self.state == REPLICATE:
            # Anything at or below match was acknowledged already: a reordered reply.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        # PROBE/SNAPSHOT: only the reply to the probe we sent (next - 1) counts.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int | None) -> None:
        """Bookkeeping after sending a MsgApp whose last entry is `last_index` (None
        for an empty MsgApp)."""
        if self.state == REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state == PROBE:
            self.probe_sent = True
