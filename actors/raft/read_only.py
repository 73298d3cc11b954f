"""Pending ReadIndex requests on a leader (thesis §6.4; etcd read_only.go).

Theory of operation
-------------------
Each read request remembers the leader's commit index when it arrived, who asked
(this node or a follower) and the requester's opaque context. The leader gives the
request a *round* id of its own and sends a heartbeat carrying it; followers echo it.
Rounds are numbered in arrival order, and the heartbeat for round R leaves only
after every earlier request was queued, so once a quorum of voters (the leader included, if a voter)
acknowledged R the leader was still leader after all of them arrived: they are all
released together, each with its own index.

Round ids, not the requesters' contexts, go on the wire so that two nodes may use
the same context (say, both number their reads from 1) without mixing up answers.
Heartbeat responses are only counted in the leader's own term, and a term has one
leader, so a round id cannot be confused with another leadership's.
"""

from __future__ import annotations


class ReadRequest:
    __slots__ = ("index", "context", "requester", "acks")

    def __init__(self, index: int, context: bytes, requester: int, leader: int) -> None:
        self.index = index
        self.context = context
        self.requester = requester
        self.acks = {leader}


class ReadOnly:
    __slots__ = ("pending", "queue", "_next_round")

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadRequest] = {}
        self.queue: list[bytes] = []
        self._next_round = 0

    def add(self, request: ReadRequest) -> bytes:
        """Queue a request; returns the round id its heartbeat must carry."""
        self._next_round += 1
        round_id = b"%x" % self._next_round
        self.pending[round_id] = request
        self.queue.append(round_id)
        return round_id

    def ack(self, round_id: bytes, member: int) -> frozenset[int]:
        """Record that `member` answered the heartbeat of `round_id`; returns every
        node that has (empty for an unknown or already released round). The caller
        counts the voters among them: learners answer heartbeats too, and a leader
        removing itself is not a voter (thesis §4.2.2)."""
        request = self.pending.get(round_id)
        if request is None:
            return frozenset()
        request.acks.add(member)
        return frozenset(request.acks)

    def release_through(self, round_id: bytes) -> list[ReadRequest]:
        position = self.queue.index(round_id)
        released = [self.pending.pop(r) for r in self.queue[: position + 1]]
        del self.queue[: position + 1]
        return released

    def last_round(self) -> bytes:
        return self.queue[-1] if self.queue else b""
