"""Membership changes on real processes (issue 15): grow 3 -> 4 through a learner
while a client writes, promote, remove the leader, a removed member restarted
with its old data dir, the strict reconfiguration check, promote refused while
far behind, a learner's door, 3 -> 5 -> 3 members while a client writes
with no gap between acknowledged writes longer than two election timeouts.

One 3-member cluster for the module; the tests run in order and each leaves the
cluster serving for the next (they are one story of a cluster's life).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from cairn import Client
from cairn.aio import Client as AsyncClient
from cairn.config import member_id_for
from tests.harness import Writer, cluster_fixture, election_timeout_s, value_or_none, wait_for
from transport.errors import (
    LearnerNotReadyError,
    LearnerNotSupportedError,
    MemberIDExistsError,
    MemberNotFoundError,
    MemberNotLearnerError,
    NotEnoughStartedMembersError,
    PeerURLExistsError,
)

# A short log, so the new member gets the leader's snapshot (and the snapshot's
# configuration and member records), not the whole log.
cluster = cluster_fixture("membership", members=3, snapshot_entries=40)

REMOVED_EXIT_CODE = 78


def _ids(response) -> dict[int, bool]:
    return {m.id: m.is_learner for m in response.members}


def test_grow_through_a_learner_while_writing(cluster):
    writer = Writer(cluster.endpoints, b"grow/")
    acked = writer.acked
    wait_for(lambda: len(acked) > 100, "writes past snapshot_entries", 20)
    try:
        new = cluster.add_member_to_config("n4")
        with cluster.client(timeout=10) as c:
            added = c.member_add("n4", [new.spec.peer], is_learner=True, client_urls=[new.spec.client])
            assert added.member.id == new.spec.id == member_id_for("test", "n4")
            assert added.member.is_learner and added.member.name == "n4"
            assert _ids(added)[new.spec.id] is True and len(added.members) == 4
            with pytest.raises(MemberIDExistsError):
                c.member_add("n4", ["tcp://127.0.0.1:1"], is_learner=True)
            with pytest.raises(PeerURLExistsError):
                c.member_add("n9", [cluster.members["n1"].spec.peer])
            new.start(join=True)
            # The learner catches up (log or snapshot) and knows the membership.
            with Client([new.endpoint], timeout=2, dial_timeout=1) as learner:
                wait_for(lambda: value_or_none(lambda: _ids(learner.member_list()).get(new.spec.id) is True and learner.get(
                    b"grow/000000", serializable=True).count == 1), "the learner to catch up", 30)
                assert len(learner.member_list().members) == 4
                # A learner's door: no writes, no linearizable reads; serializable reads and status.
                with pytest.raises(LearnerNotSupportedError) as refused:
                    learner.put(b"grow/by-learner", b"x")
                assert refused.value.message == "etcdserver: rpc not supported for learner"
                with pytest.raises(LearnerNotSupportedError):
                    learner.get(b"grow/000000")
                assert learner.status().header.member_id == new.spec.id
            with pytest.raises(MemberNotLearnerError):
                c.member_promote(cluster.members["n1"].spec.id)
            promoted = wait_for(lambda: value_or_none(lambda: c.member_promote(new.spec.id), LearnerNotReadyError),
                                "the promotion", 30)
            assert _ids(promoted) == {m.spec.id: False for m in cluster.members.values()}
        time.sleep(0.5)
        # It caught up from the leader's snapshot; restarted (now with the
        # ordinary start, no --join), it is a voter that serves writes.
        assert any(r.get("event") == "snapshot_installed" for r in new.log_records("raft"))
        new.stop()
        new.start()
        cluster.wait_ready([new])
    finally:
        writer.finish()
    assert len(acked) > 20
    with cluster.client() as c:
        # Every acknowledged write is there, on every member, the new one too.
        got = {kv.key for kv in c.get(b"grow/", prefix=True, keys_only=True).kvs}
        assert not set(acked) - got
        revision = c.get(b"grow/").header.revision
        for member in cluster.members.values():
            with Client([member.endpoint], timeout=5) as one:
                # A few election timeouts: the restarted voter goes on from the log
                # after one snapshot (it once stalled ~20 s, snapshot after snapshot).
                wait_for(lambda: one.get(b"grow/", serializable=True).header.revision >= revision, f"{member.name} to apply",
                         5 * election_timeout_s(cluster))
                found = {kv.key for kv in one.get(b"grow/", prefix=True, keys_only=True, serializable=True).kvs}
                assert not set(acked) - found, member.name


def test_a_leader_added_at_run_time_serves_the_lease_requests_forwarded_to_it(cluster):
    """The YAML's members know n4 only from the log's membership; their lease
    actors forward keep-alives to the leader's frontend, found there."""
    n1, n4 = cluster.members["n1"], cluster.members["n4"]
    with cluster.client(timeout=10) as c:
        c.move_leader(n4.spec.id)
        assert cluster.leader() is n4
        with Client([n1.endpoint], timeout=5) as one:  # a follower that forwards
            lease = one.lease_grant(30)
            assert one.lease_keepalive_once(lease.id).ttl == 30
            assert one.lease_time_to_live(lease.id).granted_ttl == 30
            one.lease_revoke(lease.id)
        c.move_leader(n1.spec.id)  # the story goes on with a YAML member leading
        assert cluster.leader() is n1


