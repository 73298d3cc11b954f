"""What each actor counts about itself, and how it reaches /metrics.

Theory of operation
-------------------
Every actor process keeps its counters, gauges and histograms in one `Metrics`:
plain slotted objects whose update is one add (a counter, a gauge) or a bisect
and two adds (a histogram), so a hot path pays almost nothing and allocates
nothing. The actor loop (actors/base.py) counts each turn's batch size and busy
time itself, and once every REPORT_INTERVAL_S snapshots the lot into a
MetricsReport for its member's frontend, which keeps the last report of each
actor and answers a client's MetricsRequest with all of them. The HTTP gateway
renders them in Prometheus' text format (actors/metrics_exposition.py, the one
module that imports prometheus_client). A scrape therefore sees each actor as
of its last report, at most REPORT_INTERVAL_S old.

What a metric means lives once, in CATALOGUE: its type, help text, labels and
buckets, under etcd's name where etcd has the meaning (so etcd's dashboards and
alerts apply) and under cairn_ otherwise. A report carries only names, label
values and integers: the codec has no floats, so a metric in seconds travels
in microseconds (its Spec's `wire_units`).

No I/O and no clock here: the loop measures, this module only keeps counts.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from transport.messages import MetricSample, MetricsReport

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
MICROSECONDS = 1_000_000  # wire units per second, for a metric in seconds
# How often an actor reports: a scrape is at most this stale, and each actor
# sends one small message this often (a few hundred bytes).
REPORT_INTERVAL_S = 1.0


def exponential(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Prometheus' ExponentialBuckets, as etcd declares its histograms with."""
    return tuple(start * factor ** i for i in range(count))


@dataclass(frozen=True, slots=True)
class Spec:
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # a histogram's upper bounds, in the metric's unit
    wire_units: int = 1  # wire units per unit of the metric (MICROSECONDS for seconds)


_DISK_BUCKETS = exponential(0.001, 2, 14)  # etcd's wal fsync and backend commit: 1 ms .. 8 s
_RTT_BUCKETS = exponential(0.0001, 2, 16)  # etcd's peer round trip: 0.1 ms .. 3.2 s

CATALOGUE: dict[str, Spec] = {
    # raft (actors/raft/metrics.py)
    "etcd_server_leader_changes_seen_total": Spec(COUNTER, "The number of leader changes seen."),
    "etcd_disk_wal_fsync_duration_seconds": Spec(
        HISTOGRAM, "The latency distributions of fsync called by WAL (the Raft log's synced LMDB commit).",
        buckets=_DISK_BUCKETS, wire_units=MICROSECONDS),
    "etcd_network_peer_round_trip_time_seconds": Spec(
        HISTOGRAM, "Round-Trip-Time histogram between peers (a leader's heartbeat to its answer).", ("To",),
        _RTT_BUCKETS, MICROSECONDS),
    # apply (actors/apply.py)
    "etcd_disk_backend_commit_duration_seconds": Spec(
        HISTOGRAM, "The latency distributions of commit called by backend (one applied batch's LMDB write "
        "transaction, from its first entry to its commit).", buckets=_DISK_BUCKETS, wire_units=MICROSECONDS),
    # frontend (actors/frontend.py); all but the counters read when a scrape asks
    "etcd_server_has_leader": Spec(GAUGE, "Whether or not a leader exists. 1 is existence, 0 is not."),
    "etcd_server_is_leader": Spec(GAUGE, "Whether or not this member is a leader. 1 if is, 0 otherwise."),
    "etcd_server_term": Spec(GAUGE, "The raft term of this member."),
    "etcd_server_proposals_committed_total": Spec(GAUGE, "The total number of consensus proposals committed."),
    "etcd_server_proposals_applied_total": Spec(GAUGE, "The total number of consensus proposals applied."),
    "etcd_server_proposals_pending": Spec(GAUGE, "The current number of pending proposals to commit."),
    "etcd_server_proposals_failed_total": Spec(COUNTER, "The total number of failed proposals seen."),
    "etcd_server_is_learner": Spec(GAUGE, "Whether or not this member is a learner. 1 if is, 0 otherwise."),
    "etcd_mvcc_db_total_size_in_bytes": Spec(GAUGE, "Total size of the underlying database physically allocated in bytes."),
    "etcd_mvcc_db_total_size_in_use_in_bytes": Spec(GAUGE, "Total size of the underlying database logically in use in bytes."),
    "etcd_debugging_mvcc_keys_total": Spec(GAUGE, "Total number of keys."),
    "etcd_debugging_mvcc_current_revision": Spec(GAUGE, "The current revision of store."),
    "etcd_server_read_indexes_total": Spec(COUNTER, "Linearizable read rounds (ReadIndex) this member started."),
    # watch (actors/watch.py)
    "etcd_debugging_mvcc_watcher_total": Spec(GAUGE, "Total number of watchers."),
    "etcd_debugging_mvcc_watch_stream_total": Spec(GAUGE, "Total number of watch streams (client connections with watchers)."),
    # lease (actors/lease.py)
    "etcd_debugging_lease_granted_total": Spec(COUNTER, "The total number of granted leases."),
    "etcd_debugging_lease_revoked_total": Spec(COUNTER, "The total number of revoked leases."),
    "etcd_debugging_lease_renewed_total": Spec(COUNTER, "The number of renewed leases seen by the leader."),
    "cairn_lease_total": Spec(GAUGE, "Leases this member's lease actor tracks."),
    # every actor (actors/base.py), labelled with the actor's name
    "cairn_actor_queue_depth": Spec(GAUGE, "Work the actor holds and has not finished (its own queues)."),
    "cairn_actor_batch_size": Spec(HISTOGRAM, "Messages an actor handled in one turn of its loop.",
                                   buckets=exponential(1, 4, 7)),
    "cairn_actor_busy_seconds_total": Spec(COUNTER, "Time an actor's loop spent handling, not waiting.",
                                           wire_units=MICROSECONDS),
    "cairn_actor_bad_frames_total": Spec(COUNTER, "Frames an actor dropped because they did not decode."),
    "cairn_actor_resident_memory_bytes": Spec(GAUGE, "Resident memory of the actor's process (LMDB's mapped "
                                                     "pages it touched included), as process_resident_memory_bytes."),
}


