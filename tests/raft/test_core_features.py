"""Beyond the paper's §5: pre-vote, check-quorum, ReadIndex, leadership transfer,
proposal forwarding, flow control, compaction/snapshots, restarts, and the Ready
contract with the actor."""

from __future__ import annotations

import pytest

from actors.raft.core import CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, ReadState
from actors.raft.progress import PROBE, REPLICATE
from actors.raft.retention import compaction_index
from tests.raft.harness import Cluster, drain, drain_messages, ents, events_named, msg, new_core
from tests.raft.test_core_paper import make_leader
from transport.raft_messages import (
    CAMPAIGN_TRANSFER,
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_HEARTBEAT_RESP,
    MSG_PRE_VOTE,
    MSG_PROP,
    MSG_PROP_RESP,
    MSG_READ_INDEX,
    MSG_SNAP,
    MSG_TIMEOUT_NOW,
    MSG_TRANSFER_LEADER,
    MSG_VOTE,
    MSG_VOTE_RESP,
    Entry,
)

# ---------------------------------------------------------------------------
# Single voter
# ---------------------------------------------------------------------------


def test_a_single_voter_cluster_elects_itself_and_commits():
    core = new_core(1, voters=(1,), pre_vote=True)
    for _ in range(20):
        core.tick()
    assert core.role == LEADER and core.term == 1
    assert core.propose([b"a", b"b"])
    rds = drain(core)
    # The entries are handed out before (never after) they are reported committed.
    first_entries = next(i for i, rd in enumerate(rds) if any(e.data == b"b" for e in rd.entries))
    first_commit = next(i for i, rd in enumerate(rds) if any(e.data == b"b" for e in rd.committed_entries))
    assert first_entries < first_commit
    assert core.commit_index == core.applied_index == 3


def test_a_leader_commits_only_what_it_has_persisted_itself():
    core = new_core(1, voters=(1,))
    core.campaign()
    rd = core.ready()
    assert rd.entries == (Entry(1, 1, b""),) and rd.committed_entries == ()
    assert core.commit_index == 0  # not durable yet
    core.advance(rd)
    assert core.commit_index == 1


def test_a_single_voter_answers_read_index_at_once():
    core = new_core(1, voters=(1,))
    core.campaign()
    drain(core)
    assert core.read_index(b"r")
    [rd] = drain(core)
    assert rd.read_states == (ReadState(1, b"r"),)


# ---------------------------------------------------------------------------
# Pre-vote
# ---------------------------------------------------------------------------


def _node_3_partitioned_for_100_ticks(pre_vote: bool):
    """A 3-node cluster led by node 1, whose node 3 is cut off and times out
    many times over; the cluster and the leader's term before the partition."""
    c = Cluster(3, pre_vote=pre_vote)
    c.elect(1)
    term = c[1].term
    c.isolate(3)
    c.tick(3, 100)
    return c, term


def test_pre_vote_keeps_a_partitioned_node_from_inflating_its_term_and_deposing_the_leader():
    c, term = _node_3_partitioned_for_100_ticks(pre_vote=True)
    c.deliver()
    assert c[3].term == term  # asked "would you vote?" many times, changed nothing
    assert c[3].role == PRE_CANDIDATE
    c.heal()
    c.tick_all(3)
    assert c.leader() == 1 and c[1].term == term
    assert c[3].role == FOLLOWER and c[3].leader_id == 1


def test_without_pre_vote_the_same_partition_disrupts_the_leader():
    c, term = _node_3_partitioned_for_100_ticks(pre_vote=False)
    assert c[3].term > term + 3
    c.heal()
    c.tick_all(30)
    assert c[1].term > term + 3  # the whole cluster was dragged to the inflated term


def test_a_pre_candidate_changes_no_durable_state():
    core = new_core(1, term=4, vote=2, pre_vote=True)
    drain(core)
    core.campaign()
    [rd] = drain(core)
    assert core.role == PRE_CANDIDATE
    assert rd.hard_state is None and core.term == 4
    assert {(m.type, m.term) for m in rd.messages} == {(MSG_PRE_VOTE, 5)}


def test_a_pre_candidate_that_wins_becomes_a_real_candidate():
    core = new_core(1, term=4, pre_vote=True)
    core.campaign()
    drain(core)
    core.step(msg(6, 1, 2, 5))  # MSG_PRE_VOTE_RESP granted, carrying the future term
    assert core.role == CANDIDATE and core.term == 5


def test_a_pre_vote_is_granted_without_consuming_the_vote_or_changing_term():
    core = new_core(1, term=4, vote=3)
    drain(core)
    core.step(msg(MSG_PRE_VOTE, 1, 2, 5, index=0, log_term=0))
    [rd] = drain(core)
    assert rd.hard_state is None and core.term == 4
    [reply] = rd.messages
    assert not reply.reject and reply.term == 5


def test_a_pre_vote_from_a_stale_term_is_answered_with_the_current_term():
    core = new_core(1, term=7)
    drain(core)
    core.step(msg(MSG_PRE_VOTE, 1, 2, 5, index=9, log_term=4))
    [reply] = drain_messages(core)
    assert reply.reject and reply.term == 7


# ---------------------------------------------------------------------------
# Check-quorum and the leader lease
# ---------------------------------------------------------------------------


