"""The client hides member failures but never an uncertain write (issue 7)."""

from __future__ import annotations

import time

import pytest

from cairn import Client
from tests.harness import Cluster, wait_for
from transport.errors import IndeterminateError, NoLeaderError


@pytest.fixture
def cluster(tmp_path):
    with Cluster(tmp_path, members=3) as cluster:
        yield cluster


def test_sync_discovers_every_member_and_prefers_the_leader(cluster):
    first = next(iter(cluster.members.values()))
    with Client([first.endpoint]) as c:
        endpoints = c.sync_endpoints()
        assert sorted(endpoints) == sorted(cluster.endpoints)
        leader = cluster.leader()
        assert c.endpoints[c._calls.preferred()] == leader.endpoint
        assert c.put(b"after-sync", b"v").header.member_id == leader.spec.id


def test_reads_fail_over_transparently_when_a_member_dies(cluster):
    victim = cluster.leader()
    ordered = [victim.endpoint] + [e for e in cluster.endpoints if e != victim.endpoint]
    with Client(ordered, timeout=10.0) as c:
        c.put(b"failover", b"v")
        victim.kill9()
        started = time.monotonic()
        for _ in range(20):
            assert c.get(b"failover").kvs[0].value == b"v"
        assert time.monotonic() - started < 8.0
        assert c.get(b"failover").header.member_id != victim.spec.id


def test_a_write_whose_outcome_is_unknown_is_reported_not_retried(cluster):
    leader = cluster.leader()
    others = [m for m in cluster.members.values() if m is not leader]
    with Client(cluster.endpoints) as c:
        c.put(b"uncertain", b"before")
    # cut the leader off: it takes the write into its log but can never commit it
    leader.failpoint(drop_peers=[m.spec.id for m in others])
    for member in others:
        member.failpoint(drop_peers=[leader.spec.id])
    try:
        with Client([leader.endpoint], timeout=3.0) as c:
            with pytest.raises(IndeterminateError):
                c.put(b"uncertain", b"maybe")
    finally:
        for member in cluster.members.values():
            member.failpoint()
    cluster.wait_ready()
    with Client(cluster.endpoints) as c:
        assert c.get(b"uncertain").kvs[0].value in (b"before", b"maybe")


def test_require_leader_refuses_service_from_a_member_without_one(cluster):
    leader = cluster.leader()
    follower = next(m for m in cluster.members.values() if m is not leader)
    with Client([follower.endpoint]) as c:
        c.put(b"rl", b"v")
    for member in cluster.members.values():
        if member is not follower:
            member.kill9()
    deadline = time.monotonic() + 15
    while follower.status().leader != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with Client([follower.endpoint], timeout=2.0) as plain:
        assert plain.get(b"rl", serializable=True).kvs[0].value == b"v"  # stale reads allowed
    with Client([follower.endpoint], timeout=2.0, require_leader=True) as strict:
        with pytest.raises(NoLeaderError):
            strict.get(b"rl", serializable=True)


def test_the_client_follows_the_leader_and_survivors_replace_a_killed_one_without_an_election_timeout(cluster):
    leader = cluster.leader()
    followers = [m for m in cluster.members.values() if m is not leader]
    ordered = [followers[0].endpoint, leader.endpoint, followers[1].endpoint]
    with Client(ordered, timeout=10.0) as c:
        assert c.put(b"follow", b"1").header.member_id == followers[0].spec.id  # the first endpoint, at first
        # the lookup runs on the client's own thread, after the reply that prompts it
        wait_for(lambda: c.endpoints[c._calls.preferred()] == leader.endpoint, "the client to prefer the leader")
        assert c.put(b"follow", b"2").header.member_id == leader.spec.id
        leader.kill9()
        assert c.get(b"follow").kvs[0].value == b"2"
        new_leader = cluster.leader(among=followers)
        # The survivors saw their connections to the dead leader drop and
        # campaigned at once (RaftCore.leader_unreachable), not after a timeout.
        for member in followers:
            lost = [r for r in member.log_records("raft") if r.get("event") == "leader_unreachable"]
            assert lost and lost[-1]["leader"] == leader.spec.id
        wait_for(lambda: c.endpoints[c._calls.preferred()] == new_leader.endpoint, "the client to prefer the new leader")
        assert c.put(b"follow", b"3").header.member_id == new_leader.spec.id


def test_follow_leader_false_keeps_the_first_endpoint(cluster):
    follower = next(m for m in cluster.members.values() if m is not cluster.leader())
    with Client([follower.endpoint] + [e for e in cluster.endpoints if e != follower.endpoint], follow_leader=False) as c:
        for value in (b"1", b"2", b"3"):
            assert c.put(b"first", value).header.member_id == follower.spec.id
        assert c._calls.preferred() == 0