class Counter:
    __slots__ = ("name", "labels", "value")

    def __init__(self, name: str, labels: tuple[str, ...] = ()):
        self.name, self.labels, self.value = name, labels, 0

    def sample(self, wire_units: int) -> MetricSample:
        return MetricSample(self.name, round(self.value * wire_units), self.labels)


class Gauge(Counter):
    """A counter that may go down: set `value`."""

    __slots__ = ()


class Histogram:
    __slots__ = ("name", "labels", "bounds", "counts", "total")

    def __init__(self, name: str, bounds: tuple[float, ...], labels: tuple[str, ...] = ()):
        self.name, self.labels, self.bounds = name, labels, bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # Prometheus' buckets are `le`
        self.total += value

    def sample(self, wire_units: int) -> MetricSample:
        return MetricSample(self.name, round(self.total * wire_units), self.labels, tuple(self.counts))


class Metrics:
    """One actor's metrics. Ask once (at start-up) for each metric and keep
    the object: updating it is then an attribute add."""

    def __init__(self):
        self._metrics: dict[tuple[str, tuple[str, ...]], Counter | Histogram] = {}

    def counter(self, name: str, labels: tuple[str, ...] = ()) -> Counter:
        return self._get(name, labels, COUNTER, Counter)

    def gauge(self, name: str, labels: tuple[str, ...] = ()) -> Gauge:
        return self._get(name, labels, GAUGE, Gauge)

    def histogram(self, name: str, labels: tuple[str, ...] = ()) -> Histogram:
        spec = CATALOGUE[name]
        assert spec.kind == HISTOGRAM and len(labels) == len(spec.labels), name
        metric = self._metrics.get((name, labels))
        if metric is None:
            metric = self._metrics[(name, labels)] = Histogram(name, spec.buckets, labels)
        return metric

    def _get(self, name: str, labels: tuple[str, ...], kind: str, cls):
        spec = CATALOGUE[name]
        assert spec.kind == kind and len(labels) == len(spec.labels), name
        metric = self._metrics.get((name, labels))
        if metric is None:
            metric = self._metrics[(name, labels)] = cls(name, labels)
        return metric

    def report(self, actor: str) -> MetricsReport:
        return MetricsReport(actor, tuple(metric.sample(CATALOGUE[metric.name].wire_units)
                                          for metric in self._metrics.values()))
