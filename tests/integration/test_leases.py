"""Leases on a real 3-member cluster: expiry on time, revoke, keep-alive through
any member, failover without early expiry, many leases expiring at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cairn import Client
from tests.harness import REPO, Cluster, cluster_fixture
from transport.errors import LeaseNotFoundError

# The stated slack of expiry: one tick of the lease actor (100 ms), a Raft round
# trip and the apply, with room for a loaded 2-core machine.
EXPIRY_SLACK_S = 1.5


cluster = cluster_fixture("leases", members=3)


def wait_until_gone(client: Client, key: bytes, deadline_s: float) -> float:
    """Seconds until key disappears (polled every 20 ms), failing past deadline_s."""
    started = time.monotonic()
    while client.get(key).count:
        assert time.monotonic() - started < deadline_s, f"{key!r} still there after {deadline_s}s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_key_expires_within_ttl_plus_slack_and_not_before(cluster):
    with cluster.client() as c:
        lease = c.lease_grant(3)
        assert lease.ttl == 3
        granted_at = time.monotonic()
        c.put(b"expiring", b"v", lease=lease.id)
        assert c.get(b"expiring").kvs[0].lease == lease.id
        wait_until_gone(c, b"expiring", 3 + EXPIRY_SLACK_S + 2)
        total = time.monotonic() - granted_at
        assert total >= 3 - 0.05, f"expired early, after {total:.2f}s"
        assert total <= 3 + EXPIRY_SLACK_S, f"expired late, after {total:.2f}s"
        assert c.lease_time_to_live(lease.id).ttl == -1
        with pytest.raises(LeaseNotFoundError):
            c.lease_keepalive_once(lease.id)


def test_minimum_ttl_is_raised_as_etcd_does(cluster):
    with cluster.client() as c:
        assert c.lease_grant(1).ttl == 2  # 1.5 election timeouts of 1 s, rounded up


def test_revoke_deletes_every_attached_key_in_one_revision(cluster):
    with cluster.client() as c:
        lease = c.lease_grant(60).id
        for key in (b"svc/a", b"svc/b", b"svc/c"):
            c.put(key, b"up", lease=lease)
        c.put(b"svc/d", b"no lease")
        ttl = c.lease_time_to_live(lease, keys=True)
        assert ttl.granted_ttl == 60 and 55 <= ttl.ttl <= 60 and ttl.keys == (b"svc/a", b"svc/b", b"svc/c")
        before = c.get(b"svc/", prefix=True).header.revision
        revoked = c.lease_revoke(lease)
        assert revoked.header.revision == before + 1  # one revision for all three deletes
        assert [kv.key for kv in c.get(b"svc/", prefix=True).kvs] == [b"svc/d"]
        assert len(c.get(b"svc/", prefix=True, revision=before).kvs) == 4
        assert lease not in c.leases().leases


def test_lease_reads_through_any_member_see_every_grant_and_revoke_before_them(cluster):
    """TimeToLive and Leases wait for a read index (actors/frontend.py) and the
    lease actor reads which leases exist from the store: a lease granted or
    revoked through one member is seen at once through every other, keys
    included, as etcd's leader waits for its applied index."""
    n1, n2, n3 = cluster.endpoints
    with cluster.client([n1]) as one, cluster.client([n2]) as two, cluster.client([n3]) as three:
        for round_ in range(10):
            lease = one.lease_grant(60).id
            one.put(f"seen/{round_}", b"v", lease=lease)
            for other in (two, three):
                answer = other.lease_time_to_live(lease, keys=True)
                assert answer.ttl > 0 and answer.granted_ttl == 60, f"round {round_}: grant not seen"
                assert answer.keys == (f"seen/{round_}".encode(),)
                assert lease in other.leases().leases
            two.lease_revoke(lease)
            for other in (one, three):
                assert other.lease_time_to_live(lease).ttl == -1, f"round {round_}: revoke not seen"
                assert lease not in other.leases().leases


def test_put_without_lease_detaches_and_unknown_lease_is_refused(cluster):
    with cluster.client() as c:
        lease = c.lease_grant(60).id
        c.put(b"detach", b"1", lease=lease)
        c.put(b"detach", b"2")
        assert c.get(b"detach").kvs[0].lease == 0
        c.lease_revoke(lease)
        assert c.get(b"detach").kvs[0].value == b"2"
        with pytest.raises(LeaseNotFoundError):
            c.put(b"k", b"v", lease=0x1234)
        with pytest.raises(LeaseNotFoundError):
            c.lease_revoke(0x1234)
        assert c.lease_time_to_live(0x1234).ttl == -1


def test_keepalive_through_a_follower_is_forwarded_to_the_leader(cluster):
    leader = cluster.leader()
    follower = next(m for m in cluster.members.values() if m is not leader)
    with Client([follower.endpoint]) as c:
        lease = c.lease_grant(3).id
        c.put(b"kept", b"alive", lease=lease)
        for _ in range(6):  # 6 x 1 s > the 3 s TTL: only the keep-alives keep it
            assert c.lease_keepalive_once(lease).ttl == 3
            time.sleep(1.0)
        assert c.get(b"kept").count == 1
        assert c.lease_time_to_live(lease).ttl >= 1
        c.lease_revoke(lease)


