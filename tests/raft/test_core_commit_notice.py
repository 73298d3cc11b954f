"""Deferred commit notices (RaftConfig.defer_commit_notice): when an entry
commits, the leader tells at once only the followers that wait on it; the
others learn the commit index from the next append or heartbeat, or from
send_commit(), which the raft actor calls commit_notice_ms later."""

from __future__ import annotations

from transport.raft_messages import CONF_ADD_LEARNER, ConfChange
from tests.raft.harness import Cluster


def deferring_cluster(**config) -> Cluster:
    """Three voters, 1 leading, every commit so far known to every follower."""
    c = Cluster(3, defer_commit_notice=True, **config)
    c.elect(1)
    c[1].send_commit()  # the election's no-op
    c.deliver()
    assert not c[1].commit_unsent()
    return c


def test_a_commit_nobody_waits_on_reaches_the_followers_only_when_the_notice_is_due():
    c = deferring_cluster()
    followers_commit = c[2].commit_index
    c.propose(1, b"x")
    index = c[1].commit_index
    assert c[1].last_index == index  # committed on the leader, with a follower's ack
    for follower in (2, 3):
        assert c[follower].last_index == index  # they hold it
        assert c[follower].commit_index == followers_commit  # but were not told it committed
        assert b"x" not in c.applied_data(follower)
    assert c[1].commit_unsent()
    c[1].send_commit()
    c.deliver()
    for follower in (2, 3):
        assert c[follower].commit_index == index
        assert c.applied_data(follower)[-1] == b"x"
    assert not c[1].commit_unsent()


def test_the_next_append_carries_a_deferred_commit():
    c = deferring_cluster()
    c.propose(1, b"x")
    x_index = c[1].commit_index
    c.propose(1, b"y")
    for follower in (2, 3):
        # y's append told them x committed; y's own commit waits for the next notice
        assert c[follower].commit_index == x_index
        assert c.applied_data(follower)[-1] == b"x"
    assert c[1].commit_index == x_index + 1


def test_a_follower_whose_forwarded_proposal_commits_is_told_at_once():
    c = deferring_cluster()
    c.propose(2, b"from-2")  # forwarded to the leader: follower 2's client waits for it
    index = c[1].commit_index
    assert c.applied_data(1)[-1] == b"from-2"
    assert c[2].commit_index == index and c.applied_data(2)[-1] == b"from-2"
    assert c[3].commit_index < index  # nobody waits on it there
    assert c[1].commit_unsent()


def test_a_follower_can_serve_its_read_index_once_answered():
    c = deferring_cluster()
    c.cut(1, 2)  # x commits with 3's ack alone; 2 does not even hold it
    c.propose(1, b"x")
    index = c[1].commit_index
    assert c[2].last_index < index
    c.heal()
    assert c[2].read_index(b"via-2")
    c.deliver()
    # the answer came with (after) what 2 needs to apply through its index
    assert [state.index for state in c.read_states[2]] == [index]
    assert c[2].commit_index >= index and c.applied_data(2)[-1] == b"x"


def test_a_committed_configuration_change_is_told_to_every_follower_at_once():
    c = Cluster(3, spare=1, defer_commit_notice=True)
    c.elect(1)
    c[1].send_commit()
    c.deliver()
    assert c[1].propose_conf_change(ConfChange(CONF_ADD_LEARNER, 4, b"member-4"))
    c.deliver()
    index = c[1].commit_index
    assert 4 in c[1].conf_state.learners
    for node in (2, 3, 4):
        assert c[node].commit_index == index, node


def test_a_heartbeat_carries_a_deferred_commit():
    c = deferring_cluster()
    c.propose(1, b"x")
    index = c[1].commit_index
    c.tick(1)  # heartbeat_ticks=1
    c.deliver()
    for follower in (2, 3):
        assert c[follower].commit_index == index
    assert not c[1].commit_unsent()


def test_no_notice_is_due_for_a_follower_that_cannot_be_sent_to():
    c = deferring_cluster(max_inflight_messages=1)
    c.isolate(3)
    c.propose(1, b"x")  # 3's window fills with x's append, which it never answers
    assert c[1].commit_index == c[1].last_index
    c[1].send_commit()
    c.deliver()
    # 2 knows; 3 is paused (window full), so no notice is due for it: the
    # actor's timer does not fire again and again for an unreachable member
    assert c[2].commit_index == c[1].commit_index
    assert not c[1].commit_unsent()


def test_without_deferral_every_follower_is_told_at_once():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"x")
    for follower in (2, 3):
        assert c[follower].commit_index == c[1].commit_index
        assert c.applied_data(follower)[-1] == b"x"
    assert not c[1].commit_unsent()
