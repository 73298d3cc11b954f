"""The Raft paper's rules (§5.1-§5.4), one test per rule, against RaftCore."""

from __future__ import annotations

from dataclasses import replace

import pytest

from actors.raft.core import CANDIDATE, FOLLOWER, LEADER
from tests.raft.harness import Cluster, drain, drain_messages, ents, events_named, msg, new_core
from transport.raft_messages import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_HEARTBEAT,
    MSG_VOTE,
    MSG_VOTE_RESP,
    Entry,
)


def make_leader(core):
    """Campaign (pre-vote off) and win with the other voters' votes."""
    core.campaign()
    drain(core)
    for v in core.voters:
        if core.role == LEADER:
            break
        if v != core.id:
            core.step(msg(MSG_VOTE_RESP, core.id, v, core.term))
    assert core.role == LEADER
    drain(core)
    return core


def make_candidate(core):
    core.campaign()
    drain(core)
    assert core.role == CANDIDATE
    return core


# ---------------------------------------------------------------------------
# §5.1 Raft basics: terms
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", [FOLLOWER, CANDIDATE, LEADER])
def test_5_1_a_message_with_a_higher_term_turns_any_role_into_a_follower(role):
    core = new_core(1, term=1)
    if role == CANDIDATE:
        make_candidate(core)
    elif role == LEADER:
        make_leader(core)
    old_term = core.term
    core.step(msg(MSG_APP, 1, 2, old_term + 1, index=0, log_term=0))
    assert core.role == FOLLOWER
    assert core.term == old_term + 1
    assert core.leader_id == 2  # a MsgApp comes from the leader of that term


def test_5_1_a_vote_request_with_a_higher_term_updates_term_without_a_leader():
    core = new_core(1, term=1)
    core.step(msg(MSG_VOTE, 1, 2, 5, index=0, log_term=0))
    assert (core.term, core.leader_id) == (5, 0)


def test_5_1_a_request_with_a_stale_term_is_rejected_and_answered_with_our_term():
    # The paper's AppendEntries and RequestVote replies carry currentTerm: even
    # without check-quorum or pre-vote (where etcd stays silent) the sender
    # learns the newer term, whatever its configuration says of us.
    core = new_core(1, term=5)
    drain(core)
    core.step(msg(MSG_APP, 1, 2, 3, index=0, log_term=0, entries=ents(3)))
    core.step(msg(MSG_VOTE, 1, 3, 4, index=9, log_term=4))
    rds = drain(core)
    assert core.term == 5 and core.last_index == 0 and core.status()["vote"] == 0
    assert [(m.type, m.to, m.term, m.reject) for rd in rds for m in rd.messages] == [
        (MSG_APP_RESP, 2, 5, False), (MSG_VOTE_RESP, 3, 5, True)]


def test_a_candidate_told_a_higher_term_by_a_vote_rejection_campaigns_above_it_and_can_win():
    # Seed 36748's shape: member 1 holds the only log that can win, in a
    # configuration {1, 2}; member 2, at a higher term, is never messaged by it
    # otherwise. Before the stale vote was answered, 1 stayed below 2's term.
    c = Cluster(2, election_ticks=10)
    c[2].step(msg(MSG_VOTE, 2, 3, 9, index=0, log_term=0))  # 2 moved on to term 9 elsewhere
    c.process(2)
    c.queue.clear()
    c[1].campaign()  # at term 1
    c.deliver()
    assert c[1].role == FOLLOWER and c[1].term == 9  # told by 2's rejection
    c[1].campaign()
    c.deliver()
    assert c[1].role == LEADER and c[1].term == 10


def test_5_1_stale_leader_learns_the_new_term_from_a_follower_and_steps_down():
    # With check-quorum the follower answers a stale MsgApp with its own term ...
    follower = new_core(2, term=5, check_quorum=True)
    drain(follower)
    follower.step(msg(MSG_APP, 2, 1, 3, index=0, log_term=0))
    [resp] = drain_messages(follower)
    assert (resp.type, resp.to, resp.term) == (MSG_APP_RESP, 1, 5)
    # ... and the stale leader steps down on seeing it.
    leader = make_leader(new_core(1, term=2))
    leader.step(resp)
    assert (leader.role, leader.term) == (FOLLOWER, 5)