def test_promote_refused_while_far_behind(cluster):
    ghost = cluster.add_member_to_config("n5")  # added, never started
    with cluster.client(timeout=10) as c:
        c.member_add("n5", [ghost.spec.peer], is_learner=True)
        with pytest.raises(LearnerNotReadyError) as refused:
            c.member_promote(ghost.spec.id)
        assert refused.value.message == "etcdserver: can only promote a learner member which is in sync with leader"
        removed = c.member_remove(ghost.spec.id)
        assert ghost.spec.id not in _ids(removed)
        with pytest.raises(MemberNotFoundError):
            c.member_remove(ghost.spec.id)
        # A removed id never comes back (etcd's rule; ids derive from names).
        with pytest.raises(MemberIDExistsError):
            c.member_add("n5", [ghost.spec.peer], is_learner=True)
        # MemberUpdate: peer URLs replicated (the same URL here: the member keeps running).
        n1 = cluster.members["n1"].spec
        updated = c.member_update(n1.id, [n1.peer])
        assert next(x for x in updated.members if x.id == n1.id).peer_urls == (n1.peer,)
        with pytest.raises(PeerURLExistsError):
            c.member_update(n1.id, [cluster.members["n2"].spec.peer])
        with pytest.raises(MemberNotFoundError):
            c.member_update(12345, ["tcp://127.0.0.1:1"])
    del cluster.members["n5"]


def test_remove_the_leader_and_keep_serving(cluster):
    leader = cluster.leader()
    # Sent to the leader itself: it hands leadership over, forwards its own
    # removal to the new leader, and answers once that commits.
    endpoints = [leader.endpoint] + [e for e in cluster.endpoints if e != leader.endpoint]
    writer = Writer([m.endpoint for m in cluster.running()], b"shrink/")
    time.sleep(0.5)
    with Client(endpoints, timeout=15) as c:
        term_before = c.status().raft_term
        response = c.member_remove(leader.spec.id)
        assert leader.spec.id not in _ids(response) and len(response.members) == 3
    time.sleep(1.0)
    acked = writer.finish()
    # The removed member stops by itself, with a clear exit.
    wait_for(lambda: leader.process.poll() is not None, "the removed leader to stop", 20)
    assert leader.process.returncode == REMOVED_EXIT_CODE
    out = open(os.path.join(cluster.directory, f"{leader.name}.out")).read()
    assert "was removed from the cluster" in out
    rest = [m for m in cluster.members.values() if m is not leader]
    with Client([m.endpoint for m in rest], timeout=10) as c:
        c.put(b"after/remove", b"1")
        assert c.get(b"after/remove").count == 1
        # No acknowledged write was lost while the leader was removed.
        assert len(acked) > 10
        got = {kv.key for kv in c.get(b"shrink/", prefix=True, keys_only=True).kvs}
        assert not set(acked) - got
        assert c.status().raft_term >= term_before
    cluster.removed = leader


