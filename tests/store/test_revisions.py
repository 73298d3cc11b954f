"""Revision rules (etcd api_guarantees: revisions; kvstore_txn.go)."""

from __future__ import annotations

from transport.messages import (
    COMPARE_EQUAL,
    EVENT_DELETE,
    EVENT_PUT,
    TARGET_VERSION,
    Compare,
    DeleteRangeRequest,
    KeyValue,
    PutRequest,
    RangeRequest,
    TxnRequest,
)

from tests.store.conftest import header


def test_empty_store_is_at_revision_1(store):
    assert store.revision() == 1
    assert store.range(b"a").header == header(1)  # an empty etcd reports header revision 1


def test_first_write_gets_revision_2(store):
    response, events = store.put(b"a", b"1")
    assert response.header == header(2)
    assert events[0].kv.mod_revision == 2
    assert store.revision() == 2


def test_each_changing_request_bumps_once(store):
    for expected in range(2, 6):
        response, _ = store.put(b"k%d" % expected)
        assert response.header.revision == expected
    response, _ = store.delete(b"k", b"\0")
    assert response.deleted == 4
    assert response.header.revision == 6  # four deletes, one revision


def test_txn_with_several_writes_is_one_revision_with_sub_revisions(store):
    store.put(b"z")
    response, events = store.execute(TxnRequest(success=(PutRequest(b"b"), PutRequest(b"a"), DeleteRangeRequest(b"z"))))
    assert response.header.revision == 3
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        (EVENT_PUT, b"b", 3),
        (EVENT_PUT, b"a", 3),
        (EVENT_DELETE, b"z", 3),
    ]
    with store.reading() as reader:
        replay, _ = reader.events_since(3, b"\0", b"\0", 100, False)
    assert [e.kv.key for e in replay] == [b"b", b"a", b"z"]  # sub revision (execution) order


def test_read_only_txn_does_not_bump(store):
    store.put(b"a")
    txn = TxnRequest(compare=(Compare(COMPARE_EQUAL, TARGET_VERSION, b"a", 1),), success=(RangeRequest(b"a"),))
    response, events = store.execute(txn)
    assert response.succeeded and events == []
    assert response.header.revision == 2
    assert store.revision() == 2


def test_delete_of_nothing_does_not_bump(store):
    store.put(b"a")
    response, events = store.delete(b"b")
    assert (response.deleted, response.header.revision, events) == (0, 2, [])
    assert store.revision() == 2


def test_txn_whose_deletes_match_nothing_does_not_bump(store):
    response, events = store.execute(TxnRequest(success=(DeleteRangeRequest(b"x"),)))
    assert response.header.revision == 1 and events == []
    assert response.responses[0].header.revision == 1


def test_key_versions_and_revisions(store):
    store.put(b"a", b"1")  # 2
    store.put(b"b", b"x")  # 3
    store.put(b"a", b"2")  # 4
    assert store.get(b"a") == KeyValue(b"a", 2, 4, 2, b"2")


def test_delete_writes_a_tombstone_and_recreate_starts_over(store):
    store.put(b"a", b"1")  # 2
    store.put(b"a", b"2")  # 3
    _, events = store.delete(b"a")  # 4
    assert events[0].kv == KeyValue(b"a", 0, 4, 0, b"", 0)
    assert store.get(b"a") is None
    assert store.get(b"a", revision=3).version == 2
    store.put(b"a", b"3")  # 5
    assert store.get(b"a") == KeyValue(b"a", 5, 5, 1, b"3")


def test_every_response_header_carries_the_revision_after(store):
    put, _ = store.put(b"a")
    delete, _ = store.delete(b"a")
    assert (put.header.revision, delete.header.revision) == (2, 3)
    assert store.range(b"a").header.revision == 3