def test_every_member_tells_a_stale_leader_its_term_even_without_check_quorum():
    # Without check-quorum or pre-vote etcd's members stay silent and count on
    # their own campaigns to raise the leader's term. A member that may not
    # campaign (not a voter in its own configuration: seed 23274), or whose
    # configuration leaves the leader out (seed 27713), never does: the leader,
    # needing its acknowledgement, waited forever. Both now answer.
    learner = new_core(3, voters=(1, 2), learners=(3,), term=5)
    drain(learner)
    learner.step(msg(MSG_APP, 3, 1, 3, index=0, log_term=0))
    [resp] = drain_messages(learner)
    assert (resp.type, resp.to, resp.term) == (MSG_APP_RESP, 1, 5)
    voter = new_core(2, voters=(2, 3), term=5)  # its configuration leaves the leader, 1, out
    drain(voter)
    voter.step(msg(MSG_HEARTBEAT, 2, 1, 3))
    [resp] = drain_messages(voter)
    assert (resp.type, resp.to, resp.term) == (MSG_APP_RESP, 1, 5)


def test_5_1_hard_state_travels_in_the_same_ready_as_the_vote_it_grants():
    core = new_core(1, term=1)
    drain(core)
    core.step(msg(MSG_VOTE, 1, 2, 2, index=0, log_term=0))
    [rd] = drain(core)
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (2, 2)
    assert [(m.type, m.reject) for m in rd.messages] == [(MSG_VOTE_RESP, False)]


# ---------------------------------------------------------------------------
# §5.2 Leader election
# ---------------------------------------------------------------------------


def test_5_2_a_follower_that_times_out_becomes_candidate():
    core = new_core(1, term=1, entries=ents(1, 1), commit=2)
    drain(core)
    for _ in range(2 * core_config_election(core)):
        core.tick()
    rds = drain(core)
    assert core.role == CANDIDATE
    assert core.term == 2
    assert rds[-1].hard_state.vote == 1  # votes for itself
    votes = [m for rd in rds for m in rd.messages]
    assert sorted(m.to for m in votes) == [2, 3]
    assert all((m.type, m.term, m.index, m.log_term) == (MSG_VOTE, 2, 2, 1) for m in votes)


def core_config_election(core) -> int:
    return core._cfg.election_ticks  # noqa: SLF001 (test introspection)


def test_5_2_election_timeouts_are_randomized_between_one_and_two_election_timeouts():
    seen = set()
    for seed in range(60):
        core = new_core(1, seed=seed, election_ticks=10)
        ticks = 0
        while core.role == FOLLOWER:
            core.tick()
            ticks += 1
            assert ticks < 20
        seen.add(ticks)
    assert min(seen) >= 10 and max(seen) < 20
    assert len(seen) > 5  # actually spread, so split votes resolve


def test_5_2_a_candidate_with_votes_from_a_majority_becomes_leader_and_appends_a_noop():
    core = make_candidate(new_core(1, voters=(1, 2, 3, 4, 5), term=1))
    core.step(msg(MSG_VOTE_RESP, 1, 2, 2))
    assert core.role == CANDIDATE  # 2 of 5 is not a majority
    core.step(msg(MSG_VOTE_RESP, 1, 3, 2))
    assert core.role == LEADER and core.leader_id == 1
    [rd] = drain(core)
    assert rd.entries == (Entry(1, 2, b""),)
    assert sorted(m.to for m in rd.messages if m.type == MSG_APP) == [2, 3, 4, 5]


def test_5_2_a_candidate_rejected_by_a_majority_returns_to_follower():
    core = make_candidate(new_core(1, term=1))
    core.step(msg(MSG_VOTE_RESP, 1, 2, 2, reject=True))
    core.step(msg(MSG_VOTE_RESP, 1, 3, 2, reject=True))
    assert (core.role, core.term) == (FOLLOWER, 2)


