"""Put and DeleteRange rules (etcd applierV3backend.Put/DeleteRange, v3rpc checks)."""

from __future__ import annotations

import pytest

from transport.errors import (
    EmptyKeyError,
    KeyNotFoundError,
    KeyTooLongError,
    LeaseNotFoundError,
    LeaseProvidedError,
    ValueProvidedError,
)
from transport.messages import EVENT_DELETE, KeyValue, PutRequest


def test_put_prev_kv(store):
    first, _ = store.put(b"a", b"1", prev_kv=True)
    assert first.prev_kv is None
    second, events = store.put(b"a", b"2", prev_kv=True)
    assert second.prev_kv == KeyValue(b"a", 2, 2, 1, b"1")
    without, _ = store.put(b"a", b"3")
    assert without.prev_kv is None


def test_put_event_always_carries_prev_kv(store):
    store.put(b"a", b"1")
    _, events = store.put(b"a", b"2")  # prev_kv not asked: the event still has it
    assert events[0].prev_kv == KeyValue(b"a", 2, 2, 1, b"1")


def test_ignore_value_keeps_the_current_value(store):
    store.put(b"a", b"keep")
    store.lease("lease_grant", 5, 60)
    store.put(b"a", ignore_value=True, lease=5)
    assert store.get(b"a") == KeyValue(b"a", 2, 3, 2, b"keep", 5)


def test_ignore_value_with_a_value_is_rejected(store):
    store.put(b"a", b"1")
    with pytest.raises(ValueProvidedError):
        store.put(b"a", b"2", ignore_value=True)


def test_ignore_value_on_missing_key(store):
    with pytest.raises(KeyNotFoundError):
        store.put(b"a", ignore_value=True)


def test_ignore_lease_keeps_the_current_lease(store):
    store.lease("lease_grant", 5, 60)
    store.put(b"a", b"1", lease=5)
    store.put(b"a", b"2", ignore_lease=True)
    assert store.get(b"a").lease == 5
    with store.reading() as reader:
        assert reader.lease_keys(5) == [b"a"]


def test_ignore_lease_with_a_lease_is_rejected(store):
    store.lease("lease_grant", 5, 60)
    store.put(b"a", b"1")
    with pytest.raises(LeaseProvidedError):
        store.put(b"a", b"2", ignore_lease=True, lease=5)


def test_ignore_lease_on_missing_key(store):
    with pytest.raises(KeyNotFoundError):
        store.put(b"a", ignore_lease=True)


def test_lease_not_found_is_checked_before_key_not_found(store):
    with pytest.raises(LeaseNotFoundError):
        store.put(b"a", lease=99, ignore_value=True)


def test_put_with_unknown_lease(store):
    with pytest.raises(LeaseNotFoundError):
        store.put(b"a", b"1", lease=42)
    assert store.revision() == 1


def test_put_with_lease_zero_detaches(store):
    store.lease("lease_grant", 5, 60)
    store.put(b"a", b"1", lease=5)
    store.put(b"a", b"2")
    assert store.get(b"a").lease == 0
    with store.reading() as reader:
        assert reader.lease_keys(5) == []


def test_put_moves_key_between_leases(store):
    store.lease("lease_grant", 5, 60)
    store.lease("lease_grant", 6, 60)
    store.put(b"a", b"1", lease=5)
    store.put(b"a", b"2", lease=6)
    with store.reading() as reader:
        assert (reader.lease_keys(5), reader.lease_keys(6)) == ([], [b"a"])


def test_empty_key(store):
    with pytest.raises(EmptyKeyError):
        store.put(b"", b"1")
    with pytest.raises(EmptyKeyError):
        store.delete(b"")


def test_key_length_limit(store):
    limit = store.space.max_key_bytes
    assert limit == 511
    store.lease("lease_grant", 5, 60)
    longest = b"k" * limit
    store.put(longest, b"v", lease=5)  # the limit itself is fine, lease index included
    assert store.get(longest).value == b"v"
    with pytest.raises(KeyTooLongError):
        store.put(longest + b"k", b"v")
    assert store.delete(longest)[0].deleted == 1


def test_check_order_matches_etcd(store):
    with pytest.raises(EmptyKeyError):
        store.execute(PutRequest(b"", b"x", ignore_value=True))
    with pytest.raises(ValueProvidedError):
        store.execute(PutRequest(b"a", b"x", ignore_value=True, ignore_lease=True, lease=3))


def test_delete_range_counts_and_prev_kvs(store):
    for key in (b"a", b"b", b"c", b"d"):
        store.put(key, key.upper())
    response, events = store.delete(b"b", b"d", prev_kv=True)
    assert response.deleted == 2
    assert [kv.value for kv in response.prev_kvs] == [b"B", b"C"]
    assert [(e.type, e.kv, e.prev_kv.value) for e in events] == [
        (EVENT_DELETE, KeyValue(b"b", 0, 6, 0, b"", 0), b"B"),
        (EVENT_DELETE, KeyValue(b"c", 0, 6, 0, b"", 0), b"C"),
    ]
    response, _ = store.delete(b"a", b"\0")
    assert (response.deleted, response.prev_kvs) == (2, ())  # prev_kvs only when asked
    assert store.range(b"\0", b"\0").count == 0


def test_delete_single_key(store):
    store.put(b"a")
    store.put(b"ab")
    response, _ = store.delete(b"a")
    assert response.deleted == 1
    assert [kv.key for kv in store.range(b"a", b"\0").kvs] == [b"ab"]


def test_delete_detaches_from_lease(store):
    store.lease("lease_grant", 5, 60)
    store.put(b"a", lease=5)
    store.put(b"b", lease=5)
    store.delete(b"a")
    with store.reading() as reader:
        assert reader.lease_keys(5) == [b"b"]


def test_failed_requests_leave_the_shared_batch_unchanged(store):
    with store.batch() as writer:
        writer.put(PutRequest(b"a", b"1"))
        for bad in (PutRequest(b"b", lease=9), PutRequest(b"c", ignore_value=True), PutRequest(b"")):
            with pytest.raises(Exception):
                writer.put(bad)
        writer.put(PutRequest(b"d", b"2"))
    assert [(kv.key, kv.mod_revision) for kv in store.range(b"\0", b"\0").kvs] == [(b"a", 2), (b"d", 3)]
    assert store.revision() == 3
