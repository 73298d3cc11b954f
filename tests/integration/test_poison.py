"""Issue 13: one request must never stop a member.

The reproduction (a lease id past int64 reached every member's apply and
crashed it for good), the other out-of-range integers that did the same, the
client library's and cairnctl's refusal before sending, and the supervisor's
crash-loop report in `endpoint status` for an actor that keeps dying on the
same input. Real members on loopback, one 3-member cluster shared by the module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cbor2
import pytest
import zmq

from tests.harness import REPO, Cluster
from transport import codec
from transport import messages as m
from transport.errors import InvalidArgumentError

POISON_LEASE = 0x8000000000000000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("poison"), members=3, http=True) as started:
        started.wait_ready()
        yield started


def raw_call(endpoint: str, body: list, request_id: int = 77, timeout_ms: int = 5000):
    """Send a frame built by hand (the client library would refuse it) and
    return the decoded reply."""
    context = zmq.Context()
    try:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        socket.send(cbor2.dumps([m.PROTOCOL_VERSION, request_id, body]))
        assert socket.poll(timeout_ms), "no answer: every request must get one"
        return codec.decode(socket.recv())
    finally:
        context.destroy(linger=0)


def actor_deaths(cluster) -> list[dict]:
    return [r for member in cluster.members.values() for r in member.log_records("supervisor") if r.get("event") == "actor_died"]


def test_the_reproduction_gets_invalid_argument_and_the_next_put_succeeds(cluster):
    with cluster.client() as client:
        client.put(b"poison/a", b"1")
        request_id, reply = raw_call(cluster.members["n2"].endpoint, ["LeaseRevokeRequest", POISON_LEASE])
        assert request_id == 77
        assert isinstance(reply, m.ErrorResponse) and reply.code == "InvalidArgument"
        assert reply.message == "LeaseRevokeRequest.id: 9223372036854775808 is out of range for int64"
        assert client.put(b"poison/b", b"2", timeout=10).header.revision > 0
        assert client.get(b"poison/", prefix=True).count == 2
    assert actor_deaths(cluster) == []


@pytest.mark.parametrize("body", [
    ["AlarmRequest", m.ALARM_ACTIVATE, 1 << 64, m.ALARM_NOSPACE],
    ["AlarmRequest", m.ALARM_ACTIVATE, 1, 7],
    ["CompactionRequest", 1 << 63],
    ["CompactionRequest", -(1 << 63) - 1],
    ["TxnRequest", [["Compare", 0, 2, b"poison/a", 1 << 63, b""]], [], []],
    ["TxnRequest", [], [["PutRequest", b"poison/c", b"v", 1 << 64]], []],
    ["PutRequest", b"poison/c", b"v", -(1 << 70)],
    ["LeaseGrantRequest", 1 << 63, 5],
    ["RangeRequest", b"poison/", b"", 0, 1 << 63],
    # a URL every member's raft actor would connect to (the fuzzer found it)
    ["MemberAddRequest", ["NOSPACE"], False, "poison-member"],
], ids=lambda body: body[0])
def test_integers_outside_their_etcd_type_are_refused_at_the_door(cluster, body):
    _, reply = raw_call(cluster.members["n1"].endpoint, body)
    assert isinstance(reply, m.ErrorResponse) and reply.code == "InvalidArgument", reply
    with cluster.client() as client:
        assert client.put(b"poison/after", b"ok", timeout=10).header.revision > 0
    assert actor_deaths(cluster) == []


def test_the_client_library_refuses_out_of_range_values_before_sending(cluster):
    with cluster.client() as client:
        with pytest.raises(InvalidArgumentError, match="LeaseRevokeRequest.id: .* out of range for int64"):
            client.lease_revoke(POISON_LEASE)
        with pytest.raises(InvalidArgumentError, match="uint64"):
            client.move_leader(1 << 64)
        with pytest.raises(InvalidArgumentError, match="invalid sort option"):
            client.call(m.RangeRequest(b"poison/", sort_order=5), write=False)


def test_the_http_gateway_answers_400_invalid_argument_and_keeps_serving(cluster):
    import json
    import urllib.error
    import urllib.request

    gateway = cluster.members["n3"].http_url
    request = urllib.request.Request(gateway + "/v3/lease/revoke", data=json.dumps({"ID": str(POISON_LEASE)}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    body = json.loads(refused.value.read())
    assert body["code"] == 3 and "out of range for int64" in body["message"], body
    put = urllib.request.Request(gateway + "/v3/kv/put", data=json.dumps({"key": "cG9pc29uL2h0dHA=", "value": "MQ=="}).encode())
    with urllib.request.urlopen(put, timeout=10) as answer:
        assert answer.status == 200 and int(json.loads(answer.read())["header"]["revision"]) > 0
    assert actor_deaths(cluster) == []


def cairnctl(cluster, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cairn.cli", "--endpoints", ",".join(cluster.endpoints), *args],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )


def test_cairnctl_says_bad_lease_id_as_etcdctl_does(cluster):
    revoke = cairnctl(cluster, "lease", "revoke", "8000000000000000")
    assert revoke.returncode != 0
    assert "bad lease ID arg" in revoke.stderr and "value out of range" in revoke.stderr, revoke.stderr
    put = cairnctl(cluster, "put", "poison/ctl", "v", "--lease", "8000000000000000")
    assert put.returncode != 0 and "bad lease ID" in put.stderr
    after = cairnctl(cluster, "put", "poison/ctl", "v")
    assert after.returncode == 0 and after.stdout.strip() == "OK"


def test_an_actor_that_keeps_dying_on_the_same_input_is_reported_in_status(tmp_path):
    """A keyspace map too small for the data: apply dies with MapFullError on
    the same entries after every restart. That is an environment failure (apply
    must not skip a committed entry for it), so the member reports it instead
    of retrying quietly."""
    with Cluster(tmp_path, members=1, kv_map_bytes=1 << 20, request_timeout_ms=1000) as member:
        member.wait_ready()
        with member.client(timeout=3.0) as client:
            for n in range(40):
                try:
                    client.put(f"big/{n}".encode(), os.urandom(100_000), timeout=3.0)
                except Exception:  # the write that fills the map never gets its answer
                    break
            else:
                pytest.fail("a 1 MiB map took 4 MB of values")
            deadline = time.monotonic() + 30
            errors: tuple = ()
            while time.monotonic() < deadline:
                errors = client.status(timeout=2.0).errors
                if any("crash-looping" in e for e in errors):
                    break
                time.sleep(0.2)
        looping = [e for e in errors if "crash-looping" in e]
        assert looping and "apply actor" in looping[0] and "MapFullError" in looping[0], errors
        assert "CommittedEntries" in looping[0]
        records = member.members["n1"].log_records("supervisor")
        assert any(r.get("event") == "actor_crash_loop" and r.get("actor_name") == "apply" for r in records)


def test_strangers_and_hostile_frames_at_the_peer_port_never_stop_the_raft_actor(cluster):
    from transport.raft_messages import MSG_APP, MSG_HEARTBEAT, MSG_SNAP, Entry, RaftMessage, SnapshotMeta

    target, other = cluster.config.members[0], cluster.config.members[1]
    stranger = 0x1234
    snap = RaftMessage(MSG_SNAP, target.id, other.id, 99, snapshot=SnapshotMeta(10, 99, (other.id,)))
    frames = [
        b"\xff\x00garbage",
        cbor2.dumps([m.PROTOCOL_VERSION, 0, ["RaftBatch", other.id, [["RaftMessage", 99, target.id, other.id, 1]]]]),
        codec.encode(m.RaftBatch(stranger, (RaftMessage(MSG_HEARTBEAT, target.id, stranger, 1000, commit=10**9),))),
        # a member's batch carrying a message that claims another sender
        codec.encode(m.RaftBatch(other.id, (RaftMessage(MSG_APP, target.id, stranger, 1000, entries=(Entry(1, 1, b"x"),)),))),
        # a chunk whose message is not a MSG_SNAP with metadata (it used to crash the receiver)
        codec.encode(m.SnapshotChunk(other.id, 5, 0, b"x", True, 1, RaftMessage(MSG_HEARTBEAT, target.id, other.id, 99))),
        codec.encode(m.SnapshotChunk(other.id, 6, 0, b"x" * 10, False, 5, snap)),
        codec.encode(m.SnapshotChunk(stranger, 7, 0, b"x", True, 1, snap)),
        codec.encode(m.SnapshotChunkAck(stranger, 7, 0)),
        codec.encode(m.PutRequest(b"poison/peer", b"v")),
    ]
    context = zmq.Context()
    try:
        socket = context.socket(zmq.PUSH)
        socket.setsockopt(zmq.LINGER, 2000)
        socket.connect(target.peer)
        for frame in frames:
            socket.send(frame)
        socket.close()
    finally:
        context.term()
    raft_log = cluster.members[target.name].log_records
    deadline = time.monotonic() + 10
    while len([r for r in raft_log("raft") if r.get("event") == "peer_frame_dropped"]) < len(frames) - 1:
        assert time.monotonic() < deadline, "the raft actor did not drop every bad frame"
        time.sleep(0.05)
    with cluster.client() as client:
        assert client.put(b"poison/peer-after", b"ok", timeout=10).header.revision > 0
        assert client.status(endpoint=target.client).raft_term < 99  # no stranger moved the term
    assert actor_deaths(cluster) == []
