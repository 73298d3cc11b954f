"""The apply actor's background sync of the keyspace (actors/keyspace_sync.py),
on a real LMDB environment opened as the keyspace is (no sync on commit)."""

import threading

from actors.keyspace_sync import KeyspaceSyncer
from store.environment import open_kv
from tests.harness import wait_for


def commit(env, index: int) -> None:
    with env.begin(write=True) as txn:
        txn.put(b"applied", str(index).encode())


def test_a_commit_becomes_durable_within_the_period_and_at_close(tmp_path):
    env = open_kv(str(tmp_path), 1 << 24)
    syncer = KeyspaceSyncer(env, durable_index=0, period_s=0.05)
    try:
        commit(env, 1)
        syncer.committed(1)
        assert wait_for(lambda: syncer.durable == 1, "the periodic sync", 5)
        commit(env, 2)
        syncer.committed(2)
        assert syncer.close() == 2  # close syncs what is left, whatever the period
    finally:
        env.close()
    assert syncer.error is None


def test_with_period_zero_the_environment_syncs_each_commit_and_no_thread_runs(tmp_path):
    # member.keyspace_sync_ms: 0 opens the keyspace with LMDB's sync on commit
    env = open_kv(str(tmp_path), 1 << 24, sync_on_commit=True)
    threads = threading.active_count()
    syncer = KeyspaceSyncer(env, durable_index=0, period_s=0)
    try:
        assert threading.active_count() == threads
        commit(env, 1)
        syncer.committed(1)
        assert syncer.durable == 1  # at once: the commit itself synced
        assert syncer.close() == 1
    finally:
        env.close()


def test_many_entries_wake_the_thread_before_the_period(tmp_path):
    env = open_kv(str(tmp_path), 1 << 24)
    syncer = KeyspaceSyncer(env, durable_index=0, period_s=3600, entries=100)
    try:
        commit(env, 50)
        syncer.committed(50)
        commit(env, 150)
        syncer.committed(150)  # 150 past the durable 0: at least `entries`
        assert wait_for(lambda: syncer.durable == 150, "the sync a burst asks for", 5)
    finally:
        syncer.close()
        env.close()


def test_paused_holds_the_thread_off_while_the_environment_is_swapped(tmp_path):
    env = open_kv(str(tmp_path / "a"), 1 << 24)
    syncer = KeyspaceSyncer(env, durable_index=0, period_s=0.01)
    try:
        with syncer.paused():
            commit(env, 1)
            syncer.committed(1)
            synced = threading.Event()
            threading.Thread(target=lambda: (syncer.sync(), synced.set()), daemon=True).start()
            assert not synced.wait(0.2)  # a sync waits for the swap to finish
            env.close()
            env = open_kv(str(tmp_path / "b"), 1 << 24)
            syncer.replaced(env, durable_index=7)
        assert synced.wait(5)
        assert syncer.durable == 7 and syncer.error is None
    finally:
        syncer.close()
        env.close()


def test_a_failed_sync_is_handed_to_the_actor(tmp_path):
    env = open_kv(str(tmp_path), 1 << 24)
    syncer = KeyspaceSyncer(env, durable_index=0, period_s=0.01)
    env.close()  # the disk (here: the handle) is gone
    syncer.committed(1)
    assert wait_for(lambda: syncer.error is not None, "the failure", 5)
    assert syncer.durable == 0