def test_check_quorum_a_leader_cut_off_from_the_majority_steps_down():
    c = Cluster(3, check_quorum=True, election_ticks=10)
    c.elect(1)
    c.tick_all(3)
    assert c[1].quorum_active()
    c.isolate(1)
    c.tick(1, 10)
    assert c[1].role == LEADER  # the first check found the quorum from before
    c.tick(1, 10)
    assert c[1].role == FOLLOWER
    assert c.events_of(1, "check_quorum_failed")


def test_quorum_active_reflects_recent_responses_only():
    c = Cluster(3, check_quorum=True, election_ticks=10)
    c.elect(1)
    assert c[1].quorum_active()  # the followers answered the election's appends
    c.isolate(1)
    c.tick(1, 9)
    assert c[1].quorum_active()  # heard 9 ticks ago: within the election timeout
    c.tick(1, 1)
    assert not c[1].quorum_active()
    assert not c[2].quorum_active()  # followers never claim it


def test_check_quorum_followers_in_lease_ignore_vote_requests():
    c = Cluster(3, check_quorum=True)
    c.elect(1)
    c.tick_all(1)
    term = c[1].term
    c.step(msg(MSG_VOTE, 2, 3, term + 5, index=100, log_term=term))
    assert c[2].term == term  # ignored: it heard from its leader recently
    assert c.events_of(2, "rejected")[-1]["reason"] == "leader_lease"


def test_check_quorum_a_transfer_election_overrides_the_lease():
    c = Cluster(3, check_quorum=True)
    c.elect(1)
    term = c[1].term
    c.step(msg(MSG_VOTE, 2, 3, term + 1, index=100, log_term=term, context=CAMPAIGN_TRANSFER))
    assert c[2].term == term + 1


def test_check_quorum_a_rejoining_node_with_an_inflated_term_gets_a_leader_again():
    c = Cluster(3, check_quorum=True, pre_vote=False)
    c.elect(1)
    c.isolate(3)
    c.tick(3, 50)
    assert c[3].term > c[1].term
    c.heal()
    c.tick_all(60)
    leader = c.leader()
    assert leader and all(c[i].leader_id == leader for i in c.ids)
    assert len({c[i].term for i in c.ids}) == 1


# ---------------------------------------------------------------------------
# ReadIndex (thesis §6.4)
# ---------------------------------------------------------------------------


def test_read_index_on_the_leader_confirms_leadership_then_reports_the_commit_index():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"x")
    commit = c[1].commit_index
    assert c[1].read_index(b"ctx-1")
    c.process(1)
    heartbeats = [m for m in c.queue if m.type == MSG_HEARTBEAT]
    assert len(heartbeats) == 2 and len({m.context for m in heartbeats}) == 1
    assert heartbeats[0].context  # the leader's round id
    assert c.read_states[1] == []  # not before a quorum answered
    c.deliver()
    assert c.read_states[1] == [ReadState(commit, b"ctx-1")]


def test_read_index_on_a_leader_without_a_quorum_never_answers():
    c = Cluster(3)
    c.elect(1)
    c.isolate(1)
    c[1].read_index(b"stale?")
    c.tick(1, 5)
    c.deliver()
    assert c.read_states[1] == []


def test_read_index_waits_until_the_new_leader_commits_an_entry_of_its_term():
    leader = make_leader(new_core(1, term=1, entries=ents(1, 1), commit=1))
    leader.read_index(b"early")
    assert not any(m.context for m in drain_messages(leader))  # parked, no round yet
    leader.step(msg(MSG_APP_RESP, 1, 2, leader.term, index=3))  # the no-op commits
    hb = [m for m in drain_messages(leader) if m.type == MSG_HEARTBEAT]
    assert hb and all(m.context == hb[0].context != b"" for m in hb)
    leader.step(msg(MSG_HEARTBEAT_RESP, 1, 2, leader.term, context=hb[0].context))
    [rd] = drain(leader)
    assert rd.read_states == (ReadState(3, b"early"),)


def test_read_index_through_a_follower():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"x")
    assert c[2].read_index(b"via-2")
    c.process(2)
    assert [m.type for m in c.queue] == [MSG_READ_INDEX]
    c.deliver()
    assert c.read_states[2] == [ReadState(c[1].commit_index, b"via-2")]


def test_read_index_without_a_known_leader_is_refused():
    core = new_core(2)
    assert not core.read_index(b"r")


def test_read_index_requests_share_one_heartbeat_round_acknowledgement():
    c = Cluster(3)
    c.elect(1)
    c[1].read_index(b"a")
    c[1].read_index(b"b")
    c.deliver()
    assert [rs.context for rs in c.read_states[1]] == [b"a", b"b"]


def test_read_contexts_only_need_to_be_unique_per_node():
    c = Cluster(3)
    c.elect(1)
    for i in c.ids:
        assert c[i].read_index(b"read-1")
    c.deliver()
    commit = c[1].commit_index
    for i in c.ids:
        assert c.read_states[i] == [ReadState(commit, b"read-1")]


def test_a_lost_read_round_is_confirmed_by_a_later_heartbeat():
    c = Cluster(3)
    c.elect(1)
    c[1].read_index(b"r")
    c.deliver(drop=lambda m: m.type == MSG_HEARTBEAT)
    assert c.read_states[1] == []
    c.tick(1)
    c.deliver()
    assert [rs.context for rs in c.read_states[1]] == [b"r"]


# ---------------------------------------------------------------------------
# Leadership transfer (thesis §3.10)
# ---------------------------------------------------------------------------


