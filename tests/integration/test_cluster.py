"""A real 3-member cluster: replication, routing, failover, restart from disk,
catch-up by snapshot, partitions through failpoints, leadership transfer.
The scenarios of etcd's first README, and more."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from cairn import Client
from tests.harness import REPO, Cluster, wait_for
from transport.errors import NoLeaderError, TimeoutError_

ELECTION_TIMEOUT_S = 1.0  # 10 ticks of 100 ms, the defaults


@pytest.fixture
def cluster(tmp_path):
    with Cluster(tmp_path, members=3, snapshot_entries=40) as cluster:
        yield cluster


def test_write_through_one_member_read_through_another(cluster):
    n1, n2, n3 = cluster.members.values()
    with Client([n1.endpoint]) as c1, Client([n2.endpoint]) as c2, Client([n3.endpoint]) as c3:
        put = c1.put(b"message", b"Hello")
        # linearizable reads on every member see the write at once
        for client in (c1, c2, c3):
            response = client.get(b"message")
            assert response.kvs[0].value == b"Hello"
            assert response.header.revision >= put.header.revision
        c3.put(b"message", b"World")
        assert c2.get(b"message").kvs[0].value == b"World"
        headers = {client.get(b"message").header.member_id for client in (c1, c2, c3)}
        assert headers == {m.spec.id for m in (n1, n2, n3)}
        # A lone write's commit reaches a member that waits on nothing a few ms
        # later (the leader defers that notice), and its apply tells its
        # frontend only once a tick: a linearizable read there must still see
        # each write at once, and status its revision.
        for n in range(30):
            writer, reader = (c1, c2, c3)[n % 3], (c1, c2, c3)[(n + 1) % 3]
            put = writer.put(b"alternating", b"%d" % n)
            got = reader.get(b"alternating")
            assert got.kvs[0].value == b"%d" % n and got.header.revision >= put.header.revision
            assert reader.status().header.revision >= put.header.revision


def test_leader_killed_new_leader_elected_writes_continue_and_it_catches_up(cluster):
    leader = cluster.leader()
    with cluster.client() as c:
        for i in range(20):
            c.put(f"k{i}".encode(), b"before")
    killed_at = time.monotonic()
    leader.kill9()
    survivors = [m for m in cluster.members.values() if m is not leader]
    new_leader = cluster.leader(among=survivors, timeout=15)
    took = time.monotonic() - killed_at
    assert new_leader is not leader
    # about two election timeouts, with slack for a loaded 2-core machine
    assert took < 2 * ELECTION_TIMEOUT_S + 4.0, f"failover took {took:.1f}s"
    with Client([m.endpoint for m in survivors]) as c:
        for i in range(20):
            c.put(f"k{i}".encode(), b"after")
        revision = c.get(b"k0").header.revision
    leader.start()
    cluster.wait_ready([leader])
    with Client([leader.endpoint]) as c:
        response = c.get(b"k", prefix=True, serializable=False)
        assert response.count == 20 and {kv.value for kv in response.kvs} == {b"after"}
        assert response.header.revision >= revision


def test_all_members_killed_and_restarted_keep_every_acknowledged_write(cluster):
    acknowledged = {}
    with cluster.client() as c:
        for i in range(150):
            key = f"ack/{i % 30}".encode()
            revision = c.put(key, str(i).encode()).header.revision
            acknowledged[key] = (str(i).encode(), revision)
    for member in cluster.members.values():
        member.kill9()
    for member in cluster.members.values():
        member.start()
    cluster.wait_ready()
    for member in cluster.members.values():
        with Client([member.endpoint]) as c:
            response = c.get(b"ack/", prefix=True)
            assert {kv.key: (kv.value, kv.mod_revision) for kv in response.kvs} == acknowledged
            assert all(kv.version == 5 for kv in response.kvs)


def test_follower_down_past_compaction_catches_up_by_snapshot(cluster):
    leader = cluster.leader()
    follower = next(m for m in cluster.members.values() if m is not leader)
    follower.stop()
    others = [m.endpoint for m in cluster.members.values() if m is not follower]
    with Client(others) as c:
        stopped_at = c.status().raft_index  # the follower has at most this much of the log
        written = 0

        def compacted_past_the_follower() -> bool:
            # Writes go on until every running member's log starts after the
            # follower's (whichever leads when it comes back must send a
            # snapshot): each compacts behind what its keyspace made durable,
            # and a leader keeps what a follower it heard from lately still
            # needs (catch_up_index), so the first compactions may stop short.
            nonlocal written
            for _ in range(50):  # snapshot_entries=40
                c.put(f"snap/{written}".encode(), b"x" * 100)
                written += 1
            return all(any(r["event"] == "log_compacted" and r["index"] > stopped_at for r in m.log_records("raft"))
                       for m in cluster.members.values() if m is not follower)

        wait_for(compacted_past_the_follower, "every running member's log to be compacted past the stopped follower's", 30)
        expected = c.get(b"snap/", prefix=True, count_only=True).count
    follower.start()
    cluster.wait_ready([follower])
    with Client([follower.endpoint]) as c:
        assert c.get(b"snap/", prefix=True, count_only=True, serializable=True).count == expected
    # The keyspace is readable as soon as apply commits the snapshot; raft logs
    # the install when apply's answer reaches it, a moment later.
    wait_for(lambda: any(r["event"] == "snapshot_installed" for r in follower.log_records("raft")),
             "the follower's raft to log the snapshot it installed", 10)
    # sent by the leader of the time (leadership may have moved since)
    assert any(r["event"] == "snapshot_sent" for m in cluster.members.values() for r in m.log_records("raft"))


def test_member_with_lost_data_dir_rejoins(cluster):
    """The documented procedure: stop the member, remove its data dir, start it with --rejoin."""
    leader = cluster.leader()
    victim = next(m for m in cluster.members.values() if m is not leader)
    with cluster.client() as c:
        for i in range(100):
            c.put(f"lost/{i}".encode(), b"v")
    victim.stop()
    shutil.rmtree(victim.data_dir)
    victim.start(rejoin=True)
    cluster.wait_ready([victim])
    with Client([victim.endpoint]) as c:
        assert c.get(b"lost/", prefix=True, count_only=True, serializable=True).count == 100
    # raft leaves rejoin mode once apply acknowledges the catch-up, which may be
    # a moment after the first read is served
    wait_for(lambda: any(r["event"] == "rejoined" for r in victim.log_records("raft")), "the rejoined line", 10)
    wait_for(lambda: not os.path.exists(os.path.join(victim.data_dir, "rejoin")), "the rejoin marker's removal", 10)
    assert any(r["event"] == "follower_log_lost" for m in cluster.members.values() for r in m.log_records("raft"))


def test_partitioned_leader_steps_down_majority_serves_and_reads_are_never_stale(cluster):
    old_leader = cluster.leader()
    others = [m for m in cluster.members.values() if m is not old_leader]
    with cluster.client() as c:
        c.put(b"fenced", b"old")
    old_leader.failpoint(drop_peers=[m.spec.id for m in others])
    for member in others:
        member.failpoint(drop_peers=[old_leader.spec.id])
    try:
        new_leader = cluster.leader(among=others, timeout=15)
        assert new_leader is not old_leader
        with Client([m.endpoint for m in others]) as c:
            c.put(b"fenced", b"new")
        # check-quorum: the cut-off leader steps down within an election timeout or so
        deadline = time.monotonic() + 10
        while old_leader.status().leader == old_leader.spec.id:
            assert time.monotonic() < deadline, "partitioned leader did not step down"
            time.sleep(0.1)
        # a linearizable read on the minority side must fail, never return "old"
        with Client([old_leader.endpoint], timeout=4.0) as c:
            with pytest.raises((NoLeaderError, TimeoutError_)):
                c.get(b"fenced")
            # a serializable read may be stale, and says so by being served locally
            assert c.get(b"fenced", serializable=True).kvs[0].value == b"old"
    finally:
        for member in cluster.members.values():
            member.failpoint()
    cluster.wait_ready()
    with Client([old_leader.endpoint]) as c:
        assert c.get(b"fenced").kvs[0].value == b"new"


def test_no_leader_fails_with_no_leader_error_after_a_bounded_wait(cluster):
    survivor, *others = list(cluster.members.values())
    for member in others:
        member.kill9()
    deadline = time.monotonic() + 15
    while survivor.status().leader != 0:  # check-quorum: a lone leader steps down
        assert time.monotonic() < deadline, "the lone member still claims a leader"
        time.sleep(0.1)
    started = time.monotonic()
    with Client([survivor.endpoint], timeout=5.0) as c:
        with pytest.raises(NoLeaderError):
            c.put(b"k", b"v")
        with pytest.raises(NoLeaderError):
            c.get(b"k")
    assert time.monotonic() - started < 12


def test_move_leader_with_cairnctl(cluster):
    leader = cluster.leader()
    target = next(m for m in cluster.members.values() if m is not leader)
    result = subprocess.run(
        [sys.executable, "-m", "cairn.cli", "--endpoints", ",".join(cluster.endpoints), "move-leader", f"{target.spec.id:x}"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert f"to {target.spec.id:x}" in result.stdout
    assert cluster.leader() is target


def test_member_list_and_endpoint_status_cluster(cluster):
    result = subprocess.run(
        [sys.executable, "-m", "cairn.cli", "--endpoints", cluster.endpoints[0], "-w", "json", "endpoint", "status", "--cluster"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    import json

    statuses = json.loads(result.stdout)
    assert len(statuses) == 3
    leaders = {s["Status"]["leader"] for s in statuses}
    assert len(leaders) == 1 and leaders.pop() in {m.spec.id for m in cluster.members.values()}
    assert all(s["Status"]["raftAppliedIndex"] >= 1 and s["Status"]["dbSize"] > 0 for s in statuses)
