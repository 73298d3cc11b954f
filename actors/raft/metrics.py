"""The raft actor's metrics (actors/metrics.py has how they travel).

Leader changes are counted as etcd counts them: each time this member learns
of a leader other than the last one it knew (no leader in between is not a
change). Peer round trip is measured by the leader on its heartbeats: the first
heartbeat to a peer not yet answered is timed until that peer's answer, so the
figure includes both members' turn in their loops, as etcd's prober's
includes its HTTP handling. Times come from the shell (perf_counter seconds).
Leader, term and indexes are not here: the frontend reads them from its
RaftStatus when a scrape asks, fresher than a report.
"""

from __future__ import annotations

from actors.metrics import Metrics
from transport.raft_messages import MSG_HEARTBEAT


class RaftMetrics:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.leader_changes = metrics.counter("etcd_server_leader_changes_seen_total")
        self.fsync = metrics.histogram("etcd_disk_wal_fsync_duration_seconds")
        self.last_leader = 0
        self.heartbeat_sent: dict[int, float] = {}  # peer -> when its unanswered heartbeat left
        self.round_trips: dict[int, object] = {}  # peer -> its histogram

    def leader_seen(self, leader_id: int) -> None:
        if leader_id and leader_id != self.last_leader:
            self.last_leader = leader_id
            self.leader_changes.value += 1

    def sent(self, messages, now: float) -> None:
        for message in messages:
            if message.type == MSG_HEARTBEAT and message.to not in self.heartbeat_sent:
                self.heartbeat_sent[message.to] = now

    def heartbeat_answered(self, peer: int, now: float) -> None:
        sent = self.heartbeat_sent.pop(peer, None)
        if sent is not None:
            histogram = self.round_trips.get(peer)
            if histogram is None:
                histogram = self.round_trips[peer] = self.metrics.histogram(
                    "etcd_network_peer_round_trip_time_seconds", (f"{peer:x}",))
            histogram.observe(now - sent)

    def collect(self, leading: bool) -> None:
        if not leading:  # a heartbeat of a past term is never timed
            self.heartbeat_sent.clear()
