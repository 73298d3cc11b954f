"""Membership changes, learners and removal (Ongaro's thesis §4.1-§4.2.3, etcd's
learners and --strict-reconfig-check), one test per rule, against RaftCore."""

from __future__ import annotations

import pytest

from actors.raft.core import FOLLOWER, LEADER
from actors.raft.membership import (
    ERR_NOT_ENOUGH_STARTED_MEMBERS,
    ConfigHistory,
    apply_change,
    change_problem,
    learner_in_sync,
    reconfig_problem,
)
from tests.raft.harness import Cluster, drain, ents, events_named, msg, new_core
from tests.raft.test_core_paper import make_leader
from transport import codec
from transport.raft_messages import (
    CONF_ADD_LEARNER,
    CONF_ADD_VOTER,
    CONF_PROMOTE,
    CONF_REMOVE,
    CONF_UPDATE,
    ENTRY_CONF_CHANGE,
    MSG_APP,
    MSG_APP_RESP,
    MSG_PRE_VOTE,
    MSG_PROP,
    MSG_VOTE,
    MSG_VOTE_RESP,
    ConfChange,
    ConfState,
    Entry,
    RaftMessage,
    SnapshotMeta,
    decode_conf_change,
    encode_conf_change,
)


def add_learner(node: int) -> ConfChange:
    return ConfChange(CONF_ADD_LEARNER, node, b"member-%d" % node)


def promote(node: int) -> ConfChange:
    return ConfChange(CONF_PROMOTE, node)


def remove(node: int) -> ConfChange:
    return ConfChange(CONF_REMOVE, node)


def assert_leader_commits_only_with_a_quorum(c: Cluster, cut_without_quorum, cut_with_quorum) -> None:
    """Leader 1 cut off from `cut_without_quorum` cannot commit a proposal;
    once cut off only from `cut_with_quorum`, it commits it."""
    for peer in cut_without_quorum:
        c.cut(1, peer)
    c[1].propose([b"q"])
    c.deliver()
    assert c[1].commit_index < c[1].last_index
    c.heal()
    for peer in cut_with_quorum:
        c.cut(1, peer)
    c.tick(1)
    c.deliver()
    assert c[1].commit_index == c[1].last_index


def settled_cluster(n: int = 3, spare: int = 1, **config) -> Cluster:
    """n voters with 1 elected and its no-op committed everywhere."""
    c = Cluster(n, spare=spare, **config)
    c.elect(1)
    c.tick_all(2)  # heartbeats carry the commit index to everyone
    return c


def change(c: Cluster, node: int, cc: ConfChange) -> bool:
    ok = c.cores[node].propose_conf_change(cc)
    c.deliver()
    return ok


def rejections(c: Cluster, node: int) -> list[str]:
    return [f["reason"] for f in c.events_of(node, "conf_change_rejected")]


# ---------------------------------------------------------------------------
# The entry format
# ---------------------------------------------------------------------------


def test_a_conf_change_entry_round_trips_and_bad_data_is_refused():
    cc = ConfChange(CONF_ADD_LEARNER, 4, b"name=n4")
    conf = ConfState((1, 2, 3), (4,))
    assert decode_conf_change(encode_conf_change(cc, conf)) == (cc, conf)
    data = encode_conf_change(cc, conf)
    for bad in (b"", b"\x02" + data[1:], data[:1] + b"\x09" + data[2:], data[:15]):
        with pytest.raises(ValueError):
            decode_conf_change(bad)


def test_entries_encoded_before_the_kind_field_still_decode():
    old_frame_body = ["Entry", 3, 1, b"x"]  # index, term, data: no kind
    assert codec.decode_body(old_frame_body) == Entry(3, 1, b"x")
    meta = codec.decode_body(["SnapshotMeta", 9, 2, [1, 2, 3]])
    assert meta == SnapshotMeta(9, 2, (1, 2, 3)) and meta.learners == ()