def test_transfer_to_an_up_to_date_follower_makes_it_leader():
    c = Cluster(3, pre_vote=True, check_quorum=True)
    c.elect(1)
    term = c[1].term
    c[1].transfer_leadership(2)
    c.deliver()
    assert c.leader() == 2 and c[2].term == term + 1
    assert any(m.type == MSG_TIMEOUT_NOW and m.to == 2 for m in c.sent)


def lagging_cluster(proposals: int) -> Cluster:
    """Three members, 1 leading, 3 isolated while 1 and 2 commit `proposals` entries."""
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    for i in range(proposals):
        c.propose(1, b"p%d" % i)
    return c


def test_transfer_to_a_lagging_follower_catches_it_up_first():
    c = lagging_cluster(5)
    c.heal()
    c.sent.clear()
    c[1].transfer_leadership(3)
    c.deliver()
    assert c.leader() == 3
    kinds = [m.type for m in c.sent if m.sender == 1 and m.to == 3]
    assert kinds.index(MSG_APP) < kinds.index(MSG_TIMEOUT_NOW)
    assert c.applied_data(3)[:5] == [b"p%d" % i for i in range(5)]


def test_proposals_are_refused_during_a_transfer_and_accepted_after_it_times_out():
    c = Cluster(3, election_ticks=10)
    c.elect(1)
    c.isolate(3)
    c[1].transfer_leadership(3)
    assert not c[1].propose([b"during"])
    c.tick(1, 10)
    assert c.events_of(1, "transfer_aborted")
    assert c.leader() == 1
    assert c[1].propose([b"after"])


def test_a_follower_forwards_a_transfer_request_to_the_leader():
    c = Cluster(3)
    c.elect(1)
    c[3].transfer_leadership(3)
    c.process(3)
    assert [(m.type, m.to, m.index) for m in c.queue] == [(MSG_TRANSFER_LEADER, 1, 3)]
    c.deliver()
    assert c.leader() == 3


def test_a_candidate_ignores_timeout_now():
    core = new_core(1, term=1)
    core.campaign()
    term = core.term
    core.step(msg(MSG_TIMEOUT_NOW, 1, 2, term))
    assert core.term == term and core.role == CANDIDATE


# ---------------------------------------------------------------------------
# Proposals
# ---------------------------------------------------------------------------


def test_a_follower_forwards_a_proposal_batch_as_one_message():
    c = Cluster(3)
    c.elect(1)
    assert c[2].propose([b"a", b"b", b"c"])
    c.process(2)
    [fwd] = list(c.queue)
    assert (fwd.type, fwd.to, fwd.term) == (MSG_PROP, 1, 0)
    assert [e.data for e in fwd.entries] == [b"a", b"b", b"c"]
    c.deliver()
    for i in c.ids:
        assert c.applied_data(i) == [b"a", b"b", b"c"]


def test_a_proposal_without_a_leader_is_dropped():
    core = new_core(1)
    assert not core.propose([b"x"])
    assert events_named(drain(core), "dropped_proposal")[0]["reason"] == "no_leader"


def test_the_uncommitted_budget_limits_proposals():
    c = Cluster(3, max_uncommitted_bytes=10)
    c.elect(1)
    c.isolate(1)
    assert c[1].propose([b"12345678"])
    assert not c[1].propose([b"12345678"])
    c.heal()
    c.tick_all(1)
    assert c[1].propose([b"12345678"])  # the budget frees as entries commit


def test_a_forwarded_proposal_is_not_forwarded_again():
    c = Cluster(3)
    c.elect(1)
    c.step(msg(MSG_PROP, 2, 3, 0, entries=(Entry(0, 0, b"x"),)))
    assert c.events_of(2, "dropped_proposal")[-1]["reason"] == "not_leader"


# ---------------------------------------------------------------------------
# Dropped forwarded proposals are answered: definite, retryable rejections
# ---------------------------------------------------------------------------


def _prop(to: int, sender: int, *data: bytes):
    return msg(MSG_PROP, to, sender, 0, entries=tuple(Entry(0, 0, d) for d in data))


def _rejections(messages, to: int) -> list[list[bytes]]:
    return [[e.data for e in m.entries] for m in messages if m.type == MSG_PROP_RESP and m.to == to]


def _dropped_at(c: Cluster, node_id: int) -> list[bytes]:
    return [d for rd in c.readies[node_id] for d in rd.dropped_proposals]


def _logged_anywhere(c: Cluster, data: bytes) -> bool:
    return any(e.data == data for i in c.ids for e in c.disks[i].entries)


def test_a_leader_that_lost_leadership_rejects_a_proposal_forwarded_to_it():
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    c.elect(2)  # 1 is now a follower of 2; isolated 3 still believes 1 leads term 1
    assert c[1].role == FOLLOWER and (c[3].leader_id, c[3].term) == (1, 1)
    c.cut_links -= {(1, 3), (3, 1)}
    assert c.propose(3, b"x", b"y")  # forwarded to 1, which drops it and says so
    assert c.events_of(1, "dropped_proposal")[-1]["reason"] == "not_leader"
    assert _rejections(c.sent, 3) == [[b"x", b"y"]]
    assert _dropped_at(c, 3) == [b"x", b"y"]
    assert c[3].term == 1  # the rejection is term-less: it deposes nobody, elects nobody
    c.heal()
    c.tick_all(3)
    assert not _logged_anywhere(c, b"x") and not _logged_anywhere(c, b"y")


