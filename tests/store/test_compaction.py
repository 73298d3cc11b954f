"""Compaction (etcd kvstore.Compact, keyIndex.compact/keep)."""

from __future__ import annotations

import pytest

from transport.errors import CompactedError, FutureRevisionError
from transport.messages import CompactionRequest, KeyValue, PutRequest

from tests.store.conftest import Harness, header, open_env


@pytest.fixture
def history(store):
    store.put(b"a", b"1")  # 2
    store.put(b"a", b"2")  # 3
    store.put(b"b", b"1")  # 4
    store.delete(b"b")  # 5
    store.put(b"c", b"1")  # 6
    store.put(b"a", b"3")  # 7
    return store


def test_compact_errors(history):
    with pytest.raises(FutureRevisionError):
        history.compact(8)
    assert history.compact(5).header == header(7)  # no new revision
    with pytest.raises(CompactedError) as raised:
        history.compact(5)
    assert raised.value.compact_revision == 5
    with pytest.raises(CompactedError):
        history.compact(4)
    assert history.revision() == 7


def test_reads_after_compaction(history):
    history.compact(6)
    with pytest.raises(CompactedError):
        history.range(b"a", revision=5)
    # the latest version of every key at the compact revision survives
    assert history.range(b"\0", b"\0", revision=6).kvs == (KeyValue(b"a", 2, 3, 2, b"2"), KeyValue(b"c", 6, 6, 1, b"1"))
    assert history.get(b"a", revision=7).value == b"3"
    with history.env.begin() as txn:
        assert history.space.compact_revision(txn) == 6


def test_physical_compaction_removes_superseded_versions_and_old_tombstones(history):
    assert history.entries("revs_db") == 6
    history.compact(6)
    # kept: a@3 (latest a at 6), c@6, a@7; dropped: a@2, b@4, b's tombstone@5
    assert history.entries("revs_db") == 3
    assert history.entries("index_db") == 3  # a@3, a@7, c@6: b is gone entirely
    with history.env.begin() as txn:
        assert not history.space.compaction_pending(txn)


def test_tombstone_at_the_compact_revision_is_kept_until_the_next(history):
    history.compact(5)
    with history.reading() as reader:
        events, _ = reader.events_since(5, b"b", b"", 10, True)
    assert [(e.type, e.kv.key) for e in events] == [(1, b"b")]
    assert events[0].prev_kv is None  # its previous version is below the compact revision
    assert history.get(b"b", revision=5) is None
    assert history.entries("revs_db") == 4  # a@3, b's tombstone@5, c@6, a@7
    history.compact(6)
    with history.reading() as reader:
        assert reader.events_since(6, b"b", b"", 10, True) == ([], 8)
    assert history.entries("revs_db") == 3  # the next compaction drops it
    assert history.entries("index_db") == 3


def test_stepped_compaction(store):
    for i in range(20):
        store.put(b"k%d" % (i % 4), b"v%d" % i)  # revisions 2..21
    store.compact(15, max_records=5)
    with store.env.begin() as txn:
        assert store.space.compaction_pending(txn)
    assert store.entries("revs_db") < 20
    steps = 0
    while True:
        # reads are exact at every step
        for revision in (15, 18, 21):
            assert len(store.range(b"\0", b"\0", revision=revision).kvs) == 4
        assert store.get(b"k1", revision=15).value == b"v13"
        with store.env.begin(write=True) as txn:
            done = store.space.writer(txn, header(0)).compact_step(3)
        steps += 1
        if done:
            break
    assert steps > 2
    with store.env.begin() as txn:
        assert not store.space.compaction_pending(txn)
    assert store.entries("revs_db") == 4 + 6  # latest of each key at 15, plus revisions 16..21


def test_new_compaction_restarts_an_unfinished_one(store):
    for i in range(12):
        store.put(b"k", b"%d" % i)  # 2..13
    store.compact(5, max_records=1)
    store.compact(10, max_records=1)
    with store.env.begin(write=True) as txn:
        while not store.space.writer(txn, header(0)).compact_step(2):
            pass
    assert store.entries("revs_db") == 4  # k@10 .. k@13
    assert store.get(b"k", revision=10).value == b"8"


def test_compaction_physical_flag_is_accepted(store):
    store.put(b"a")
    store.put(b"a")
    response, events = store.execute(CompactionRequest(3, physical=True))
    assert response.header.revision == 3 and events == []
    assert store.entries("revs_db") == 1


def test_physical_compaction_frees_pages_for_reuse(tmp_path):
    """Without compaction the file keeps growing with every version; with it,
    the pages of removed versions are reused and the high-water mark settles."""

    def grow(compacting: bool) -> list[int]:
        env = open_env(tmp_path / ("c" if compacting else "n"))
        harness = Harness(env)
        marks = []
        value = b"x" * 1500  # big enough that each version takes real page space
        for round_ in range(8):
            with harness.batch() as writer:
                for i in range(400):
                    writer.put(_put(b"key%03d" % (i % 100), value))
            if compacting:
                harness.compact(harness.revision())
            marks.append(env.info()["last_pgno"])
        env.close()
        return marks

    plain, compacted = grow(False), grow(True)
    assert plain[-1] > 3 * plain[0]  # grows with every round
    assert compacted[-1] <= compacted[2] * 1.2  # settles
    assert compacted[-1] * 3 < plain[-1]


def _put(key, value):
    return PutRequest(key, value)


def test_a_compaction_walks_only_the_history_since_the_last_one(store):
    with store.batch() as writer:
        for i in range(500):
            writer.put(_put(b"k%03d" % i, b"v"))
    store.compact(store.revision())
    for i in range(3):
        store.put(b"k%03d" % i, b"w")
    store.compact(store.revision(), max_records=5)  # 1 record at the last compact revision + 3 new
    with store.env.begin() as txn:
        assert not store.space.compaction_pending(txn)
    assert store.entries("revs_db") == 500
