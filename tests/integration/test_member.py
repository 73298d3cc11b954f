"""One real member: actor processes, the write path, bad frames, kill -9, logs.

Each test starts real processes on free loopback ports in a temporary directory
and stops them (by process group) whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cbor2
import pytest
import zmq

from cairn import Client, Op
from tests.harness import REPO, Cluster, cluster_fixture
from transport import codec
from transport import messages as m
from transport.errors import EmptyKeyError, Unavailable


member = cluster_fixture("member", members=1)


def test_put_get_overwrite_delete_prefix(member):
    with member.client() as c:
        first = c.put(b"it/foo", b"bar")
        assert first.header.revision >= 2
        assert first.header.member_id == member.config.members[0].id
        assert first.header.cluster_id == member.config.id
        got = c.get("it/foo")
        assert got.count == 1
        kv = got.kvs[0]
        assert (kv.key, kv.value, kv.version, kv.create_revision, kv.mod_revision) == (
            b"it/foo", b"bar", 1, first.header.revision, first.header.revision)
        second = c.put(b"it/foo", b"baz", prev_kv=True)
        assert second.prev_kv.value == b"bar"
        assert second.header.revision == first.header.revision + 1
        kv = c.get(b"it/foo").kvs[0]
        assert (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (
            b"baz", 2, first.header.revision, second.header.revision)
        c.put(b"it/zed", b"1")
        assert [kv.key for kv in c.get(b"it/", prefix=True).kvs] == [b"it/foo", b"it/zed"]
        deleted = c.delete(b"it/foo", prev_kv=True)
        assert deleted.deleted == 1 and deleted.prev_kvs[0].value == b"baz"
        assert c.get(b"it/foo").count == 0
        assert c.get(b"it/foo", serializable=True).count == 0


def test_status_and_member_list(member):
    with member.client() as c:
        status = c.status()
        assert status.leader == member.config.members[0].id
        assert status.raft_term >= 1
        assert status.raft_applied_index >= 1
        assert status.db_size > 0
        members = c.member_list().members
        assert [(x.name, x.client_urls) for x in members] == [("n1", (member.endpoints[0],))]


def test_empty_key_is_a_clear_error(member):
    with member.client() as c:
        with pytest.raises(EmptyKeyError):
            c.put(b"", b"v")


def _raw_request(endpoint: str, frames: list[bytes], timeout_ms: int = 5000) -> bytes:
    context = zmq.Context()
    try:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        socket.send_multipart(frames)
        assert socket.poll(timeout_ms), "no reply to a bad frame"
        return socket.recv()
    finally:
        context.destroy(linger=0)


@pytest.mark.parametrize(
    "frames, code, words",
    [
        ([b"\xff\xfe not cbor"], "MalformedRequest", "not CBOR"),
        ([cbor2.dumps([1, 5, ["NoSuchRequest", b"k"]])], "MalformedRequest", "unknown message type"),
        ([cbor2.dumps([1, 6, ["PutRequest", "text key"]])], "MalformedRequest", "PutRequest.key: expected bytes"),
        ([cbor2.dumps([7, 7, ["PutRequest", b"k"]])], "UnsupportedVersion", "protocol version 7"),
        ([codec.encode(m.PutRequest(b"k", b"x" * (1536 * 1024 + 10)), 8)], "RequestTooLarge", "too large"),
        ([b"one", b"two"], "MalformedRequest", "exactly one frame"),
        ([codec.encode(m.Applied(1, 1), 9)], "MalformedRequest", "not a client request"),
    ],
)
def test_bad_frames_get_error_replies_and_the_member_keeps_serving(member, frames, code, words):
    request_id, reply = codec.decode(_raw_request(member.endpoints[0], frames))
    assert isinstance(reply, m.ErrorResponse)
    assert reply.code == code
    assert words in reply.message
    if code not in ("MalformedRequest",) or words != "not CBOR":
        assert request_id in (0, 5, 6, 7, 8, 9)
    with member.client() as c:
        c.put(b"after-bad-frame", b"ok")
        assert c.get(b"after-bad-frame").kvs[0].value == b"ok"


def test_actors_are_separate_named_processes(member):
    pids = member.members["n1"].actor_pids()
    assert set(pids) == {"raft", "apply", "lease", "watch", "frontend"}
    assert len(set(pids.values())) == 5


@pytest.mark.parametrize("actor", ["apply", "frontend", "raft"])
def test_killed_actor_is_restarted_and_member_keeps_serving(member, actor):
    node = member.members["n1"]
    with member.client() as c:
        c.put(b"before-kill", actor.encode())
    victim = node.actor_pids()[actor]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:  # wait for the supervisor to bring up a new process for that actor
        pid = node.actor_pids().get(actor)
        if pid and pid != victim:
            break
        assert time.monotonic() < deadline, f"{actor} was not restarted"
        time.sleep(0.05)
    member.wait_ready()
    with member.client() as c:
        c.put(b"after-kill", actor.encode())
        assert c.get(b"before-kill").kvs[0].value == actor.encode()
        assert c.get(b"after-kill").kvs[0].value == actor.encode()
    died = [r for r in node.log_records("supervisor") if r["event"] == "actor_died" and r["pid"] == victim]
    assert died and died[0]["actor_name"] == actor


def test_cairnctl_put_get_del_and_status(member):
    endpoint = member.endpoints[0]

    def ctl(*args, check=True):
        result = subprocess.run([sys.executable, "-m", "cairn.cli", "--endpoints", endpoint, *args],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    assert ctl("put", "ctl/a", "1").stdout == "OK\n"
    assert ctl("get", "ctl/a").stdout == "ctl/a\n1\n"
    document = json.loads(ctl("-w", "json", "get", "ctl/a").stdout)
    assert document["count"] == 1 and document["kvs"][0]["key"] == "Y3RsL2E="  # base64, as etcdctl
    assert ctl("del", "ctl/a").stdout == "1\n"
    assert ctl("get", "ctl/a").stdout == ""
    status = json.loads(ctl("-w", "json", "endpoint", "status").stdout)
    assert status[0]["Endpoint"] == endpoint and status[0]["Status"]["leader"] == member.config.members[0].id
    bad = ctl("put", "", "v", check=False)
    assert bad.returncode == 1 and "key is not provided" in bad.stderr


def test_cairnctl_reports_a_down_endpoint(tmp_path):
    from tests.harness import free_ports

    port = free_ports(1)[0]
    result = subprocess.run([sys.executable, "-m", "cairn.cli", "--endpoints", f"tcp://127.0.0.1:{port}",
                             "--dial-timeout", "0.5", "--command-timeout", "2", "get", "x"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
    with Client([f"tcp://127.0.0.1:{port}"], timeout=1.0, dial_timeout=0.3) as c:
        with pytest.raises(Unavailable):
            c.get(b"x")


def test_logs_follow_one_request_through_the_actors(member):
    node = member.members["n1"]
    with member.client() as c:
        c.put(b"traced", b"yes")
    request_id = None
    for record in node.log_records("frontend"):
        if record["event"] == "proposed":
            request_id = record["request_ids"][-1]
    assert request_id is not None
    result = subprocess.run([sys.executable, "-m", "cairn.node", "logs", node.data_dir, "--request", str(request_id), "--json"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    path = [(r["actor"], r["event"]) for r in lines]
    assert ("frontend", "proposed") in path
    assert ("raft", "proposed") in path
    assert ("apply", "applied") in path
    assert ("frontend", "answered") in path
    assert [r["ts"] for r in lines] == sorted(r["ts"] for r in lines)
    assert all(r["node"] == "n1" for r in lines)


def test_kill9_whole_member_loses_no_acknowledged_write(tmp_path):
    with Cluster(tmp_path, members=1) as cluster:
        node = cluster.members["n1"]
        acknowledged = {}
        with cluster.client() as c:
            for i in range(200):
                key = f"durable/{i % 50}".encode()
                response = c.put(key, str(i).encode())
                acknowledged[key] = (str(i).encode(), response.header.revision)
            revision = c.get(b"durable/0").header.revision
        node.kill9()
        node.start()
        cluster.wait_ready()
        with cluster.client() as c:
            response = c.get(b"durable/", prefix=True)
            # nothing applied twice: the revision is exactly where it was (the
            # ready-probe reads do not write) and every version counts 4 puts.
            assert response.header.revision == revision
            assert {kv.key: (kv.value, kv.mod_revision) for kv in response.kvs} == acknowledged
            assert all(kv.version == 4 for kv in response.kvs)


def test_sigterm_stops_every_process_and_a_restart_binds_cleanly(tmp_path):
    with Cluster(tmp_path, members=1) as cluster:
        node = cluster.members["n1"]
        actors = node.actor_pids()
        assert node.stop(signal.SIGTERM) == 0
        for pid in actors.values():
            # gone, or a zombie waiting for its reaper (the comm in parentheses may hold a space)
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
        assert not os.path.exists(os.path.join(node.data_dir, "run", "frontend.ipc"))
        node.start()
        cluster.wait_ready()
        with cluster.client() as c:
            c.put(b"k", b"v")


def test_two_members_cannot_share_a_data_dir(tmp_path):
    with Cluster(tmp_path, members=1) as cluster:
        result = subprocess.run([sys.executable, "-m", "cairn.node", "node", "--config", cluster.config_path, "--name", "n1"],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert result.returncode == 1
        assert "in use by another cairn member" in result.stderr


def test_large_range_streams_in_chunks_at_one_revision(tmp_path):
    with Cluster(tmp_path, members=1, limits={"range_chunk_bytes": 64 * 1024}) as cluster:
        value = b"v" * 1000
        with cluster.client() as c:
            for start in range(0, 600, 100):
                c.txn(success=[Op.put(f"big/{i:04d}", value) for i in range(start, start + 100)])
            revision = c.get(b"big/0000").header.revision
            response = c.get(b"big/", prefix=True)
            assert response.count == 600 and len(response.kvs) == 600 and not response.more
            assert [kv.key for kv in response.kvs] == [f"big/{i:04d}".encode() for i in range(600)]
            limited = c.get(b"big/", prefix=True, limit=250)
            assert len(limited.kvs) == 250 and limited.more and limited.count == 600
            c.delete(b"big/0", prefix=True)  # the history read below still sees them
            past = c.get(b"big/", prefix=True, revision=revision)
            assert len(past.kvs) == 600 and past.count == 600
        chunks = [r for r in cluster.members["n1"].log_records("frontend") if r.get("event") == "range_streamed"]
        assert chunks, "large ranges were not streamed"