def test_a_follower_that_knows_a_leader_still_rejects_rather_than_forwards():
    c = Cluster(3)
    c.elect(1)
    c.step(_prop(2, 3, b"x"))
    c.deliver()
    assert _rejections(c.sent, 3) == [[b"x"]]
    assert _dropped_at(c, 3) == [b"x"]
    assert [m.type for m in c.sent if m.sender == 2 and m.to == 1 and m.type == MSG_PROP] == []


@pytest.mark.parametrize("role", [FOLLOWER, PRE_CANDIDATE, CANDIDATE])
def test_a_node_without_a_leader_rejects_a_forwarded_proposal(role):
    core = new_core(1, term=2, pre_vote=role == PRE_CANDIDATE)
    if role != FOLLOWER:
        core.campaign()
    drain(core)
    assert core.role == role and core.leader_id == 0
    core.step(_prop(1, 2, b"x"))
    rds = drain(core)
    [reject] = [m for rd in rds for m in rd.messages if m.type == MSG_PROP_RESP]
    assert (reject.to, reject.term, reject.reject) == (2, 0, True)
    assert [e.data for e in reject.entries] == [b"x"]
    assert events_named(rds, "dropped_proposal")[0]["reason"] == "no_leader"
    assert core.last_index == 0


def _assert_rejects_forwarded(leader, data: bytes, reason: str) -> None:
    """A proposal forwarded by 2 is answered with a rejection naming it, and appended nowhere."""
    drain(leader)
    last = leader.last_index
    leader.step(_prop(1, 2, data))
    rds = drain(leader)
    assert _rejections([m for rd in rds for m in rd.messages], 2) == [[data]]
    assert events_named(rds, "dropped_proposal")[0]["reason"] == reason
    assert leader.last_index == last


def test_a_leader_at_its_uncommitted_limit_rejects_a_forwarded_proposal():
    leader = make_leader(new_core(1, term=1, max_uncommitted_bytes=10))
    assert leader.propose([b"12345678"])  # nobody acknowledges: stays uncommitted
    _assert_rejects_forwarded(leader, b"12345678", "too_many_uncommitted")


def test_a_leader_handing_over_rejects_a_forwarded_proposal():
    leader = make_leader(new_core(1, term=1))
    leader.transfer_leadership(3)  # 3 has not caught up: the transfer stays pending
    _assert_rejects_forwarded(leader, b"x", "leadership_transfer")


def test_a_leader_that_appends_a_forwarded_proposal_sends_no_rejection():
    c = Cluster(3)
    c.elect(1)
    assert c.propose(2, b"x")
    assert _rejections(c.sent, 2) == [] and _dropped_at(c, 2) == []
    assert c.applied_data(2) == [b"x"]


def test_a_local_proposal_dropped_is_refused_by_propose_not_by_a_message():
    leader = make_leader(new_core(1, term=1))
    leader.transfer_leadership(3)
    drain(leader)
    assert not leader.propose([b"x"])
    rds = drain(leader)
    assert not any(m.type == MSG_PROP_RESP for rd in rds for m in rd.messages)
    assert not any(rd.dropped_proposals for rd in rds)


def test_a_proposal_rejection_reaches_its_origin_whatever_its_role_now():
    core = make_leader(new_core(1, term=3))
    term = core.term
    core.step(msg(MSG_PROP_RESP, 1, 2, 0, entries=(Entry(0, 0, b"x"),), reject=True))
    rds = drain(core)
    assert [d for rd in rds for d in rd.dropped_proposals] == [b"x"]
    assert core.role == LEADER and core.term == term


@pytest.mark.parametrize("transfer_at", range(0, 12, 3))
def test_forwarded_proposals_across_a_leader_change_are_either_committed_or_rejected_never_both(transfer_at):
    """A lossless network: every proposal 3 forwards gets a definite outcome,
    committed everywhere or rejected back to 3, never both."""
    c = Cluster(3)
    c.elect(1)
    proposed = []
    for i in range(12):
        if i == transfer_at:
            c[1].transfer_leadership(2)
            c.process(1)  # the transfer starts; 3's next proposals race with it
        data = b"p%d" % i
        if c[3].propose([data]):
            proposed.append(data)
        c.process(3)
        if i % 2:
            c.deliver()
    c.deliver()
    c.tick_all(3)
    assert c.leader() == 2
    dropped = set(_dropped_at(c, 3))
    committed = set(c.applied_data(1))
    assert all(c.applied_data(i) == c.applied_data(1) for i in c.ids)
    assert dropped, "the transfer window rejected nothing: the test tests nothing"
    assert not dropped & committed
    assert dropped | committed == set(proposed)
    assert not any(_logged_anywhere(c, d) for d in dropped)


# ---------------------------------------------------------------------------
# Flow control
# ---------------------------------------------------------------------------


def test_a_probing_leader_sends_one_append_until_it_hears_back():
    leader = make_leader(new_core(1, term=1, max_entries_per_message=1))
    leader.propose([b"a"])
    leader.propose([b"b"])
    apps = [m for m in drain_messages(leader) if m.type == MSG_APP and m.to == 2]
    assert len(apps) == 0  # the election's probe is still unanswered
    assert leader.status()["progress"][2]["state"] == "probe"


