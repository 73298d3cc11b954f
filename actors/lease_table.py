"""Lease deadlines, as the leader's lease actor keeps them (pure: time comes in).

Theory of operation
-------------------
Which leases exist is replicated (the lease table in the keyspace); when each
expires is not: only the leader keeps deadlines, in memory, like etcd's lessor.

* promote(now, extend_s): on becoming leader, every lease gets
  now + remaining + extend_s, where remaining is its last checkpointed remaining
  TTL (or its full TTL if never checkpointed) and extend_s about one election
  timeout. So a lease never expires merely because leadership moved, and does
  not get a fresh full TTL at every election either (etcd's weakness: under
  frequent elections its leases never expire).
* renew(id, now): a keep-alive; deadline = now + ttl. A renewed lease whose
  persisted checkpoint is below its TTL is marked dirty, so the next checkpoint
  resets it: otherwise a new leader would resume from the stale, lower value
  and could expire a lease its client had just kept alive.
* expired(now, limit): leases past their deadline not yet being revoked; they
  are marked revoking and offered again only after retry_s, so a lost proposal
  is retried but a slow one is not duplicated.
* checkpoints(now): remaining TTLs of every lease, for periodic checkpoints.
"""

from __future__ import annotations

import heapq
import math


class LeaseTable:
    def __init__(self, retry_s: float = 5.0):
        self.retry_s = retry_s
        self.ttl: dict[int, int] = {}
        self.checkpointed: dict[int, int] = {}  # lease -> persisted remaining ttl (0 = none)
        self.deadline: dict[int, float] = {}
        self.heap: list[tuple[float, int]] = []
        self.revoking: dict[int, float] = {}  # lease -> when to offer it again
        self.dirty: set[int] = set()
        self.leading = False

    # ---------------------------------------------------------------- table

    def load(self, leases: dict[int, tuple[int, int]]) -> None:
        """{id: (granted ttl, checkpointed remaining ttl)} from the store."""
        self.ttl = {lease: ttl for lease, (ttl, _) in leases.items()}
        self.checkpointed = {lease: remaining for lease, (_, remaining) in leases.items()}

    def granted(self, lease: int, ttl: int, now: float) -> None:
        self.ttl[lease] = ttl
        self.checkpointed[lease] = 0
        if self.leading:
            self._set_deadline(lease, now + ttl)

    def revoked(self, lease: int) -> None:
        for table in (self.ttl, self.checkpointed, self.deadline, self.revoking):
            table.pop(lease, None)
        self.dirty.discard(lease)

    def checkpoint_persisted(self, lease: int, remaining: int) -> None:
        if lease in self.ttl:
            self.checkpointed[lease] = remaining

    # ---------------------------------------------------------------- leadership

    def promote(self, now: float, extend_s: float) -> None:
        self.leading = True
        self.deadline.clear()
        self.heap.clear()
        self.revoking.clear()
        for lease, ttl in self.ttl.items():
            remaining = self.checkpointed.get(lease) or ttl
            self._set_deadline(lease, now + remaining + extend_s)

    def demote(self) -> None:
        self.leading = False
        self.deadline.clear()
        self.heap.clear()
        self.revoking.clear()
        self.dirty.clear()

    # ---------------------------------------------------------------- leader work

    def renew(self, lease: int, now: float) -> int:
        """The renewed TTL, or 0 if the lease is unknown or already expiring."""
        ttl = self.ttl.get(lease)
        if ttl is None or not self.leading or lease in self.revoking:
            return 0
        if self.deadline.get(lease, now) < now:
            return 0  # expired: its revocation is on its way
        self._set_deadline(lease, now + ttl)
        if self.checkpointed.get(lease, 0):
            self.dirty.add(lease)
        return ttl

    def remaining(self, lease: int, now: float) -> int:
        """Whole seconds left (rounded up), -1 if unknown, as etcd's TimeToLive."""
        if lease not in self.ttl:
            return -1
        deadline = self.deadline.get(lease)
        if deadline is None:
            return self.checkpointed.get(lease) or self.ttl[lease]
        return max(0, math.ceil(deadline - now))

    def expired(self, now: float, limit: int) -> list[int]:
        found = []
        for lease, retry_at in list(self.revoking.items()):
            if retry_at <= now and len(found) < limit:
                self.revoking[lease] = now + self.retry_s
                found.append(lease)
        while self.heap and self.heap[0][0] <= now and len(found) < limit:
            deadline, lease = heapq.heappop(self.heap)
            if self.deadline.get(lease) != deadline or lease in self.revoking:
                continue  # a stale heap entry: renewed or revoked since
            self.revoking[lease] = now + self.retry_s
            found.append(lease)
        return found

    def checkpoints(self, now: float) -> list[tuple[int, int]]:
        """(lease, remaining ttl) of every lease whose remaining time is below its
        ttl or that was renewed since its last checkpoint."""
        self.dirty.clear()
        points = []
        for lease, deadline in self.deadline.items():
            if lease in self.revoking:
                continue
            remaining = max(1, math.ceil(deadline - now))
            if remaining < self.ttl[lease] or self.checkpointed.get(lease):
                points.append((lease, min(remaining, self.ttl[lease])))
        return points

    def dirty_checkpoints(self, now: float) -> list[tuple[int, int]]:
        points = [(lease, self.remaining(lease, now)) for lease in self.dirty if lease in self.deadline]
        self.dirty.clear()
        return points

    def _set_deadline(self, lease: int, deadline: float) -> None:
        self.deadline[lease] = deadline
        heapq.heappush(self.heap, (deadline, lease))