# ---------------------------------------------------------------------------
# §4.1: one server at a time, through the log, effective on append
# ---------------------------------------------------------------------------


def test_4_1_the_leader_uses_a_new_configuration_as_soon_as_it_appends_it():
    c = settled_cluster()
    c.cut(1, 2)
    c.cut(1, 3)
    assert c[1].propose_conf_change(add_learner(4))
    c.process(1)
    # Not committed (no quorum reachable), yet already in force on the leader.
    assert c[1].commit_index < c[1].last_index
    assert c[1].learners == (4,) and c[1].pending_conf_index == c[1].last_index
    assert 4 in c[1].status()["progress"]


def test_4_1_a_follower_uses_a_new_configuration_as_soon_as_it_appends_it():
    c = settled_cluster()
    # The follower's append response is lost: the entry is not committed anywhere.
    c[1].propose_conf_change(add_learner(4))
    c.deliver(drop=lambda m: m.type == MSG_APP_RESP or m.to == 3)
    assert c[2].last_index > c[2].commit_index
    assert c[2].learners == (4,)
    assert c[3].learners == ()


def test_4_1_a_change_is_refused_while_another_is_uncommitted():
    c = settled_cluster(spare=2)
    c.cut(1, 2)
    c.cut(1, 3)
    assert c[1].propose_conf_change(add_learner(4))
    assert not c[1].propose_conf_change(add_learner(5))
    c.process(1)
    assert rejections(c, 1) == ["pending_conf_change"]
    c.heal()
    c.tick_all(1)  # the heartbeat round brings the append back
    assert c[1].pending_conf_index <= c[1].commit_index
    assert change(c, 1, add_learner(5))
    assert c[1].learners == (4, 5)


def test_4_1_a_new_leader_refuses_changes_until_an_entry_of_its_term_commits():
    # Ongaro's correction to single-server changes (raft-dev, 2015): an uncommitted
    # change of an earlier term may still be overwritten.
    leader = make_leader(new_core(1, term=1, entries=ents(1, 1), commit=1))
    assert leader.commit_index < leader.last_index  # its no-op is not committed yet
    assert not leader.propose_conf_change(add_learner(4))
    assert [f["reason"] for f in events_named(drain(leader), "conf_change_rejected")] == ["leader_not_ready"]
    for voter in (2, 3):
        leader.step(msg(MSG_APP_RESP, 1, voter, leader.term, index=leader.last_index))
    assert leader.commit_index == leader.last_index
    assert leader.propose_conf_change(add_learner(4))


def test_4_1_an_uncommitted_change_that_is_overwritten_is_undone():
    c = settled_cluster(n=5, spare=0)
    c.isolate(1)
    c[1].propose_conf_change(remove(5))
    c.process(1)
    # Only node 2 receives the change; its answer is lost.
    app = next(m for m in reversed(c.sent) if m.type == MSG_APP and m.to == 2 and m.entries and m.entries[-1].kind)
    c.step(app)
    c.queue.clear()
    assert c[2].voters == (1, 2, 3, 4)
    # 3 wins with 4 and 5 (2 refuses: its log is longer); its no-op replaces the
    # change in 2's log, and 2's configuration goes back.
    c.cut(3, 2)
    c.elect(3)
    c.heal()
    c.isolate(1)
    c.tick(3)
    c.deliver()
    assert c[2].term_at(app.entries[-1].index) == c[3].term
    assert c[2].voters == (1, 2, 3, 4, 5) and c[2].pending_conf_index == 0, c[2].status()
    assert c.events_of(2, "config_changed")[-1]["voters"] == (1, 2, 3, 4, 5)


