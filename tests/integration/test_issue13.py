"""Issue 13, reproduced on a live 3-member cluster: an integer outside the width
etcd's protobufs give a field (a lease id beyond int64, a member id beyond
uint64) must be refused with InvalidArgument before it reaches the Raft log.
Today it is committed, and the apply actor of every member crashes on it,
restarts and crashes again: a permanent, cluster-wide outage.

Every test checks the cluster afterwards: no actor died and a put succeeds.
The tests share one cluster, so today the first one's poison entry also
fails the ones after it; with the fix each stands alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.harness import REPO, Cluster
from transport import messages as m
from transport.errors import CairnError, InvalidArgumentError

REQUEST_TIMEOUT_MS = 2000
CALL_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("issue13"), members=3, http=True,
                 request_timeout_ms=REQUEST_TIMEOUT_MS) as running:
        yield running


@pytest.fixture
def cluster(shared_cluster):
    """The shared cluster, failing at once if an earlier test broke it (its
    poison entry is in the log for good): no point waiting out timeouts."""
    died = deaths(shared_cluster)
    if died:
        pytest.fail(f"the cluster was broken by an earlier test of this module: {died[:3]} ...")
    return shared_cluster


def deaths(cluster) -> list[str]:
    return [f"{member.name}: {record['actor_name']} (exit {record.get('exitcode')})"
            for member in cluster.members.values()
            for record in member.log_records("supervisor") if record.get("event") == "actor_died"]


def assert_cluster_healthy(cluster) -> None:
    died = deaths(cluster)
    assert not died, f"actors died: {died}"
    with cluster.client(timeout=CALL_TIMEOUT_S) as client:
        client.put(b"issue13/after", b"ok")


def test_cairnctl_lease_revoke_of_an_id_beyond_int64_is_a_bad_lease_id(cluster):
    result = subprocess.run(
        [sys.executable, "-m", "cairn.cli", "--endpoints", ",".join(cluster.endpoints),
         "--command-timeout", str(CALL_TIMEOUT_S), "lease", "revoke", "8000000000000000"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0, result.stdout
    # etcdctl: "bad lease ID arg (strconv.ParseInt: ... value out of range), expecting ID in Hex"
    assert "bad lease ID" in result.stderr, result.stderr
    assert_cluster_healthy(cluster)


def test_lease_revoke_of_an_id_beyond_int64_is_invalid_argument(cluster):
    with cluster.client(timeout=CALL_TIMEOUT_S) as client:
        with pytest.raises(InvalidArgumentError):
            client.lease_revoke(0x8000000000000000)
    assert_cluster_healthy(cluster)


# The same bug through other fields: each value is outside the protobuf type
# etcd gives the field, so etcd's gRPC layer could never carry it.
OUT_OF_RANGE = {
    "alarm activate, member id beyond uint64": m.AlarmRequest(m.ALARM_ACTIVATE, 2**64, m.ALARM_NONE),
    "alarm deactivate, negative member id": m.AlarmRequest(m.ALARM_DEACTIVATE, -1, m.ALARM_NONE),
    "put, lease beyond int64": m.PutRequest(b"issue13/k", b"v", lease=2**63),
    "txn put, lease below int64": m.TxnRequest(success=(m.PutRequest(b"issue13/k", b"v", lease=-2**63 - 1),)),
    "lease grant, id beyond int64": m.LeaseGrantRequest(60, 2**63),
}


@pytest.mark.parametrize("request_", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_integers_beyond_their_protobuf_type_are_invalid_argument(cluster, request_):
    with cluster.client(timeout=CALL_TIMEOUT_S) as client:
        with pytest.raises(InvalidArgumentError):
            client.call(request_, write=True)
    assert_cluster_healthy(cluster)


@pytest.mark.parametrize("alarm", [-1, 256], ids=["negative", "beyond-a-byte"])
def test_an_alarm_type_cairn_cannot_store_does_not_crash_apply(cluster, alarm):
    """etcd's AlarmType is an int32 enum: these fit the wire, so the answer may be
    success or an operating error -- but never a crash (store/alarms.py packs
    the type in one byte)."""
    with cluster.client(timeout=CALL_TIMEOUT_S) as client:
        try:
            client.call(m.AlarmRequest(m.ALARM_ACTIVATE, 1, alarm), write=True)
            client.call(m.AlarmRequest(m.ALARM_DEACTIVATE, 1, alarm), write=True)
        except CairnError:
            pass  # any operating error will do; a crash shows below
    assert_cluster_healthy(cluster)


def test_gateway_lease_revoke_of_an_id_beyond_int64_is_a_400(cluster):
    url = next(iter(cluster.members.values())).http_url
    body = json.dumps({"ID": str(2**63)}).encode()
    request = urllib.request.Request(url + "/v3/lease/revoke", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S + 5)
    assert refused.value.code == 400, refused.value.read()
    assert json.loads(refused.value.read())["code"] == 3  # gRPC InvalidArgument
    assert_cluster_healthy(cluster)