def test_a_follower_asks_again_while_the_leader_has_not_applied_the_grant(cluster):
    """The follower's apply answers a grant; the leader's may still be behind
    (here: stopped), and its "not found" to a keep-alive the follower forwards
    would be wrong. The follower asks again until the leader has applied the
    grant, as etcd's leader waits for its applied index before a renew."""
    from transport.messages import LeaseKeepAliveRequest

    leader = cluster.leader()
    follower = next(m for m in cluster.members.values() if m is not leader)
    apply_pid = leader.actor_pids()["apply"]
    answers = []
    with Client([follower.endpoint]) as c, Client([leader.endpoint]) as on_leader:
        os.kill(apply_pid, signal.SIGSTOP)
        try:
            lease = c.lease_grant(30).id
            # the leader itself has not applied it: asked directly, it does not know the lease
            assert on_leader.call(LeaseKeepAliveRequest(lease), write=False, endpoint=leader.endpoint).ttl == 0
            asking = threading.Thread(target=lambda: answers.append(c.lease_keepalive_once(lease).ttl))
            asking.start()
            asking.join(0.5)
            assert asking.is_alive(), f"the follower answered {answers} before the leader applied the grant"
        finally:
            os.kill(apply_pid, signal.SIGCONT)
        asking.join(10)
    assert answers == [30]


def test_the_first_keepalive_a_follower_forwards_is_answered(tmp_path):
    """The follower's lease actor opens its link to the leader on the first
    forward; that keep-alive must wait for the connection, not fail (asked with
    no retry: one member, one attempt)."""
    from transport.messages import LeaseKeepAliveRequest

    with Cluster(tmp_path, members=3) as fresh:
        leader = fresh.leader()
        with Client([leader.endpoint]) as c:
            lease = c.lease_grant(30).id
        for follower in (m for m in fresh.members.values() if m is not leader):
            with Client([follower.endpoint]) as c:
                answer = c.call(LeaseKeepAliveRequest(lease), write=False, endpoint=follower.endpoint)
                assert answer.ttl == 30
                assert answer.header.member_id == follower.spec.id  # the member asked answers


def test_background_keepalive_helper(cluster):
    with cluster.client() as c:
        lease = c.lease_grant(2).id
        c.put(b"helper", b"v", lease=lease)
        with c.lease_keepalive(lease) as keepalive:
            responses = iter(keepalive)
            first = next(responses)
            assert first.id == lease and first.ttl == 2
            time.sleep(3.5)  # longer than the TTL
            assert c.get(b"helper").count == 1
            assert keepalive.alive
        assert wait_until_gone(c, b"helper", 2 + EXPIRY_SLACK_S + 2) > 0


def test_cairnctl_lease_commands(cluster):
    def ctl(*args):
        result = subprocess.run([sys.executable, "-m", "cairn.cli", "--endpoints", ",".join(cluster.endpoints), *args],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        return result.returncode, result.stdout

    code, out = ctl("lease", "grant", "100")
    assert code == 0 and out.startswith("lease ") and out.endswith(" granted with TTL(100s)\n")
    lease = out.split()[1]
    assert ctl("put", "--lease", lease, "ctl/leased", "v")[0] == 0
    code, out = ctl("lease", "timetolive", lease, "--keys")
    assert code == 0 and f"lease {lease} granted with TTL(100s), remaining(" in out and "attached keys([ctl/leased])" in out
    assert lease in ctl("lease", "list")[1].split()
    assert ctl("lease", "keep-alive", "--once", lease) == (0, f"lease {lease} keepalived with TTL(100)\n")
    assert ctl("lease", "revoke", lease) == (0, f"lease {lease} revoked\n")
    assert ctl("lease", "keep-alive", "--once", lease) == (1, f"lease {lease} expired or revoked.\n")
    assert ctl("get", "ctl/leased") == (0, "")


def test_leader_failover_expires_no_live_lease_and_still_revokes_expired_ones(tmp_path):
    with Cluster(tmp_path, members=3) as cluster:
        leader = cluster.leader()
        survivors = [m for m in cluster.members.values() if m is not leader]
        with Client(cluster.endpoints) as c:
            kept = c.lease_grant(4).id
            c.put(b"kept", b"v", lease=kept)
            abandoned = c.lease_grant(4).id
            c.put(b"abandoned", b"v", lease=abandoned)
            with c.lease_keepalive(kept):
                time.sleep(1.0)
                leader.kill9()
                new_leader = cluster.leader(among=survivors, timeout=15)
                assert new_leader is not leader
                with Client([m.endpoint for m in survivors]) as s:
                    # the abandoned lease is revoked by the new leader (its 4 s
                    # plus at most one election timeout, plus slack)
                    gone = wait_until_gone(s, b"abandoned", 4 + 1 + EXPIRY_SLACK_S + 3)
                    assert gone > 0
                    # the kept one never lapsed
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        assert s.get(b"kept").count == 1
                        time.sleep(0.2)


def test_many_leases_expiring_at_once_do_not_stall_other_writers(tmp_path):
    cluster = Cluster(tmp_path, members=3)
    count = 2000
    try:
        cluster.start()
        with cluster.client() as c:
            leases = []
            lock = threading.Lock()

            def grant(n):
                with Client(cluster.endpoints) as own:
                    for i in range(n):
                        lease = own.lease_grant(3).id
                        own.put(f"many/{lease:x}".encode(), b"v", lease=lease)
                        with lock:
                            leases.append(lease)

            threads = [threading.Thread(target=grant, args=(count // 8,)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(leases) == count
            latencies = []
            deadline = time.monotonic() + 20
            while c.get(b"many/", prefix=True, count_only=True).count and time.monotonic() < deadline:
                started = time.monotonic()
                c.put(b"other-writer", str(len(latencies)).encode())
                latencies.append(time.monotonic() - started)
            assert c.get(b"many/", prefix=True, count_only=True).count == 0, "leases were not all revoked"
            assert not set(leases) & set(c.leases().leases)
            assert latencies and max(latencies) < 2.0, f"a write stalled {max(latencies):.2f}s"
    finally:
        cluster.stop()