def test_4_1_invalid_changes_are_refused_with_a_reason():
    c = settled_cluster()
    for cc, reason in [
        (ConfChange(CONF_ADD_VOTER, 2), "already_member"),
        (promote(2), "already_voter"),
        (promote(9), "not_a_member"),
        (remove(9), "not_a_member"),
        (ConfChange(CONF_UPDATE, 9), "not_a_member"),
        (ConfChange(42, 4), "unknown_change_type"),
    ]:
        assert not c[1].propose_conf_change(cc)
        c.process(1)
        assert rejections(c, 1)[-1] == reason
    assert c[1].voters == (1, 2, 3)
    assert change_problem(ConfState((1,)), remove(1)) == "removing_last_voter"


def test_4_1_a_follower_forwards_a_change_and_the_leader_appends_it():
    c = settled_cluster()
    assert change(c, 2, add_learner(4))
    assert all(c[i].learners == (4,) for i in (1, 2, 3))
    proposed = c.events_of(1, "conf_change_proposed")
    assert proposed[-1]["origin"] == 2
    # A second forwarded change while the first is pending is refused at the leader.
    c.cut(1, 3)
    c.cut(1, 2)
    c[1].propose_conf_change(promote(4))
    c.process(1)
    c.heal()
    c.queue.clear()
    c.step(msg(MSG_PROP, 1, 2, 0, entries=(Entry(0, 0, encode_conf_change(remove(4), ConfState(())), ENTRY_CONF_CHANGE),)))
    assert rejections(c, 1)[-1] == "pending_conf_change"


def test_4_1_the_applied_conf_change_entry_tells_the_actor_what_changed():
    c = settled_cluster()
    change(c, 1, add_learner(4))
    c.tick_all(1)
    [entry] = [e for e in c.applied[3] if e.kind == ENTRY_CONF_CHANGE]
    cc, conf = decode_conf_change(entry.data)
    assert cc == add_learner(4) and conf == ConfState((1, 2, 3), (4,))


def test_4_1_a_snapshot_records_the_configuration_at_its_index():
    c = settled_cluster()
    change(c, 1, add_learner(4))
    c.tick_all(1)
    committed = c[1].commit_index
    c.cut(1, 2)
    c.cut(1, 3)
    c.cut(1, 4)
    c[1].propose_conf_change(promote(4))
    c.process(1)
    meta = c[1].compact(committed)
    assert (meta.voters, meta.learners) == ((1, 2, 3), (4,))  # not the pending promotion
    assert c[1].voters == (1, 2, 3, 4)  # still in force


def test_4_1_a_follower_that_installs_a_snapshot_takes_its_configuration():
    core = new_core(4, voters=(1, 2, 3), learners=(4,))
    drain(core)
    meta = SnapshotMeta(10, 2, (1, 2, 4), (5,))
    core.step(RaftMessage(type=9, to=4, sender=1, term=2, snapshot=meta))
    drain(core)
    assert core.conf_state == ConfState((1, 2, 4), (5,))


def test_4_1_a_restart_rebuilds_the_configuration_from_the_stored_log():
    c = settled_cluster()
    change(c, 1, add_learner(4))
    c.cut(1, 2)
    c.cut(1, 3)
    c[1].propose_conf_change(promote(4))
    c.deliver()  # reaches 4 only: uncommitted, but in 1's and 4's logs
    for node in (1, 2, 4):
        before = c[node].conf_state
        c.start(node)
        assert c[node].conf_state == before
    assert c[1].voters == (1, 2, 3, 4) and c[2].voters == (1, 2, 3)
    # and with a snapshot: the snapshot's configuration, then the entries after it
    disk = c.disks[1]
    snap = SnapshotMeta(disk.entries[1].index, disk.entries[1].term, (1, 2, 3), (4,))
    disk.snapshot = snap
    disk.entries = disk.entries[2:]
    disk.applied = max(disk.applied, snap.index)
    assert c.start(1).conf_state == ConfState((1, 2, 3, 4), ())


# ---------------------------------------------------------------------------
# Learners
# ---------------------------------------------------------------------------


def learner_cluster(**config) -> Cluster:
    c = settled_cluster(**config)
    assert change(c, 1, add_learner(4))
    c.tick_all(1)
    return c


