"""actors/metrics.py (the pure counters and their reports) and
actors/metrics_exposition.py (Prometheus' text format), read back with
prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.metrics import CATALOGUE, HISTOGRAM, Metrics
from actors.metrics_exposition import render
from transport import codec
from transport import messages as m


def _parse(response: m.MetricsResponse) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(render(response).decode()) for s in family.samples}


def _response(*reports) -> m.MetricsResponse:
    return m.MetricsResponse(m.ResponseHeader(1, 0xabc, 5, 2), tuple(reports))


def test_histogram_buckets_are_upper_bounds_inclusive_and_cumulative_once_rendered():
    metrics = Metrics()
    fsync = metrics.histogram("etcd_disk_wal_fsync_duration_seconds")
    for seconds in (0.001, 0.0011, 0.5, 100.0):  # on a bound, just past it, mid-range, past the last bound
        fsync.observe(seconds)
    samples = _parse(_response(metrics.report("raft")))
    bucket = lambda le: samples[("etcd_disk_wal_fsync_duration_seconds_bucket", (("le", le),))]  # noqa: E731
    assert bucket("0.001") == 1 and bucket("0.002") == 2 and bucket("0.512") == 3 and bucket("+Inf") == 4
    assert samples[("etcd_disk_wal_fsync_duration_seconds_count", ())] == 4
    assert samples[("etcd_disk_wal_fsync_duration_seconds_sum", ())] == pytest.approx(100.5021, abs=1e-5)


def test_counters_and_gauges_travel_through_the_codec_and_keep_their_types():
    metrics = Metrics()
    metrics.counter("etcd_server_leader_changes_seen_total").value += 3
    metrics.gauge("etcd_server_proposals_pending").value = 7
    metrics.counter("cairn_actor_busy_seconds_total").value += 1.25
    frame = codec.encode(metrics.report("raft"), 0)
    _, report = codec.decode(frame)
    text = render(_response(report)).decode()
    assert "# TYPE etcd_server_leader_changes_seen_total counter" in text
    assert "# TYPE etcd_server_proposals_pending gauge" in text
    samples = _parse(_response(report))
    assert samples[("etcd_server_leader_changes_seen_total", ())] == 3
    assert samples[("etcd_server_proposals_pending", ())] == 7
    assert samples[("cairn_actor_busy_seconds_total", (("actor", "raft"),))] == pytest.approx(1.25)
    assert samples[("etcd_server_id", (("server_id", "abc"),))] == 1


def test_per_actor_metrics_are_labelled_with_each_actor_and_unknown_names_left_out():
    reports = []
    for actor, depth in (("raft", 1), ("apply", 2)):
        metrics = Metrics()
        metrics.gauge("cairn_actor_queue_depth").value = depth
        reports.append(metrics.report(actor))
    reports.append(m.MetricsReport("future", (m.MetricSample("cairn_not_yet_known", 1),)))
    samples = _parse(_response(*reports))
    assert samples[("cairn_actor_queue_depth", (("actor", "raft"),))] == 1
    assert samples[("cairn_actor_queue_depth", (("actor", "apply"),))] == 2
    assert not any(name.startswith("cairn_not_yet_known") for name, _ in samples)


def test_the_catalogue_is_consistent():
    for name, spec in CATALOGUE.items():
        assert (spec.kind == HISTOGRAM) == bool(spec.buckets), name
        assert list(spec.buckets) == sorted(spec.buckets), name
        assert name.startswith(("etcd_", "cairn_")) and spec.help, name
    with pytest.raises(AssertionError):
        Metrics().counter("etcd_server_proposals_pending")  # a gauge asked for as a counter
    with pytest.raises(KeyError):
        Metrics().counter("not_in_the_catalogue")
