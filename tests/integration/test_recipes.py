"""Sessions, locks and elections on a real 3-member cluster (issue 7)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from cairn import Client, Compare, Op
from cairn.concurrency import Election, Lock, Session
from tests.harness import Cluster, cluster_fixture

PROCESSES = 4
INCREMENTS = 8


cluster = cluster_fixture("recipes", members=3)


def contend(endpoints, results):
    """One contender: increment the shared counter under the lock."""
    overlaps = 0
    with Client(endpoints, timeout=20) as client, Session(client, ttl=10) as session:
        for _ in range(INCREMENTS):
            with Lock(session, "counter-lock"):
                marker = f"inside/{os.getpid()}".encode()
                client.put(marker, b"1")
                if client.get(b"inside/", prefix=True, count_only=True).count != 1:
                    overlaps += 1  # someone else is inside too
                value = int(client.get(b"counter").kvs[0].value)
                client.put(b"counter", str(value + 1).encode())  # a read-modify-write: lost if not exclusive
                client.delete(marker)
    results.put(overlaps)


def test_contending_processes_lose_no_update_and_never_overlap(cluster):
    with cluster.client() as c:
        c.put(b"counter", b"0")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=contend, args=(cluster.endpoints, results)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    overlaps = [results.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert overlaps == [0] * PROCESSES
    with cluster.client() as c:
        assert int(c.get(b"counter").kvs[0].value) == PROCESSES * INCREMENTS


def hold_forever(endpoints, ready):
    with Client(endpoints) as client:
        session = Session(client, ttl=2)
        Lock(session, "killed-lock").acquire()
        ready.set()
        time.sleep(600)


def test_a_killed_holder_loses_the_lock_after_its_ttl(cluster):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=hold_forever, args=(cluster.endpoints, ready))
    holder.start()
    try:
        assert ready.wait(60)
        with Client(cluster.endpoints) as c, Session(c, ttl=10) as session:
            os.kill(holder.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            lock = Lock(session, "killed-lock").acquire(timeout=30)
            waited = time.monotonic() - killed_at
            assert waited <= 2 + 1 + 2.5, f"took {waited:.1f}s"  # TTL + an election timeout of extension + slack
            # fencing: a write guarded by the lock's revision
            token = (lock.key, lock.revision)
            fenced = c.txn(compare=[Compare.create_revision(token[0]) == token[1]], success=[Op.put(b"fenced", b"ok")])
            assert fenced.succeeded
            lock.release()
            # a holder that lost the lock (here: released it) can no longer write
            stale = c.txn(compare=[Compare.create_revision(token[0]) == token[1]], success=[Op.put(b"fenced", b"stale")])
            assert not stale.succeeded
            assert c.get(b"fenced").kvs[0].value == b"ok"
    finally:
        holder.kill()
        holder.join()


def test_lock_reports_a_lost_lease_instead_of_a_lock(cluster):
    with Client(cluster.endpoints) as c:
        first = Session(c, ttl=30)
        Lock(first, "lost-lock").acquire()
        short = Session(c, ttl=2)
        short._keepalive.close()  # its lease will expire while it waits
        waiter = Lock(short, "lost-lock")
        from cairn.concurrency import LockLostError

        with pytest.raises(LockLostError):
            waiter.acquire(timeout=20)
        first.close()


def test_election_survives_the_raft_leader_being_killed(tmp_path):
    with Cluster(tmp_path, members=3) as cluster:
        with Client(cluster.endpoints, timeout=10) as c:
            session = Session(c, ttl=5)
            election = Election(session, "service-leader")
            election.campaign(b"n-a")
            assert election.leader().value == b"n-a"
            cluster.leader().kill9()
            time.sleep(6)  # longer than the session TTL: only its keep-alive through failover keeps it
            assert election.leader().value == b"n-a"
            election.proclaim(b"n-a v2")
            assert election.leader().value == b"n-a v2"
            election.resign()
            assert election.leader() is None
            session.close()


def _ctl(cluster, *args, **popen):
    import subprocess
    import sys

    from tests.harness import REPO

    return subprocess.Popen([sys.executable, "-m", "cairn.cli", "--endpoints", ",".join(cluster.endpoints), *args],
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_cairnctl_lock_runs_commands_one_at_a_time(cluster, tmp_path):
    log = tmp_path / "critical.log"
    script = f"echo start $ETCD_LOCK_KEY >> {log}; sleep 0.5; echo end >> {log}"
    runs = [_ctl(cluster, "lock", "ctl-lock", "sh", "-c", script) for _ in range(3)]
    for run in runs:
        assert run.wait(timeout=120) == 0, run.stderr.read()
    lines = log.read_text().splitlines()
    assert len(lines) == 6
    for start, end in zip(lines[0::2], lines[1::2]):  # never two inside at once
        assert start.startswith("start ctl-lock/") and end == "end"
    assert len({line.split()[1] for line in lines[0::2]}) == 3  # three sessions, three keys


def test_cairnctl_elect_and_listen(cluster):
    listener = _ctl(cluster, "elect", "--listen", "ctl-election")
    leader = _ctl(cluster, "elect", "ctl-election", "proposal-1")
    try:
        key = leader.stdout.readline().strip()
        assert key.startswith("ctl-election/")
        assert leader.stdout.readline().strip() == "proposal-1"
        assert listener.stdout.readline().strip() == key
        assert listener.stdout.readline().strip() == "proposal-1"
        second = _ctl(cluster, "elect", "ctl-election", "proposal-2")
        leader.terminate()  # resigns
        assert leader.wait(timeout=30) == 0
        second_key = second.stdout.readline().strip()
        assert second.stdout.readline().strip() == "proposal-2"
        assert listener.stdout.readline().strip() == second_key
        assert listener.stdout.readline().strip() == "proposal-2"
        second.terminate()
        assert second.wait(timeout=30) == 0
    finally:
        for process in (listener, leader, locals().get("second")):
            if process is not None:
                process.kill()
                process.wait()


def test_lock_service_served_by_the_member(cluster):
    import threading

    from transport.errors import LockLostError

    with Client(cluster.endpoints) as c1, Client(cluster.endpoints) as c2:
        first = c1.lease_grant(30).id
        second = c2.lease_grant(30).id
        held = c1.lock("svc-lock", first)
        assert held.key == b"svc-lock/%x" % first and held.revision > 0
        got = []
        waiter = threading.Thread(target=lambda: got.append(c2.lock("svc-lock", second)))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not got  # waits while the first holds it
        c1.unlock(held.key)
        waiter.join(timeout=30)
        assert got and got[0].key == b"svc-lock/%x" % second and got[0].revision > held.revision
        # the gap Jepsen found: a waiter whose lease is gone gets an error, not the lock
        third = c1.lease_grant(30).id
        failed = []

        def lose():
            try:
                c1.lock("svc-lock", third)
            except LockLostError as error:
                failed.append(error)

        loser = threading.Thread(target=lose)
        loser.start()
        loser.join(timeout=1.0)
        c1.lease_revoke(third)  # its queued key disappears while it waits
        c2.unlock(got[0].key)
        loser.join(timeout=30)
        assert failed, "a lock was reported for an expired lease"


def test_election_service_served_by_the_member(cluster):
    with Client(cluster.endpoints) as c:
        lease = c.lease_grant(30).id
        leader = c.campaign("svc-election", lease, "first").leader
        assert leader.key == b"svc-election/%x" % lease
        assert c.leader("svc-election").kv.value == b"first"
        c.proclaim(leader, "second")
        assert c.leader("svc-election").kv.value == b"second"
        c.resign(leader)
        assert c.leader("svc-election").kv is None