def test_the_inflight_window_bounds_pipelined_appends():
    leader = make_leader(new_core(1, term=1, max_entries_per_message=1, max_inflight_messages=2))
    leader.step(msg(MSG_APP_RESP, 1, 2, leader.term, index=1))  # now replicating
    drain(leader)
    assert leader.status()["progress"][2]["state"] == "replicate"
    for i in range(5):
        leader.propose([b"%d" % i])
    apps = [m for m in drain_messages(leader) if m.type == MSG_APP and m.to == 2]
    assert len(apps) == 2
    leader.step(msg(MSG_APP_RESP, 1, 2, leader.term, index=2))
    apps = [m for m in drain_messages(leader) if m.type == MSG_APP and m.to == 2]
    assert [m.entries[0].index for m in apps] == [4]


def test_a_heartbeat_response_unsticks_a_full_window_of_lost_appends():
    leader = make_leader(new_core(1, term=1, max_entries_per_message=1, max_inflight_messages=1))
    leader.step(msg(MSG_APP_RESP, 1, 2, leader.term, index=1))
    leader.propose([b"lost"])
    drain(leader)
    leader.propose([b"next"])
    assert not [m for m in drain_messages(leader) if m.type == MSG_APP and m.to == 2]
    leader.step(msg(MSG_HEARTBEAT_RESP, 1, 2, leader.term))
    assert [m for m in drain_messages(leader) if m.type == MSG_APP and m.to == 2]


def test_report_unreachable_returns_a_replicating_peer_to_probing():
    leader = make_leader(new_core(1, term=1))
    leader.step(msg(MSG_APP_RESP, 1, 2, leader.term, index=1))
    assert leader._progress[2].state == REPLICATE  # noqa: SLF001
    leader.report_unreachable(2)
    assert leader._progress[2].state == PROBE  # noqa: SLF001


def test_a_stale_rejection_does_not_move_next_backwards():
    leader = make_leader(new_core(1, term=1))
    leader.step(msg(MSG_APP_RESP, 1, 2, leader.term, index=1))
    drain(leader)
    leader.step(msg(MSG_APP_RESP, 1, 2, leader.term, index=0, reject=True, reject_hint=0))
    assert leader.status()["progress"][2]["match"] == 1
    assert leader.status()["progress"][2]["next"] == 2


# ---------------------------------------------------------------------------
# Compaction and snapshots
# ---------------------------------------------------------------------------


def test_compaction_then_a_lagging_follower_is_restored_from_a_snapshot():
    c = lagging_cluster(6)
    leader = c[1]
    applied = leader.applied_index
    meta = leader.compact(applied - 1)
    assert (meta.index, meta.term) == (applied - 1, leader.term)
    assert leader.first_index == applied
    c.heal()
    c.tick_all(3)
    snaps = [m for m in c.sent if m.type == MSG_SNAP]
    assert snaps and snaps[0].to == 3 and snaps[0].snapshot == meta
    installed = [rd.snapshot for rd in c.readies[3] if rd.snapshot is not None]
    assert installed == [meta]
    assert c[3].applied_index == c[1].commit_index
    # Entries after the snapshot were applied normally on node 3.
    assert [e.index for e in c.applied[3] if e.index > meta.index] == list(range(meta.index + 1, c[1].commit_index + 1))
    c.propose(1, b"after")
    assert c.applied_data(3)[-1] == b"after"


def test_a_failed_snapshot_is_retried():
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"a")
    c[1].compact(c[1].applied_index)
    c.heal()
    c.auto_report_snapshot = False
    c.dropped_types.add(MSG_SNAP)
    c.tick_all(2)
    assert c[1].status()["progress"][3]["state"] == "snapshot"
    c[1].report_snapshot(3, False)
    c.heal()
    c.auto_report_snapshot = True
    c.tick_all(3)
    assert c[3].commit_index == c[1].commit_index


def test_a_follower_installing_a_snapshot_while_writes_go_on_needs_no_second_one():
    """Issue 15's restarted voter that stalled ~20 s: the leader's snapshot reached
    it (report_snapshot ok) but took a while to install; meanwhile heartbeats
    made the leader probe just after the snapshot, the follower (its log still the
    old one) rejected the probe, and the actor's compaction, ignorant of the
    follower, had dropped the entries after the snapshot anyway: another snapshot,
    and another while writes went on. Here the actor holds back appends while it
    installs, and compacts no further than catch_up_index(): one snapshot, then
    the log."""
    keep = 4
    c = Cluster(3)
    c.elect(1)
    leader = c[1]

    def compact():  # the raft actor's policy (actors/raft/retention.py)
        index = compaction_index(leader.applied_index, keep, leader.first_index, leader.catch_up_index(), 0)
        if index:
            leader.compact(index)

    installing = []  # the MSG_SNAP node 3 received, its data not yet installed

    def network(m):
        if m.type == MSG_SNAP:
            installing.append(m)
            return True
        return bool(installing) and m.to == 3 and m.type == MSG_APP

    def write(n):
        for i in range(n):
            leader.propose([b"w%d" % i])
            c.deliver(drop=network)
            compact()
            c.tick(1, leader._cfg.heartbeat_ticks)  # heartbeats: node 3 answers them while installing
            c.deliver(drop=network)

    c.isolate(3)
    write(20)
    assert leader.first_index > c[3].last_index + 1  # node 3 needs a snapshot
    c.heal()
    write(2)
    assert len(installing) == 1
    snapshot = installing[0].snapshot
    leader.report_snapshot(3, True)  # streamed; node 3 now installs it
    write(3 * keep)
    assert leader.first_index <= snapshot.index + 1, "the entries after the snapshot were compacted away"
    c.step(installing.pop())  # installed: the actor steps it
    c.deliver(drop=network)
    write(2 * keep)
    assert [m.snapshot.index for m in c.sent if m.type == MSG_SNAP] == [snapshot.index]
    assert c[3].commit_index == leader.commit_index and c.applied_data(3)[-1] == c.applied_data(1)[-1]
    assert leader.status()["progress"][3]["state"] == "replicate"