def test_5_2_each_server_votes_for_at_most_one_candidate_per_term():
    core = new_core(1, term=1)
    drain(core)
    core.step(msg(MSG_VOTE, 1, 2, 2, index=0, log_term=0))
    core.step(msg(MSG_VOTE, 1, 3, 2, index=0, log_term=0))
    core.step(msg(MSG_VOTE, 1, 2, 2, index=0, log_term=0))  # a retransmission
    replies = [(m.to, m.reject) for m in drain_messages(core)]
    assert replies == [(2, False), (3, True), (2, False)]


def test_5_2_the_vote_survives_a_restart():
    c = Cluster(3)
    c.step(msg(MSG_VOTE, 1, 2, 2, index=0, log_term=0))
    c.queue.clear()
    c.start(1)  # restart from disk
    c.step(msg(MSG_VOTE, 1, 3, 2, index=0, log_term=0))
    [reply] = [m for m in c.queue if m.sender == 1]
    assert reply.reject


def test_5_2_a_candidate_that_hears_from_the_leader_of_its_term_returns_to_follower():
    core = make_candidate(new_core(1, term=1))
    core.step(msg(MSG_HEARTBEAT, 1, 2, core.term))
    assert (core.role, core.leader_id, core.term) == (FOLLOWER, 2, 2)


def test_5_2_a_split_vote_times_out_and_starts_a_new_election_in_a_new_term():
    core = make_candidate(new_core(1, term=1))
    for _ in range(2 * core_config_election(core)):
        core.tick()
    assert core.role == CANDIDATE and core.term == 3


def test_5_2_a_leader_sends_heartbeats_that_keep_followers_from_campaigning():
    c = Cluster(3, election_ticks=10, heartbeat_ticks=2)
    c.elect(1)
    term = c[1].term
    c.sent.clear()
    c.tick_all(100)
    assert c.leader() == 1 and all(c[i].term == term for i in c.ids)
    heartbeats = [m for m in c.sent if m.type == MSG_HEARTBEAT]
    assert len(heartbeats) == 2 * 50  # to both followers, every 2 ticks


# ---------------------------------------------------------------------------
# §5.3 Log replication
# ---------------------------------------------------------------------------


def test_5_3_a_leader_replicates_an_entry_and_commits_it_once_a_majority_stores_it():
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    c.isolate(2)
    assert c.propose(1, b"x")
    assert c[1].commit_index == 1  # only the no-op; x sits on the leader alone
    c.heal()
    c.cut(1, 3)
    c.tick(1, 1)  # heartbeat -> node 2 asks for the missing entry
    c.deliver()
    assert c[1].commit_index == 2
    assert c.applied_data(1) == [b"x"]
    assert c.applied_data(2) == [b"x"]
    assert c.applied_data(3) == []
    c.heal()
    c.tick(1, 1)
    c.deliver()
    assert c.applied_data(3) == [b"x"]


def test_5_3_a_follower_persists_entries_in_the_ready_that_carries_its_acknowledgement():
    core = new_core(2, term=1)
    drain(core)
    core.step(msg(MSG_APP, 2, 1, 1, index=0, log_term=0, entries=ents(1, 1), commit=1))
    [rd] = drain(core)
    assert rd.entries == ents(1, 1)
    [resp] = rd.messages
    assert (resp.type, resp.index, resp.reject) == (MSG_APP_RESP, 2, False)
    assert rd.hard_state.commit == 1
    assert [e.index for e in rd.committed_entries] == [1]


def test_5_3_a_follower_commits_no_further_than_the_last_new_entry():
    # It may hold stale entries past what the leader sent; leaderCommit does not
    # vouch for those (§5.3 "min(leaderCommit, index of last new entry)").
    core = new_core(2, term=2, entries=ents(1, 1, 1))
    core.step(msg(MSG_APP, 2, 1, 2, index=0, log_term=0, entries=ents(1), commit=3))
    assert core.commit_index == 1