def test_learners_receive_the_log_and_their_progress_is_tracked():
    c = learner_cluster()
    assert c.propose(1, b"x")
    assert c.applied_data(4) == c.applied_data(1) == [b"x"]
    assert c[1].match_index(4) == c[1].last_index
    assert c[1].learner_ready(4)
    assert not c[1].learner_ready(2)  # a voter is not a learner


def test_learners_receive_snapshots():
    c = settled_cluster()
    for i in range(5):
        c.propose(1, b"p%d" % i)
    meta = c[1].compact(c[1].applied_index)
    disk = c.disks[1]
    disk.entries = [e for e in disk.entries if e.index > meta.index]
    disk.snapshot = meta
    change(c, 1, add_learner(4))
    assert c[4].snapshot is not None and c[4].last_index == c[1].last_index
    assert c[4].learners == (4,)  # from the conf-change entry after the snapshot


def test_learners_never_count_towards_commit():
    c = learner_cluster()
    c.cut(1, 2)
    c.cut(1, 3)
    c[1].propose([b"x"])
    c.deliver()
    assert c[4].last_index == c[1].last_index  # the learner holds it ...
    assert c[1].commit_index < c[1].last_index  # ... and it does not count


def test_learners_never_campaign():
    c = learner_cluster(pre_vote=True)
    c.isolate(4)
    c.tick(4, 50)
    assert c[4].role == FOLLOWER
    assert not [m for m in c.sent if m.sender == 4 and m.type in (MSG_VOTE, MSG_PRE_VOTE)]
    c[4].campaign()
    c.process(4)
    assert c.events_of(4, "campaign_ignored")[-1]["reason"] == "not_a_voter"


def test_a_candidate_does_not_count_a_learners_vote():
    core = new_core(1, voters=(1, 2, 3), learners=(4,))
    core.campaign()
    drain(core)
    core.step(msg(MSG_VOTE_RESP, 1, 4, core.term))
    assert core.role != LEADER


def test_a_learner_answers_a_vote_request_so_a_promotion_it_has_not_seen_cannot_stall_the_cluster():
    # Voters {1,2,3}, learner 4; 1 appends "promote 4", only 2 gets it, 1 dies.
    c = learner_cluster()
    c.isolate(1)
    c.cut(1, 2)
    c[1].propose_conf_change(promote(4))
    c.process(1)
    app = next(m for m in reversed(c.sent) if m.type == MSG_APP and m.to == 2 and m.entries and m.entries[-1].kind)
    c.step(app)
    c.queue.clear()
    assert c[2].voters == (1, 2, 3, 4) and c[4].voters == (1, 2, 3)
    # 3 cannot win (2's log is longer); 2 needs 3 of 4 votes: 2, 3 and the learner 4.
    c.elect(2)
    assert c[2].role == LEADER


def test_transferring_leadership_to_a_learner_is_refused():
    c = learner_cluster()
    c[1].transfer_leadership(4)
    c.process(1)
    assert c.events_of(1, "transfer_rejected")[-1]["reason"] == "target_not_voter"


def test_check_quorum_counts_voters_only():
    c = learner_cluster(check_quorum=True)
    c.cut(1, 2)
    c.cut(1, 3)
    for _ in range(2 * 10):
        c.tick(1)
        c.deliver()
    assert c[1].role == FOLLOWER  # the learner's answers did not keep it leader


def test_a_read_index_is_not_confirmed_by_learners():
    c = learner_cluster()
    c.cut(1, 2)
    c.cut(1, 3)
    c[1].read_index(b"r1")
    c.deliver()
    c.tick(1, 3)
    c.deliver()
    assert c.read_states[1] == []


