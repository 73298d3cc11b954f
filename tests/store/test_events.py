"""History replay for watches (Reader.events_since) and the events writes return."""

from __future__ import annotations

import pytest

from transport.errors import CompactedError
from transport.messages import EVENT_DELETE, EVENT_PUT, DeleteRangeRequest, KeyValue, PutRequest, TxnRequest


@pytest.fixture
def log(store):
    store.put(b"a", b"1")  # 2
    store.put(b"b", b"1")  # 3
    store.execute(TxnRequest(success=(PutRequest(b"c", b"1"), PutRequest(b"a", b"2"))))  # 4
    store.delete(b"a", b"c")  # 5: a, b
    store.put(b"a", b"3")  # 6
    return store


def replay(store, start, key=b"\0", range_end=b"\0", max_events=100, prev_kv=False, max_records=0):
    with store.reading() as reader:
        return reader.events_since(start, key, range_end, max_events, prev_kv, max_records)


def summary(events):
    return [(e.type, e.kv.key, e.kv.mod_revision) for e in events]


def test_replay_everything_in_revision_then_sub_revision_order(log):
    events, next_revision = replay(log, 1)
    assert summary(events) == [
        (EVENT_PUT, b"a", 2),
        (EVENT_PUT, b"b", 3),
        (EVENT_PUT, b"c", 4),
        (EVENT_PUT, b"a", 4),
        (EVENT_DELETE, b"a", 5),
        (EVENT_DELETE, b"b", 5),
        (EVENT_PUT, b"a", 6),
    ]
    assert next_revision == 7


def test_replay_matches_the_events_writes_returned(store):
    returned = []
    for request in (
        PutRequest(b"x", b"1"),
        TxnRequest(success=(PutRequest(b"y"), DeleteRangeRequest(b"x"))),
        PutRequest(b"x", b"2"),
    ):
        returned.extend(store.execute(request)[1])
    assert replay(store, 1, prev_kv=True)[0] == returned


def test_replay_from_a_revision_and_a_key_range(log):
    assert summary(replay(log, 4, b"a", b"")[0]) == [(EVENT_PUT, b"a", 4), (EVENT_DELETE, b"a", 5), (EVENT_PUT, b"a", 6)]
    assert summary(replay(log, 2, b"b", b"d")[0]) == [(EVENT_PUT, b"b", 3), (EVENT_PUT, b"c", 4), (EVENT_DELETE, b"b", 5)]
    assert replay(log, 7) == ([], 7)
    assert replay(log, 9) == ([], 9)


def test_prev_kv_and_delete_events(log):
    events, _ = replay(log, 5, prev_kv=True)
    delete_a, delete_b, put_a = events
    assert delete_a.kv == KeyValue(b"a", 0, 5, 0, b"", 0)
    assert delete_a.prev_kv == KeyValue(b"a", 2, 4, 2, b"2")
    assert put_a.prev_kv is None  # recreated after a delete
    assert all(e.prev_kv is None for e in replay(log, 1)[0])  # not asked


def test_whole_revisions_only(log):
    events, next_revision = replay(log, 1, max_events=3)
    assert summary(events) == [(EVENT_PUT, b"a", 2), (EVENT_PUT, b"b", 3)]  # revision 4 would pass 3
    assert next_revision == 4
    events, next_revision = replay(log, 4, max_events=1)  # a revision bigger than the limit comes whole
    assert (len(events), next_revision) == (2, 5)


def test_record_budget_bounds_the_scan(log):
    events, next_revision = replay(log, 1, key=b"c", range_end=b"", max_records=2)
    assert (events, next_revision) == ([], 4)
    events, next_revision = replay(log, next_revision, key=b"c", range_end=b"", max_records=2)
    assert summary(events) == [(EVENT_PUT, b"c", 4)]


def test_compacted_start(log):
    log.compact(4)
    with pytest.raises(CompactedError) as raised:
        replay(log, 3)
    assert raised.value.compact_revision == 4
    # etcd's watch serves a start revision equal to the compact revision (minRev < compactRev fails)
    events, _ = replay(log, 4, prev_kv=True)
    assert summary(events)[:2] == [(EVENT_PUT, b"c", 4), (EVENT_PUT, b"a", 4)]
    assert events[1].prev_kv is None  # a@2 is compacted away: etcd omits it too
    assert events[2].prev_kv.value == b"2"
