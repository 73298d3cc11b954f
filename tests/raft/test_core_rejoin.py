"""A follower that lost its disk (wiped data dir) is repaired by the leader.

Outside the Raft paper's model (stable storage is assumed), so the rule is ours:
the follower tells the leader where its log really ends, and the leader lowers
that peer's match and probes it, which ends in a snapshot when the leader has
compacted. The leader's commit index never moves back.
"""

from tests.raft.harness import Cluster, Disk

HEARTBEAT_TICKS = 1  # RaftConfig default


def test_a_wiped_follower_is_caught_up_and_commit_never_moves_back():
    cluster = Cluster(3)
    cluster[1].campaign()
    cluster.deliver()
    assert cluster.leader() == 1
    for i in range(5):
        cluster[1].propose([b"x%d" % i])
        cluster.deliver()
    commit = cluster[1].commit_index
    assert cluster[3].last_index == cluster[1].last_index
    # node 3 loses everything and restarts empty
    cluster.disks[3] = Disk()
    cluster.applied[3] = []
    cluster.start(3)
    assert cluster[3].last_index == 0
    for _ in range(HEARTBEAT_TICKS):  # one heartbeat round
        cluster[1].tick()
    cluster.process_all()
    cluster.deliver()
    assert cluster[1].commit_index == commit
    assert cluster[3].last_index == cluster[1].last_index
    assert [e.data for e in cluster.applied[3]] == [e.data for e in cluster.applied[1]]
    assert any(name == "follower_log_lost" for name, *_ in cluster.events[1])


def test_a_wiped_follower_behind_a_compacted_leader_gets_a_snapshot():
    cluster = Cluster(3)
    cluster[1].campaign()
    cluster.deliver()
    for i in range(8):
        cluster[1].propose([b"y%d" % i])
        cluster.deliver()
    cluster[1].compact(cluster[1].applied_index)
    cluster.disks[3] = Disk()
    cluster.applied[3] = []
    cluster.start(3)
    for _ in range(HEARTBEAT_TICKS):  # one heartbeat round
        cluster[1].tick()
    cluster.process_all()
    cluster.deliver()
    assert cluster[3].first_index == cluster[1].first_index
    assert cluster[3].commit_index == cluster[1].commit_index