def test_5_3_a_follower_rejects_an_append_whose_previous_entry_does_not_match():
    core = new_core(2, term=3, entries=ents(1, 1, 2))
    drain(core)
    core.step(msg(MSG_APP, 2, 1, 3, index=3, log_term=3, entries=ents(3, start=4)))
    core.step(msg(MSG_APP, 2, 1, 3, index=6, log_term=3, entries=ents(3, start=7)))
    r1, r2 = drain_messages(core)
    assert core.last_index == 3
    # Hint: the last index whose term is <= the leader's term there, and that term.
    assert (r1.reject, r1.index, r1.reject_hint, r1.log_term) == (True, 3, 3, 2)
    # Beyond our log: point at our last entry.
    assert (r2.reject, r2.index, r2.reject_hint, r2.log_term) == (True, 6, 3, 2)


def test_5_3_conflicting_entries_are_truncated_and_replaced():
    core = new_core(2, term=3, entries=ents(1, 1, 2, 2))
    drain(core)
    core.step(msg(MSG_APP, 2, 1, 3, index=2, log_term=1, entries=ents(3, start=3)))
    [rd] = drain(core)
    assert [core.term_at(i) for i in range(1, core.last_index + 1)] == [1, 1, 3]
    # The Ready names the first replaced index; the actor truncates from there.
    assert rd.entries == ents(3, start=3)
    assert rd.messages[0].index == 3 and not rd.messages[0].reject


def test_5_3_a_repeated_append_is_idempotent():
    core = new_core(2, term=1)
    m = msg(MSG_APP, 2, 1, 1, index=0, log_term=0, entries=ents(1, 1))
    core.step(m)
    drain(core)
    core.step(m)
    [rd] = drain(core)
    assert rd.entries == () and core.last_index == 2
    assert rd.messages[0].index == 2


def test_5_3_an_old_append_cannot_truncate_entries_that_follow_it():
    # A delayed MsgApp carrying a prefix must not erase the newer suffix.
    core = new_core(2, term=1)
    core.step(msg(MSG_APP, 2, 1, 1, index=0, log_term=0, entries=ents(1, 1, 1)))
    core.step(msg(MSG_APP, 2, 1, 1, index=0, log_term=0, entries=ents(1)))
    assert core.last_index == 3


FIGURE_7_LEADER = (1, 1, 1, 4, 4, 5, 5, 6, 6, 6)
FIGURE_7_FOLLOWERS = {
    "a": (1, 1, 1, 4, 4, 5, 5, 6, 6),
    "b": (1, 1, 1, 4),
    "c": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6),
    "d": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),
    "e": (1, 1, 1, 4, 4, 4, 4),
    "f": (1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3),
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_5_3_the_leader_forces_every_figure_7_follower_log_to_match_its_own(case):
    c = Cluster(3)
    c.load(1, FIGURE_7_LEADER, term=7)
    c.load(2, FIGURE_7_FOLLOWERS[case], term=7)
    c.load(3, FIGURE_7_LEADER, term=7)  # votes for 1 (follower d would not)
    c.elect(1)
    c.deliver()
    assert c[1].term == 8
    assert c.log_terms(2) == list(FIGURE_7_LEADER) + [8]
    assert c.log_terms(2) == c.log_terms(1)
    assert c[2].commit_index == c[1].commit_index == 11


def test_5_3_fast_backtracking_skips_a_whole_term_per_rejection():
    c = Cluster(3)
    c.load(1, FIGURE_7_LEADER, term=7)
    c.load(2, FIGURE_7_FOLLOWERS["f"], term=7)
    c.load(3, FIGURE_7_LEADER, term=7)
    c.elect(1)
    rejections = [m for m in c.sent if m.type == MSG_APP_RESP and m.sender == 2 and m.reject]
    # One entry per round trip would take 8 rejections (index 10 down to 3).
    assert 1 <= len(rejections) <= 3
    assert c.log_terms(2) == c.log_terms(1)