def test_removed_member_restarted_does_not_disturb(cluster):
    removed = cluster.removed
    rest = [m for m in cluster.members.values() if m is not removed]
    with Client([m.endpoint for m in rest], timeout=10) as c:
        term = c.status().raft_term
        # With the marker it left: refuses at once.
        removed.start()
        wait_for(lambda: removed.process.poll() is not None, "the removed member to refuse", 20)
        assert removed.process.returncode == REMOVED_EXIT_CODE
        # Without it (say it never learned it was removed): the members tell it, and it stops.
        os.unlink(os.path.join(removed.data_dir, "removed"))
        removed.start()
        wait_for(lambda: removed.process.poll() is not None, "the removed member to stop", 30)
        assert removed.process.returncode == REMOVED_EXIT_CODE
        c.put(b"after/restart", b"1")
        assert c.status().raft_term == term, "a removed member raised the term"
    del cluster.members[removed.name]


def test_strict_check_refuses_removing_a_healthy_member_while_one_is_down(cluster):
    leader = cluster.leader()
    followers = [m for m in cluster.running() if m is not leader]
    assert len(followers) == 2
    down, healthy = followers
    down.stop()
    try:
        time.sleep(2.5)  # longer than an election timeout: the leader no longer counts it active
        with Client([leader.endpoint], timeout=10) as c:
            with pytest.raises(NotEnoughStartedMembersError) as refused:
                c.member_remove(healthy.spec.id)
            assert refused.value.message == "etcdserver: re-configuration failed due to not enough started members"
            assert healthy.spec.id in _ids(c.member_list())
    finally:
        down.start()
        cluster.wait_ready([down])


