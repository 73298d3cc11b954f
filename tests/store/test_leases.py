"""The lease table and the lease -> keys index (etcd lessor Grant/Revoke/Checkpoint)."""

from __future__ import annotations

import pytest

from transport.errors import LeaseExistsError, LeaseNotFoundError
from transport.messages import EVENT_DELETE, KeyValue


def test_grant_and_read(store):
    store.lease("lease_grant", 7, 30)
    with store.reading() as reader:
        assert reader.lease(7) == (30, 0)
        assert reader.lease(8) is None
        assert reader.leases() == [7]
    assert store.revision() == 1  # granting a lease is not a keyspace revision


def test_grant_existing_lease(store):
    store.lease("lease_grant", 7, 30)
    with pytest.raises(LeaseExistsError):
        store.lease("lease_grant", 7, 30)


def test_grant_lease_zero(store):
    with pytest.raises(LeaseNotFoundError):
        store.lease("lease_grant", 0, 30)


def test_revoke_deletes_every_attached_key_in_one_revision(store):
    store.lease("lease_grant", 7, 30)
    store.put(b"c", b"3", lease=7)  # 2
    store.put(b"a", b"1", lease=7)  # 3
    store.put(b"b", b"2")  # 4, no lease
    revision, events = store.lease("lease_revoke", 7)
    assert revision == 5
    assert [(e.type, e.kv) for e in events] == [
        (EVENT_DELETE, KeyValue(b"a", 0, 5, 0, b"", 0)),
        (EVENT_DELETE, KeyValue(b"c", 0, 5, 0, b"", 0)),
    ]
    assert events[0].prev_kv == KeyValue(b"a", 3, 3, 1, b"1", 7)
    assert [kv.key for kv in store.range(b"\0", b"\0").kvs] == [b"b"]
    with store.reading() as reader:
        assert (reader.lease(7), reader.leases(), reader.lease_keys(7)) == (None, [], [])


def test_revoke_without_keys_keeps_revision(store):
    store.lease("lease_grant", 7, 30)
    assert store.lease("lease_revoke", 7) == (1, [])


def test_revoke_unknown_lease(store):
    with pytest.raises(LeaseNotFoundError):
        store.lease("lease_revoke", 7)


def test_checkpoint(store):
    store.lease("lease_grant", 7, 30)
    store.lease("lease_checkpoint", 7, 12)
    store.lease("lease_checkpoint", 8, 12)  # unknown: ignored, as etcd does
    with store.reading() as reader:
        assert (reader.lease(7), reader.lease(8)) == ((30, 12), None)


def test_lease_keys_index_follows_puts_and_deletes(store):
    store.lease("lease_grant", 7, 30)
    store.lease("lease_grant", -3, 30)  # etcd lease ids are int64
    store.put(b"b", lease=7)
    store.put(b"a", lease=7)
    store.put(b"z", lease=-3)
    with store.reading() as reader:
        assert reader.lease_keys(7) == [b"a", b"b"]
        assert reader.leases() == [-3, 7]
    store.delete(b"a", b"c")
    with store.reading() as reader:
        assert (reader.lease_keys(7), reader.lease_keys(-3)) == ([], [b"z"])
