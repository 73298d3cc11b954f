"""/metrics: a member's metrics (every actor's last report, actors/metrics.py)
in Prometheus' text format.

The families are built and written by prometheus_client, so the text is what
Prometheus' own parser reads; this is the one module that imports it, in the
HTTP gateway's process only. Samples of the per-actor metrics (cairn_actor_*)
get an `actor` label with the reporting actor's name; a sample whose name the
catalogue does not know (an actor newer than this gateway) is left out.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from actors.metrics import CATALOGUE, COUNTER, GAUGE, HISTOGRAM
from transport.messages import MetricsResponse

# etcd's, and what generate_latest writes (names of the classic character
# set only); newer prometheus_client releases call their default 1.0.0.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PER_ACTOR_PREFIX = "cairn_actor_"


def render(response: MetricsResponse) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(response))
    return generate_latest(registry)


class _Snapshot:
    """A collector of one MetricsResponse (prometheus_client's custom collector)."""

    def __init__(self, response: MetricsResponse):
        self.response = response

    def collect(self):
        families: dict = {}
        for report in self.response.reports:
            for sample in report.samples:
                spec = CATALOGUE.get(sample.name)
                if spec is None:
                    continue
                label_names, label_values = spec.labels, sample.labels
                if sample.name.startswith(PER_ACTOR_PREFIX):
                    label_names, label_values = ("actor", *label_names), (report.actor, *label_values)
                family = families.get(sample.name)
                if family is None:
                    family = families[sample.name] = _family(sample.name, spec, label_names)
                value = sample.value if spec.wire_units == 1 else sample.value / spec.wire_units
                if spec.kind == HISTOGRAM:
                    family.add_metric(list(label_values), _cumulative(spec.buckets, sample.buckets), value)
                else:
                    family.add_metric(list(label_values), value)
        yield from families.values()
        server_id = GaugeMetricFamily("etcd_server_id", "Server or member ID in hexadecimal format. "
                                      "1 for 'server_id' label with current ID.", labels=["server_id"])
        server_id.add_metric([f"{self.response.header.member_id:x}"], 1)
        yield server_id


def _family(name: str, spec, label_names):
    kind = {COUNTER: CounterMetricFamily, GAUGE: GaugeMetricFamily, HISTOGRAM: HistogramMetricFamily}[spec.kind]
    return kind(name, spec.help, labels=list(label_names))


def _cumulative(bounds, counts) -> list[tuple[str, int]]:
    """A report's count per bucket as Prometheus' cumulative `le` buckets."""
    buckets, total = [], 0
    for bound, count in zip((*bounds, float("inf")), counts):
        total += count
        buckets.append((floatToGoString(bound), total))
    return buckets