def test_cairnctl_member_commands(cluster, capsys):
    from cairn import cli

    endpoints = ",".join(m.endpoint for m in cluster.running())
    new_id = member_id_for("test", "n6")
    assert cli.main([f"--endpoints={endpoints}", "member", "add", "n6", "--peer-urls=tcp://127.0.0.1:1", "--learner"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Member {new_id:x} added to cluster {cluster.config.id:x}\n")
    # etcdctl's lines for starting the new member, then cairn's YAML with the cluster's name.
    lines = out.splitlines()
    assert lines[2] == 'ETCD_NAME="n6"'
    assert lines[3].startswith('ETCD_INITIAL_CLUSTER="') and "n6=tcp://127.0.0.1:1" in lines[3]
    assert all(f"{m.name}={m.spec.peer}" in lines[3] for m in cluster.running())
    assert lines[4:6] == ['ETCD_INITIAL_ADVERTISE_PEER_URLS="tcp://127.0.0.1:1"', 'ETCD_INITIAL_CLUSTER_STATE="existing"']
    assert "  name: test\n" in out and "  state: existing\n" in out
    assert "cairn node --config NEW.yaml --name n6 --join" in out
    assert cli.main([f"--endpoints={endpoints}", "member", "list", "-w", "table"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if f"{new_id:x}" in line)
    assert [cell.strip() for cell in row.split("|")][1:-1] == [f"{new_id:x}", "started", "n6", "tcp://127.0.0.1:1", "", "true"]
    assert cli.main([f"--endpoints={endpoints}", "member", "promote", f"{new_id:x}"]) != 0
    assert "can only promote a learner member which is in sync with leader" in capsys.readouterr().err
    assert cli.main([f"--endpoints={endpoints}", "member", "remove", f"{new_id:x}"]) == 0
    assert capsys.readouterr().out == f"Member {new_id:x} removed from cluster {cluster.config.id:x}\n"

    async def asyncio_client():
        async with AsyncClient(endpoints.split(","), timeout=10) as c:
            with pytest.raises(MemberNotFoundError):
                await c.member_promote(new_id)
            return await c.member_list()

    assert new_id not in _ids(asyncio.run(asyncio_client()))


def test_join_refused_for_a_member_never_added(cluster):
    stranger = cluster.add_member_to_config("n7")
    try:
        stranger.start(join=True)
        wait_for(lambda: stranger.process.poll() is not None, "the stranger to refuse", 20)
        assert stranger.process.returncode == 2
        out = open(os.path.join(cluster.directory, "n7.out")).read()
        assert f"member n7 ({stranger.spec.id:x}) is not a member of the cluster: add it first with cairnctl member add n7" in out
    finally:
        del cluster.members["n7"]


def test_grow_3_to_5_and_shrink_back_while_writing_with_no_long_gap(cluster):
    """The issue's bound: while a client writes continuously, no gap between two
    acknowledged writes is longer than two election timeouts."""
    bound_s = 2 * election_timeout_s(cluster)
    original = list(cluster.running())  # 3 members when the module runs in order
    writer = Writer([m.endpoint for m in original], b"resize/")
    wait_for(lambda: len(writer.acked) > 20, "the first writes", 20)
    added = []
    try:
        with Client([m.endpoint for m in original], timeout=10) as c:
            for name in ("n8", "n9"):
                new = cluster.add_member_to_config(name)
                c.member_add(name, [new.spec.peer], is_learner=True, client_urls=[new.spec.client])
                new.start(join=True)
                wait_for(lambda: value_or_none(lambda: c.member_promote(new.spec.id), LearnerNotReadyError),
                         f"{name}'s promotion", 60)
                added.append(new)
            assert [m.is_learner for m in c.member_list().members] == [False] * (len(original) + 2)
            for new in added:
                c.member_remove(new.spec.id)
                wait_for(lambda: new.process.poll() is not None, f"{new.name} to stop once removed", 20)
            assert {m.id for m in c.member_list().members} == {m.spec.id for m in original}
            c.put(b"resize/last", b"v")
    finally:
        writer.finish()
        for new in added:
            new.stop()
            del cluster.members[new.name]
    longest = writer.longest_gap_s()
    print(f"{len(original)} -> {len(original) + 2} -> {len(original)}: {len(writer.acked)} writes acknowledged, longest gap {longest * 1000:.0f} ms "
          f"(bound {bound_s * 1000:.0f} ms)")
    assert longest <= bound_s
    with Client([m.endpoint for m in original], timeout=10) as c:
        got = {kv.key for kv in c.get(b"resize/", prefix=True, keys_only=True).kvs}
    assert not set(writer.acked) - got


def test_replace_a_killed_member_through_a_learner(cluster):
    """The README's procedure for a dead host: remove the member, add its
    replacement as a learner, start it with --join, promote it once caught up,
    all while a client writes through the survivors."""
    running = cluster.running()
    leader = cluster.leader(among=running)
    dead = next(m for m in running if m is not leader)
    rest = [m for m in running if m is not dead]
    writer = Writer([m.endpoint for m in rest], b"replace/")
    wait_for(lambda: len(writer.acked) > 20, "the first writes", 20)
    dead.kill9()
    new = None
    try:
        with Client([m.endpoint for m in rest], timeout=10) as c:
            c.member_remove(dead.spec.id)
            new = cluster.add_member_to_config("n10")
            c.member_add("n10", [new.spec.peer], is_learner=True, client_urls=[new.spec.client])
            new.start(join=True)
            wait_for(lambda: value_or_none(lambda: c.member_promote(new.spec.id), LearnerNotReadyError),
                     "the replacement's promotion", 60)
            assert _ids(c.member_list()) == {m.spec.id: False for m in rest + [new]}
            c.put(b"replace/last", b"v")
    finally:
        acked = writer.finish()
    del cluster.members[dead.name]
    assert len(acked) > 20
    with Client([new.endpoint], timeout=10) as one:
        wait_for(lambda: one.get(b"replace/last", serializable=True).count == 1, "the replacement to apply",
                 5 * election_timeout_s(cluster))
        # linearizable: the replacement answers from its own keyspace once it has
        # applied up to a read index, so writes acknowledged after replace/last
        # (the writer stops only after it) are there too
        got = {kv.key for kv in one.get(b"replace/", prefix=True, keys_only=True).kvs}
    assert not set(acked) - got  # every acknowledged write, on the replacement too