def test_catch_up_index_ignores_followers_not_heard_from_and_entries_compacted_away():
    c = Cluster(3, check_quorum=True)
    c.elect(1)
    leader = c[1]
    for i in range(5):
        c.propose(1, b"v%d" % i)
    assert leader.catch_up_index() == leader.last_index  # both followers replicate everything
    c.isolate(3)
    c.propose(1, b"x")
    c.propose(1, b"y")
    assert leader.catch_up_index() == leader.last_index - 2  # node 3 is two behind
    leader.compact(leader.last_index - 1)
    assert leader.catch_up_index() == leader.last_index  # it needs a snapshot now: the log cannot help
    c.propose(1, b"z")
    for _ in range(leader._cfg.election_ticks + 1):
        c.tick(1)
        c.deliver()
    assert leader.catch_up_index() == leader.last_index  # node 3 silent for an election timeout
    assert c[2].catch_up_index() is None  # a follower keeps nothing for anyone


def test_a_snapshot_not_newer_than_the_commit_index_is_ignored():
    core = new_core(2, term=2, entries=ents(1, 1, 2), commit=3)
    drain(core)
    from transport.raft_messages import SnapshotMeta

    core.step(msg(MSG_SNAP, 2, 1, 2, snapshot=SnapshotMeta(2, 1, (1, 2, 3))))
    [rd] = drain(core)
    assert rd.snapshot is None and core.last_index == 3
    assert rd.messages[0].index == 3


def test_compaction_past_applied_is_a_programmer_error():
    core = new_core(1, voters=(1,))
    with pytest.raises(AssertionError):
        core.compact(5)


# ---------------------------------------------------------------------------
# Restart
# ---------------------------------------------------------------------------


def test_a_restarted_cluster_keeps_its_log_term_and_commit():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a", b"b")
    before = {i: (c[i].term, c[i].commit_index, c.log_terms(i)) for i in c.ids}
    for i in c.ids:
        c.start(i)
    after = {i: (c[i].term, c[i].commit_index, c.log_terms(i)) for i in c.ids}
    assert before == after
    assert all(c[i].role == FOLLOWER and c[i].leader_id == 0 for i in c.ids)
    c.elect(2)
    c.propose(2, b"c")
    for i in c.ids:
        assert c.applied_data(i) == [b"a", b"b", b"c"]  # nothing applied twice


# Campaigning soon after a start (RaftCore.campaign_soon)


def _ticks_to_campaign(core, limit: int = 100) -> int:
    """Ticks until core starts a (pre-)campaign."""
    for ticks in range(1, limit + 1):
        core.tick()
        if core.role in (PRE_CANDIDATE, CANDIDATE):
            return ticks
    raise AssertionError("no campaign")


@pytest.mark.parametrize("seed", range(20))
def test_campaign_soon_campaigns_within_its_window_not_before(seed):
    core = new_core(1, term=3, entries=ents(1, 2, 3), commit=3, seed=seed, pre_vote=True, check_quorum=True,
                    election_ticks=10)
    core.tick()  # time already spent counts for nothing against the window
    core.campaign_soon(2, 5)
    assert 2 <= _ticks_to_campaign(core) <= 5
    assert core.role == PRE_CANDIDATE and core.term == 3  # a pre-vote: no term changes yet


def test_campaign_soon_spreads_the_members_campaigns():
    seen = set()
    for seed in range(50):
        core = new_core(1, seed=seed, pre_vote=True, election_ticks=10)
        core.campaign_soon(2, 5)
        seen.add(_ticks_to_campaign(core))
    assert seen == {2, 3, 4, 5}


def test_without_campaign_soon_a_start_waits_a_whole_election_timeout():
    core = new_core(1, pre_vote=True, election_ticks=10)
    assert 10 <= _ticks_to_campaign(core) < 20


def test_campaign_soon_changes_nothing_for_a_member_that_knows_a_leader():
    c = Cluster(3, pre_vote=True, check_quorum=True, election_ticks=10)
    c.elect(1)
    c[2].campaign_soon(1, 1)
    c.tick(2, 9)
    assert c[2].role == FOLLOWER and c[2].leader_id == 1
    c[1].campaign_soon(1, 1)  # nor for the leader
    c.tick(1, 3)
    assert c[1].role == LEADER


def test_a_member_restarted_into_a_live_cluster_hears_the_leader_before_it_campaigns():
    c = Cluster(3, pre_vote=True, check_quorum=True, election_ticks=10)
    c.elect(1)
    term = c[1].term
    c.start(3)
    c[3].campaign_soon(2, 5)
    c.tick_all(1)  # the leader's heartbeat (heartbeat_ticks=1) arrives within the first tick
    assert c[3].leader_id == 1
    c.tick_all(10)
    assert c[1].role == LEADER and c[1].term == term
    assert not c.events_of(3, "became_pre_candidate")