# ---------------------------------------------------------------------------
# §5.4 Safety
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cand_last_index, cand_last_term, granted",
    [
        (10, 1, False),  # §5.4.1: lower last term loses, however long
        (2, 2, False),  # same last term, shorter log
        (3, 2, True),  # identical
        (4, 2, True),  # same term, longer
        (1, 3, True),  # higher last term wins, however short
    ],
)
def test_5_4_1_a_vote_is_rejected_for_a_less_up_to_date_log(cand_last_index, cand_last_term, granted):
    core = new_core(1, term=2, entries=ents(1, 1, 2))
    drain(core)
    core.step(msg(MSG_VOTE, 1, 2, 3, index=cand_last_index, log_term=cand_last_term))
    [reply] = drain_messages(core)
    assert reply.reject is not granted


def test_5_4_1_a_node_missing_a_committed_entry_cannot_become_leader():
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"committed")
    assert c[1].commit_index == 2
    c.heal()
    c.dropped_types.add(MSG_APP)  # keep node 3 behind
    c.dropped_types.add(MSG_HEARTBEAT)
    c[3].campaign()
    c.deliver()
    assert c[3].role != LEADER
    assert c.leader() != 3


def test_5_4_2_a_leader_does_not_commit_previous_term_entries_by_counting_replicas():
    # Figure 8: entry 2 (term 2) on a majority is not safe to commit in term 3,
    # because a node holding a term-3 entry at index 2 could still be elected.
    leader = make_leader(new_core(1, term=2, entries=ents(1, 2), commit=1))
    assert leader.term == 3 and leader.last_index == 3  # the no-op is entry 3
    leader.step(msg(MSG_APP_RESP, 1, 2, 3, index=2))
    assert leader.commit_index == 1  # a majority holds entry 2, but it is from term 2
    leader.step(msg(MSG_APP_RESP, 1, 2, 3, index=3))
    # Committing the current-term no-op commits entry 2 indirectly (Log Matching).
    assert leader.commit_index == 3


def test_5_4_2_figure_8_an_entry_replicated_but_not_committed_may_be_overwritten():
    c = Cluster(5, max_entries_per_message=1)
    for i in c.ids:
        c.load(i, (1,), term=1, commit=1)
    # (a) S1 leads term 2; its index 2 reaches S2 only.
    c[1].campaign()
    c.deliver(drop=lambda m: m.type == MSG_APP and m.to in (3, 4, 5))
    assert (c[1].role, c[1].term) == (LEADER, 2)
    assert c.log_terms(2) == [1, 2] and c.log_terms(3) == [1]
    # (b) S1 is cut off; S5 leads term 3 (votes of S3, S4) and writes index 2 alone.
    c.isolate(1)
    c[5].campaign()
    c.deliver(drop=lambda m: m.type == MSG_APP)
    assert (c[5].role, c[5].term) == (LEADER, 3)
    assert c.log_terms(5) == [1, 3]
    # (c) S5 is cut off; S1 returns, leads term 4 and gets index 2 onto S3 and S4,
    # but its term-4 no-op (index 3) reaches nobody.
    c.heal()
    c.isolate(5)
    c.start(1)  # S1 crashed meanwhile; it restarts as a follower of term 2
    c[1].campaign()  # term 3: loses, everyone voted for S5
    c.deliver(drop=lambda m: m.type == MSG_APP)
    c[1].campaign()  # term 4
    c.deliver(rewrite=lambda m: replace(m, entries=tuple(e for e in m.entries if e.term != 4)))
    assert (c[1].role, c[1].term) == (LEADER, 4)
    assert c.log_terms(3) == [1, 2] and c.log_terms(4) == [1, 2]
    # A majority (S1-S4) stores entry 2, but it is from term 2: not committed.
    assert c[1].commit_index == 1
    # (d) S1 fails; S5 wins term 5 with S2-S4 (its last term 3 beats their 2) and
    # overwrites index 2 everywhere: this is why counting was not allowed.
    c.heal()
    c.isolate(1)
    c.start(5)  # S5 crashed meanwhile too
    c[5].campaign()  # term 4: loses, everyone voted for S1
    c.deliver()
    c[5].campaign()  # term 5
    c.deliver()
    assert c[5].role == LEADER
    for i in (2, 3, 4, 5):
        assert c.log_terms(i)[:2] == [1, 3]
    assert all(e.term != 2 for i in c.ids for e in c.applied[i])
