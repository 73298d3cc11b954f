"""KeySpace: databases, meta, persistence, and readers beside the writer."""

from __future__ import annotations

import threading

import lmdb

from store.mvcc import KeySpace
from transport.messages import PutRequest, RangeRequest

from tests.store.conftest import HEADER, Harness, open_env


def test_fresh_meta(store):
    with store.env.begin() as txn:
        space = store.space
        assert (space.applied_index(txn), space.current_revision(txn), space.compact_revision(txn)) == (0, 1, 0)
        assert not space.compaction_pending(txn)


def test_applied_index_commits_with_the_batch(store):
    with store.batch() as writer:
        writer.put(PutRequest(b"a"))
        store.space.set_applied_index(writer._txn, 41)
    try:
        with store.env.begin(write=True) as txn:
            store.space.writer(txn, HEADER).put(PutRequest(b"b"))
            store.space.set_applied_index(txn, 42)
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    with store.env.begin() as txn:
        assert store.space.applied_index(txn) == 41
        assert store.space.current_revision(txn) == 2
    assert store.get(b"b") is None


def test_everything_survives_reopening(tmp_path):
    env = open_env(tmp_path / "kv")
    store = Harness(env)
    store.lease("lease_grant", 3, 10)
    store.put(b"a", b"1", lease=3)
    store.put(b"a", b"2")
    store.compact(2)
    env.close()
    env = open_env(tmp_path / "kv")
    store = Harness(env)
    assert store.revision() == 3
    assert store.get(b"a").version == 2
    assert store.get(b"a", revision=2).value == b"1"
    with store.reading() as reader:
        assert (reader.lease(3), reader.compact_revision) == ((10, 0), 2)
    env.close()


def test_uses_at_most_max_dbs(tmp_path):
    assert len(KeySpace.DATABASES) <= KeySpace.MAX_DBS
    env = lmdb.open(str(tmp_path / "small"), max_dbs=len(KeySpace.DATABASES), map_size=1 << 24)
    KeySpace(env)
    env.close()


def test_opening_beside_a_writing_thread_waits_without_deadlock(store):
    """A process whose other thread holds the write lock: KeySpace waits for it
    without holding the GIL (py-lmdb's own open_db would hold it: deadlock)."""
    holding, release = threading.Event(), threading.Event()

    def writer():
        with store.env.begin(write=True):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    holding.wait(10)
    opened = []
    opener = threading.Thread(target=lambda: opened.append(KeySpace(store.env)))
    opener.start()
    opener.join(0.3)  # this thread still runs: the opener waits without the GIL
    release.set()
    thread.join(10)
    opener.join(10)
    assert opened and opened[0].max_key_bytes == 511


def test_handles_outlive_the_opening_in_a_new_environment(tmp_path):
    """Handles opened by a second process (a fresh Environment) stay usable."""
    first = Harness(open_env(tmp_path / "kv"))
    first.put(b"a", b"1")
    first.env.close()
    env = open_env(tmp_path / "kv")
    space = KeySpace(env)
    with env.begin() as txn:
        assert space.reader(txn, HEADER).range(RangeRequest(b"a")).kvs[0].value == b"1"
    with env.begin(write=True) as txn:
        space.writer(txn, HEADER).put(PutRequest(b"b"))
    env.close()


def test_read_only_environment(tmp_path):
    first = Harness(open_env(tmp_path / "kv"))
    first.put(b"a", b"1")
    first.env.close()
    env = lmdb.open(str(tmp_path / "kv"), readonly=True, max_dbs=KeySpace.MAX_DBS)
    space = KeySpace(env)
    with env.begin() as txn:
        assert space.reader(txn, HEADER).range(RangeRequest(b"a")).count == 1
    env.close()


def test_one_writer_per_request_in_one_batch(store):
    with store.env.begin(write=True) as txn:
        for i in range(5):
            response, _ = store.space.writer(txn, HEADER).put(PutRequest(b"k", b"%d" % i))
            assert response.header.revision == i + 2
    assert store.get(b"k").version == 5