def test_a_premature_pre_vote_into_a_live_cluster_is_refused_and_disturbs_nobody():
    c = Cluster(3, pre_vote=True, check_quorum=True, election_ticks=10)
    c.elect(1)
    term = c[1].term
    c.start(3)
    c[3].campaign()  # before any heartbeat reached it
    c.deliver()
    assert c[1].role == LEADER and c[1].term == term
    assert c.events_of(2, "rejected")[-1]["reason"] == "leader_lease"
    c.tick_all(2)
    assert c[3].role == FOLLOWER and c[3].leader_id == 1 and c[3].term == term


def test_freshly_restarted_members_vote_at_once_without_waiting_out_a_lease():
    # After a whole-cluster restart no member has heard from a leader, so none
    # is in a lease: the first campaign is granted at once.
    c = Cluster(3, pre_vote=True, check_quorum=True, election_ticks=10)
    c.elect(1)
    c.propose(1, b"a")
    term = c[1].term
    for i in c.ids:
        c.start(i)
    c[2].campaign()
    c.deliver()
    assert c[2].role == LEADER and c[2].term == term + 1
    assert not [e for i in c.ids for e in c.events_of(i, "rejected") if e["reason"] == "leader_lease"]


def _ticks_to_a_leader(c: Cluster, members, limit: int) -> tuple[int, int]:
    """Tick `members` in lockstep (delivering after each tick) until one of them
    leads, at most `limit` ticks: (ticks taken, the leader or 0)."""
    for ticks in range(1, limit + 1):
        for i in members:
            c.tick(i)
        c.deliver()
        leader = c.leader()
        if leader in members:
            return ticks, leader
    return limit, 0


def test_a_whole_cluster_restart_elects_a_leader_within_the_campaign_soon_window():
    # The harness ticks every member in lockstep, the worst case: members whose
    # draws are equal campaign in the same instant (real members' ticks are out of
    # phase). A split vote then costs one more randomized timeout; otherwise the
    # first campaign wins, within the window.
    within_window = 0
    for seed in range(40):
        c = Cluster(3, seed=seed, pre_vote=True, check_quorum=True, election_ticks=10)
        c.elect(1)
        c.propose(1, b"a")
        for i in c.ids:
            c.start(i)
            c[i].campaign_soon(2, 5)
        ticks, leader = _ticks_to_a_leader(c, c.ids, 5 + 2 * 10)
        assert leader, f"seed {seed}: no leader after a split vote's retry"
        within_window += ticks <= 5
        assert all(c[i].leader_id == leader for i in c.ids)
        c.propose(leader, b"b")
        assert all(c.applied_data(i)[-2:] == [b"a", b"b"] for i in c.ids)
    assert within_window >= 36, within_window


def test_followers_that_lost_a_dead_leaders_connection_elect_a_new_one_within_the_window():
    # The leader's process died: both followers' connections to it dropped, and
    # each actor told its core. Without that they would wait at least a whole
    # election timeout (10 ticks) after the last heartbeat. Lockstep ticks are
    # the worst case for a split vote (see the whole-cluster restart above).
    within_window = 0
    for seed in range(40):
        c = Cluster(3, seed=seed, pre_vote=True, check_quorum=True, election_ticks=10)
        c.elect(1)
        c.propose(1, b"a")
        term = c[1].term
        c.isolate(1)
        for i in (2, 3):
            c[i].leader_unreachable(1, 5)
            c.process(i)
            assert c[i].leader_id == 0 and c.events_of(i, "leader_unreachable")[-1]["leader"] == 1
        ticks, leader = _ticks_to_a_leader(c, (2, 3), 5 + 4 * 20)  # a split vote costs a randomized timeout more
        assert leader and c[leader].term > term, f"seed {seed}: no new leader"
        within_window += ticks <= 5
        c.propose(leader, b"b")
        assert all(c.applied_data(i)[-2:] == [b"a", b"b"] for i in (2, 3))
    assert within_window >= 28, within_window


def test_a_lost_connection_to_a_live_leader_disturbs_nobody():
    # Only member 3's link to the leader dropped; member 2 still hears the leader
    # and refuses 3's pre-vote (the leader's lease), so no term changes, and the
    # leader's next heartbeat makes it known to 3 again.
    c = Cluster(3, pre_vote=True, check_quorum=True, election_ticks=10)
    c.elect(1)
    term = c[1].term
    c[3].leader_unreachable(1, 1)
    assert c[3].leader_id == 0
    c.tick(3, 1)  # campaigns (a pre-vote) at once
    assert c[3].role == PRE_CANDIDATE
    c.deliver()
    assert c.events_of(2, "rejected")[-1]["reason"] == "leader_lease"
    c.tick_all(1)  # the leader's heartbeat
    assert c[1].role == LEADER and c[1].term == term
    assert c[3].role == FOLLOWER and c[3].leader_id == 1 and c[3].term == term


def test_leader_unreachable_changes_nothing_for_a_leader_or_a_member_without_one():
    c = Cluster(3, pre_vote=True, check_quorum=True, election_ticks=10)
    c.elect(1)
    c[1].leader_unreachable(1, 1)
    c.process(1)
    c.tick(1, 3)
    assert c[1].role == LEADER and not c.events_of(1, "leader_unreachable")
    core = new_core(1, pre_vote=True, election_ticks=10)  # knows no leader: its own timer stands
    core.leader_unreachable(1, 1)
    assert 10 <= _ticks_to_campaign(core) < 20


def test_a_restart_reapplies_entries_committed_but_not_applied():
    core = new_core(1, term=1, entries=ents(1, 1, 1), commit=3, applied=1)
    [rd] = drain(core)
    assert [e.index for e in rd.committed_entries] == [2, 3]