def test_a_promoted_learner_counts_from_the_promotion_on():
    c = learner_cluster()
    assert change(c, 1, promote(4))
    assert c[1].voters == (1, 2, 3, 4) and c[1].learners == ()
    # Quorum is now 3 of 4: the leader and 4 alone do not commit; the leader, 2 and 4 do.
    assert_leader_commits_only_with_a_quorum(c, cut_without_quorum=(2, 3), cut_with_quorum=(3,))


def test_learner_ready_follows_etcds_ninety_percent_rule():
    assert learner_in_sync(90, 100) and not learner_in_sync(89, 100)
    assert learner_in_sync(0, 0)


# ---------------------------------------------------------------------------
# §4.2: removal
# ---------------------------------------------------------------------------


def test_4_2_a_removed_voter_no_longer_counts():
    c = settled_cluster(n=5, spare=0)
    assert change(c, 1, remove(5))
    c.tick_all(1)
    assert c[1].voters == (1, 2, 3, 4) and 5 not in c[1].status()["progress"]
    # 3 of 4 now: 1, 2, 3 commit without 4 and 5; 1 and 2 alone do not.
    assert_leader_commits_only_with_a_quorum(c, cut_without_quorum=(3, 4), cut_with_quorum=(4,))


def test_4_2_2_a_leader_removing_itself_leads_without_counting_itself_then_steps_down():
    c = settled_cluster(spare=0)
    c.cut(1, 3)
    assert c[1].propose_conf_change(remove(1))
    c.process(1)
    # Uncommitted: 1 still leads, but with itself out, {2,3} needs both.
    assert c[1].role == LEADER and c[1].voters == (2, 3)
    c.deliver()
    assert c[1].role == LEADER and c[1].commit_index < c[1].last_index
    c.heal()
    c.tick(1)
    c.deliver()
    assert c[1].role == FOLLOWER
    assert c.events_of(1, "stepped_down")[-1]["reason"] == "removed_from_configuration"
    # It handed over with MSG_TIMEOUT_NOW: a successor leads without waiting.
    assert c.leader() in (2, 3) and c[c.leader()].voters == (2, 3)
    c.tick(1, 100)  # the removed node never campaigns again
    c.deliver()
    assert c[1].role == FOLLOWER and c.leader() in (2, 3)


@pytest.mark.parametrize("pre_vote, check_quorum", [(True, True), (True, False), (False, True)])
def test_4_2_3_a_removed_node_that_keeps_ticking_cannot_depose_the_leader(pre_vote, check_quorum):
    # Node 3 is cut off while it is removed, so its log never shows the removal and
    # it still believes it is a voter. Pre-vote (its log is behind: no pre-votes) or
    # the leader lease of check-quorum (§4.2.3) contains it; with neither, it deposes
    # the leader every election timeout, which is why cairn enables both.
    c = settled_cluster(spare=0, pre_vote=pre_vote, check_quorum=check_quorum)
    c.isolate(3)
    assert change(c, 1, remove(3))
    c.tick_all(2)
    term = c[1].term
    assert c[1].voters == (1, 2) and c[3].voters == (1, 2, 3)
    c.heal()
    for _ in range(20 * 10):
        c.tick_all(1)
    assert c[1].role == LEADER and c[1].term == term
    assert c.propose(1, b"still-serving") and c.applied_data(2)[-1] == b"still-serving"


def test_4_2_1_a_node_accepts_appends_from_a_leader_not_in_its_configuration():
    core = new_core(4, voters=(1, 2, 3), learners=(4,))
    drain(core)
    core.step(msg(MSG_APP, 4, 7, 3, index=0, log_term=0, entries=(Entry(1, 3, b""),), commit=1))
    [rd] = drain(core)
    assert core.leader_id == 7 and core.commit_index == 1
    assert [(m.type, m.to) for m in rd.messages] == [(MSG_APP_RESP, 7)]


