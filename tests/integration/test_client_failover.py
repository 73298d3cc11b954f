"""The client hides member failures but never an uncertain write (issue 7)."""

from __future__ import annotations

import time

import pytest

from cairn import Client
from tests.harness import Cluster
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