def test_corrupt_persisted_state_is_refused():
    with pytest.raises(ValueError):
        new_core(1, term=1, entries=(Entry(2, 1, b"x"),))
    with pytest.raises(ValueError):
        new_core(1, term=1, entries=ents(1), commit=5)


# ---------------------------------------------------------------------------
# The step contract: bad input is an event, never an exception
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, reason",
    [
        (msg(MSG_APP, 9, 2, 1), "wrong_recipient"),
        # Answers come only from members; a MsgApp from a non-member is accepted
        # (thesis §4.2.1, see test_core_membership.py).
        (msg(MSG_APP_RESP, 1, 7, 1), "unknown_sender"),
        (msg(MSG_APP, 1, 0, 1), "unknown_sender"),
        (msg(MSG_APP, 1, 1, 1), "unknown_sender"),
        (msg(99, 1, 2, 1), "unknown_type"),
        (msg(MSG_APP, 1, 2, 0), "missing_term"),
        (msg(MSG_APP, 1, 2, 1, index=0, entries=(Entry(2, 1, b"x"),)), "malformed_entries"),
        (msg(MSG_APP, 1, 2, 1, index=0, entries=(Entry(1, 5, b"x"),)), "malformed_entries"),
        (msg(MSG_SNAP, 1, 2, 1), "malformed_snapshot"),
        (msg(MSG_PROP, 1, 2, 0, entries=(Entry(0, 0, b""),)), "malformed_proposal"),
        (msg(MSG_PROP_RESP, 1, 2, 0, entries=(Entry(0, 0, b"x"),)), "malformed_proposal_response"),
        (msg(MSG_PROP_RESP, 1, 2, 0, reject=True), "malformed_proposal_response"),
        (msg(MSG_READ_INDEX, 1, 2, 0), "missing_context"),
        (msg(MSG_TRANSFER_LEADER, 1, 2, 1, index=8), "unknown_transfer_target"),
        (msg(MSG_APP, 1, 2, 1, index=-1), "negative_field"),
    ],
)
def test_malformed_messages_are_rejected_with_an_event(bad, reason):
    core = new_core(1)
    drain(core)
    core.step(bad)
    rds = drain(core)
    assert events_named(rds, "rejected")[0]["reason"] == reason
    assert core.last_index == 0 and core.term == 0


@pytest.mark.parametrize("kind", [MSG_VOTE_RESP, MSG_APP_RESP, MSG_HEARTBEAT_RESP])
def test_an_unexpected_message_for_the_role_is_rejected_with_an_event(kind):
    core = new_core(1, term=3)
    drain(core)
    core.step(msg(kind, 1, 2, 3))
    [event] = events_named(drain(core), "rejected")
    assert event["reason"] == "unexpected_for_follower"


def test_an_append_for_an_index_past_the_leaders_log_is_rejected():
    leader = make_leader(new_core(1, term=1))
    leader.step(msg(MSG_APP_RESP, 1, 2, leader.term, index=50))
    assert events_named(drain(leader), "rejected")[0]["reason"] == "ack_beyond_leader_log"
    assert leader.commit_index == 0


# ---------------------------------------------------------------------------
# The Ready contract
# ---------------------------------------------------------------------------


def test_no_new_ready_until_the_outstanding_one_is_advanced():
    core = new_core(1, voters=(1,))
    core.campaign()
    rd = core.ready()
    assert not core.has_ready()
    with pytest.raises(AssertionError):
        core.ready()
    core.advance(rd)
    assert core.has_ready()


def test_steps_between_ready_and_advance_are_kept_for_the_next_ready():
    core = new_core(2, term=1)
    drain(core)
    core.step(msg(MSG_APP, 2, 1, 1, index=0, log_term=0, entries=ents(1)))
    rd1 = core.ready()
    core.step(msg(MSG_APP, 2, 1, 1, index=1, log_term=1, entries=ents(1, start=2)))
    core.advance(rd1)
    rd2 = core.ready()
    assert [e.index for e in rd1.entries] == [1] and [e.index for e in rd2.entries] == [2]
    core.advance(rd2)


def test_entries_replaced_between_ready_and_advance_are_handed_out_again():
    core = new_core(2, term=1)
    core.step(msg(MSG_APP, 2, 1, 1, index=0, log_term=0, entries=ents(1, 1)))
    rd1 = core.ready()
    # A new leader overwrites index 2 before the actor finished persisting rd1.
    core.step(msg(MSG_APP, 2, 3, 2, index=1, log_term=1, entries=ents(2, start=2)))
    core.advance(rd1)
    rd2 = core.ready()
    assert rd2.entries == ents(2, start=2)  # index 1 is durable and unchanged
    core.advance(rd2)


def test_soft_state_is_reported_when_role_or_leader_changes():
    core = new_core(1, voters=(1,))
    drain(core)
    core.campaign()
    rd = core.ready()
    assert rd.soft_state is not None and (rd.soft_state.role, rd.soft_state.leader_id) == (LEADER, 1)
    core.advance(rd)
    rd = core.ready()
    assert rd.soft_state is None
    core.advance(rd)


def test_status_reports_progress_on_the_leader():
    c = Cluster(3)
    c.elect(1)
    s = c[1].status()
    assert s["role"] == LEADER and s["leader_id"] == 1
    assert set(s["progress"]) == {1, 2, 3}
    assert s["progress"][2]["match"] == c[1].last_index
    assert c[2].status()["progress"] == {}