def test_4_2_a_removed_node_can_be_added_back_as_a_learner_and_catch_up():
    c = settled_cluster(spare=0)
    change(c, 1, remove(3))
    c.tick_all(1)
    c.propose(1, b"while-away")
    assert change(c, 1, add_learner(3))
    c.tick_all(1)
    assert change(c, 1, promote(3))
    c.tick_all(1)
    assert c[3].voters == (1, 2, 3) and c.applied_data(3)[-1] == b"while-away"


# ---------------------------------------------------------------------------
# etcd's --strict-reconfig-check
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conf, cc, active, ok",
    [
        (ConfState((1, 2, 3)), ConfChange(CONF_ADD_VOTER, 4), {1, 2, 3}, True),
        (ConfState((1, 2, 3)), ConfChange(CONF_ADD_VOTER, 4), {1, 2}, False),  # 2 < quorum(4) = 3
        (ConfState((1,)), ConfChange(CONF_ADD_VOTER, 2), {1}, True),  # etcd's 1 -> 2 exception
        (ConfState((1, 2, 3)), add_learner(4), {1}, True),  # learners never matter
        (ConfState((1, 2, 3), (4,)), promote(4), {1, 2}, True),  # the learner counts as started
        (ConfState((1, 2, 3), (4,)), promote(4), {1}, False),
        (ConfState((1, 2, 3)), remove(3), {1, 2}, True),
        (ConfState((1, 2, 3)), remove(2), {1, 3}, True),  # removing a down member is fine
        (ConfState((1, 2, 3)), remove(3), {1}, False),  # {1,2} would need both
        (ConfState((1, 2, 3, 4, 5)), remove(5), {1, 2}, False),
        (ConfState((1, 2, 3), (4,)), remove(4), {1}, True),
    ],
)
def test_strict_reconfig_check_matches_etcd(conf, cc, active, ok):
    assert (reconfig_problem(conf, cc, active) is None) == ok
    if not ok:
        assert reconfig_problem(conf, cc, active) == ERR_NOT_ENOUGH_STARTED_MEMBERS


def test_the_leader_reports_who_is_recently_active():
    c = learner_cluster(check_quorum=True)
    c.isolate(3)
    c.tick_all(12)
    assert set(c[1].recently_active()) == {1, 2, 4}
    assert reconfig_problem(c[1].conf_state, remove(2), c[1].recently_active()) == ERR_NOT_ENOUGH_STARTED_MEMBERS
    assert c[2].recently_active() == ()


def test_config_history_follows_truncation_and_compaction():
    h = ConfigHistory(ConfState((1, 2, 3)))
    a = apply_change(h.latest(), add_learner(4))
    b = apply_change(a, promote(4))
    h.add(5, 1, a)
    h.add(9, 2, b)
    assert h.at(4) == ConfState((1, 2, 3)) and h.at(5) == a and h.at(100) == b
    terms = {5: 1, 9: 3}  # entry 9 was replaced by one of another term
    h.retain(terms.get)
    assert h.latest() == a and h.latest_index() == 5
    h.compact(6)
    assert h.base == a and h.latest_index() == 0


def test_4_2_2_a_leader_whose_own_removal_is_pending_may_still_be_elected():
    # {1,3}: leader 3 appends "remove 3", restarts before anyone has it. 3's log is
    # the only one 1 can vote for, so 3 must be able to campaign, win with 1's vote
    # (its own does not count), commit the removal and step down.
    c = Cluster(3, pre_vote=True)  # so the removed 2 stays quiet (§4.2.3)
    c.elect(3)
    assert change(c, 3, remove(2))
    c.tick_all(1)
    c.isolate(3)
    assert c[3].propose_conf_change(remove(3))
    c.process(3)
    c.start(3)  # restart: a follower whose latest configuration is {1}
    assert c[3].voters == (1,) and c[3].role == FOLLOWER
    c.heal()
    for _ in range(40):
        c.tick_all(1)
    assert c.leader() == 1 and c[1].voters == (1,)
    assert c[1].commit_index == c[1].last_index
    assert c.events_of(3, "stepped_down")[-1]["reason"] == "removed_from_configuration"
