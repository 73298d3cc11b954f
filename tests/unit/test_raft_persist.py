"""Which Readies the raft actor syncs to its write-ahead log, and that a commit index
left behind on disk is recovered on restart (etcd's raft.MustSync rule)."""

import random

from actors.raft.actor import must_sync
from actors.raft.core import PersistedState, RaftConfig, RaftCore, Ready
from store.raftlog import RaftLogStore
from transport.raft_messages import (
    CONF_ADD_LEARNER,
    ENTRY_CONF_CHANGE,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    SnapshotMeta,
    encode_conf_change,
)


def ready(hard_state=None, entries=(), snapshot=None) -> Ready:
    return Ready(None, hard_state, tuple(entries), snapshot, (), (), (), ())


def test_a_commit_index_moving_alone_needs_no_sync():
    saved = HardState(term=2, vote=1, commit=5)
    latest = HardState(term=2, vote=1, commit=9)
    assert not must_sync(ready(latest), latest, saved)


def test_entries_snapshots_terms_and_votes_are_synced():
    saved = HardState(term=2, vote=1, commit=5)
    assert must_sync(ready(entries=[Entry(6, 2, b"x")]), saved, saved)
    assert must_sync(ready(snapshot=SnapshotMeta(10, 2, (1, 2, 3))), saved, saved)
    assert must_sync(ready(HardState(3, 0, 5)), HardState(3, 0, 5), saved)
    assert must_sync(ready(HardState(2, 3, 5)), HardState(2, 3, 5), saved)


def test_a_restart_recovers_a_commit_index_that_lagged_on_disk(tmp_path):
    store = RaftLogStore(str(tmp_path))
    entries = [Entry(i, 1, b"e%d" % i) for i in range(1, 6)]
    store.save(HardState(term=1, vote=1, commit=2), entries)  # commit 5 was never written
    store.close()
    hard_state, snapshot, loaded = RaftLogStore(str(tmp_path)).load()
    assert hard_state.commit == 2
    core = RaftCore(
        RaftConfig(id=1, voters=(1, 2, 3)),
        PersistedState(hard_state=hard_state, snapshot=snapshot, entries=loaded, applied=5),
        random.Random(1),
    )
    # apply only ever holds committed entries, so what it applied is committed
    assert core.commit_index == 5


def test_the_configuration_survives_a_restart_through_the_stored_log(tmp_path):
    """Conf-change entries keep their kind on disk, and a snapshot its learners, so a
    restarted core rebuilds the configuration (thesis §4.1)."""
    store = RaftLogStore(str(tmp_path))
    change = encode_conf_change(ConfChange(CONF_ADD_LEARNER, 4), ConfState((1, 2, 3), (4,)))
    entries = [Entry(1, 1, b""), Entry(2, 1, b"x"), Entry(3, 1, change, ENTRY_CONF_CHANGE)]
    store.save(HardState(term=1, vote=1, commit=3), entries)
    store.close()
    store = RaftLogStore(str(tmp_path))
    hard_state, snapshot, loaded = store.load()
    assert list(loaded) == entries
    core = RaftCore(
        RaftConfig(id=1, voters=(1, 2, 3)),
        PersistedState(hard_state=hard_state, snapshot=snapshot, entries=loaded, applied=3),
        random.Random(1),
    )
    assert core.learners == (4,)
    store.save_compaction(3, 1, (1, 2, 3), (4,))
    store.close()
    hard_state, snapshot, loaded = RaftLogStore(str(tmp_path)).load()
    assert snapshot == SnapshotMeta(3, 1, (1, 2, 3), (4,)) and loaded == ()
