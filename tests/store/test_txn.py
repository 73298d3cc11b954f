"""Txn rules (etcd apply Txn/applyCompare/checkRequests, v3rpc checkTxnRequest/checkIntervals)."""

from __future__ import annotations

import pytest

from transport.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    InvalidArgumentError,
    KeyNotFoundError,
    KeyTooLongError,
    LeaseNotFoundError,
    TooManyOpsError,
    ValueProvidedError,
)
from transport import messages as m
from transport.messages import Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, TxnRequest

from tests.store.conftest import header


def holds(store, *compares) -> bool:
    response, _ = store.execute(TxnRequest(compare=compares))
    return response.succeeded


@pytest.fixture
def abc(store):
    store.lease("lease_grant", 9, 60)
    store.put(b"a", b"10")  # 2
    store.put(b"b", b"20", lease=9)  # 3
    store.put(b"a", b"11")  # 4: a version 2, create 2, mod 4
    return store


@pytest.mark.parametrize(
    ("target", "operand", "results"),
    [
        # (EQUAL, NOT_EQUAL, GREATER, LESS) against key a
        (m.TARGET_VALUE, b"11", (True, False, False, False)),
        (m.TARGET_VALUE, b"100", (False, True, True, False)),  # bytes order: b"11" > b"100"
        (m.TARGET_VERSION, 2, (True, False, False, False)),
        (m.TARGET_VERSION, 3, (False, True, False, True)),
        (m.TARGET_CREATE, 2, (True, False, False, False)),
        (m.TARGET_CREATE, 1, (False, True, True, False)),
        (m.TARGET_MOD, 4, (True, False, False, False)),
        (m.TARGET_MOD, 5, (False, True, False, True)),
        (m.TARGET_LEASE, 0, (True, False, False, False)),
    ],
)
def test_compare_targets_and_results(abc, target, operand, results):
    for result, expected in zip((m.COMPARE_EQUAL, m.COMPARE_NOT_EQUAL, m.COMPARE_GREATER, m.COMPARE_LESS), results):
        assert holds(abc, Compare(result, target, b"a", operand)) is expected


def test_compare_lease(abc):
    assert holds(abc, Compare(m.COMPARE_EQUAL, m.TARGET_LEASE, b"b", 9))
    assert holds(abc, Compare(m.COMPARE_GREATER, m.TARGET_LEASE, b"b", 8))


def test_compare_missing_key_is_the_zero_kv(abc):
    for target in (m.TARGET_VERSION, m.TARGET_CREATE, m.TARGET_MOD, m.TARGET_LEASE):
        assert holds(abc, Compare(m.COMPARE_EQUAL, target, b"zz", 0))
        assert not holds(abc, Compare(m.COMPARE_GREATER, target, b"zz", 0))
        assert holds(abc, Compare(m.COMPARE_LESS, target, b"zz", 1))


def test_value_compare_on_missing_key_is_false(abc):
    for result in (m.COMPARE_EQUAL, m.COMPARE_NOT_EQUAL, m.COMPARE_GREATER, m.COMPARE_LESS):
        assert not holds(abc, Compare(result, m.TARGET_VALUE, b"zz", b""))
        assert not holds(abc, Compare(result, m.TARGET_VALUE, b"x", b"", range_end=b"y"))


def test_compare_over_a_range_needs_every_key(abc):
    assert holds(abc, Compare(m.COMPARE_GREATER, m.TARGET_MOD, b"a", 2, range_end=b"c"))  # a=4, b=3
    assert not holds(abc, Compare(m.COMPARE_GREATER, m.TARGET_MOD, b"a", 3, range_end=b"c"))
    assert holds(abc, Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"x", 0, range_end=b"\0"))  # empty range: zero kv


def test_all_compares_must_hold(abc):
    yes = Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"a", 2)
    no = Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"b", 2)
    assert holds(abc, yes) and not holds(abc, yes, no)


def test_branches(abc):
    txn = TxnRequest(
        compare=(Compare(m.COMPARE_EQUAL, m.TARGET_VALUE, b"a", b"nope"),),
        success=(PutRequest(b"s", b"1"),),
        failure=(PutRequest(b"f", b"1"), RangeRequest(b"a")),
    )
    response, events = abc.execute(txn)
    assert not response.succeeded
    assert [e.kv.key for e in events] == [b"f"]
    assert response.responses[1].kvs[0].value == b"11"
    assert abc.get(b"s") is None


def test_reads_see_earlier_writes_of_the_same_txn(abc):
    txn = TxnRequest(
        success=(
            RangeRequest(b"a"),
            PutRequest(b"a", b"new"),
            RangeRequest(b"a"),
            RangeRequest(b"a", revision=4),  # the state before the txn
            DeleteRangeRequest(b"b"),
            RangeRequest(b"a", b"\0", count_only=True),
        )
    )
    response, _ = abc.execute(txn)
    before, _, after, old, _, count = response.responses
    assert (before.kvs[0].value, after.kvs[0].value, old.kvs[0].value) == (b"11", b"new", b"11")
    assert after.kvs[0].mod_revision == 5
    assert count.count == 1
    # etcd's sub-response headers: a read before any write sees the old revision
    assert (before.header.revision, after.header.revision) == (4, 5)
    assert response.header == header(5)


def test_whole_txn_is_one_revision(abc):
    txn = TxnRequest(success=(PutRequest(b"x"), PutRequest(b"y"), DeleteRangeRequest(b"a")))
    response, events = abc.execute(txn)
    assert response.header.revision == 5
    assert {e.kv.mod_revision for e in events} == {5}
    assert [r.header.revision for r in response.responses] == [5, 5, 5]


def test_nested_txn(abc):
    inner = TxnRequest(
        compare=(Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"n", 0),),
        success=(PutRequest(b"n", b"inner"),),
        failure=(PutRequest(b"m", b"inner"),),
    )
    response, events = abc.execute(TxnRequest(success=(PutRequest(b"x"), inner)))
    assert response.succeeded and response.responses[1].succeeded
    assert [e.kv.key for e in events] == [b"x", b"n"]
    assert response.responses[1].header.revision == 0  # etcd: nested txns get an empty header
    assert response.header.revision == 5


def test_nested_compares_see_the_state_before_the_txn(abc):
    # etcd compareToPath evaluates every compare before any op runs
    inner = TxnRequest(
        compare=(Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"p", 0),),
        success=(PutRequest(b"q", b"seen-before"),),
    )
    response, _ = abc.execute(TxnRequest(success=(PutRequest(b"p"), inner)))
    assert response.responses[1].succeeded
    assert abc.get(b"q").value == b"seen-before"


def test_range_in_txn_at_its_own_new_revision_is_future(abc):
    with pytest.raises(FutureRevisionError):
        abc.execute(TxnRequest(success=(PutRequest(b"x"), RangeRequest(b"x", revision=5))))
    assert abc.revision() == 4


def test_range_in_txn_below_compaction(abc):
    abc.compact(3)
    with pytest.raises(CompactedError):
        abc.execute(TxnRequest(success=(PutRequest(b"x"), RangeRequest(b"a", revision=2))))
    with pytest.raises(CompactedError):  # the untaken branch is not checked
        abc.execute(TxnRequest(success=(RangeRequest(b"a", revision=2),)))
    response, _ = abc.execute(TxnRequest(failure=(RangeRequest(b"a", revision=2),)))
    assert response.responses == ()


def test_put_checks_in_the_taken_path(abc):
    with pytest.raises(LeaseNotFoundError):
        abc.execute(TxnRequest(success=(PutRequest(b"x"), TxnRequest(success=(PutRequest(b"y", lease=77),)))))
    with pytest.raises(KeyNotFoundError):
        abc.execute(TxnRequest(success=(PutRequest(b"x", ignore_value=True),)))
    # key-not-found is checked against the state before the txn
    with pytest.raises(KeyNotFoundError):
        abc.execute(TxnRequest(success=(PutRequest(b"y"), TxnRequest(success=(PutRequest(b"x", ignore_lease=True),)))))
    response, _ = abc.execute(TxnRequest(failure=(PutRequest(b"x", lease=77),)))  # not taken: fine
    assert response.succeeded
    assert abc.revision() == 4


def test_ignore_flags_in_txn(abc):
    response, _ = abc.execute(TxnRequest(success=(PutRequest(b"b", ignore_value=True, ignore_lease=True),)))
    kv = abc.get(b"b")
    assert (kv.value, kv.lease, kv.version) == (b"20", 9, 2)


@pytest.mark.parametrize(
    "ops",
    [
        (PutRequest(b"a"), PutRequest(b"a")),
        (PutRequest(b"a"), DeleteRangeRequest(b"a")),
        (DeleteRangeRequest(b"a", b"c"), PutRequest(b"b")),
        (DeleteRangeRequest(b"a", b"\0"), PutRequest(b"zzz")),  # from-key delete covers every later key
        (PutRequest(b"a"), TxnRequest(success=(PutRequest(b"a"),))),
        (TxnRequest(success=(PutRequest(b"a"),)), DeleteRangeRequest(b"a")),
        (TxnRequest(success=(PutRequest(b"a"),)), TxnRequest(failure=(PutRequest(b"a"),))),
        (TxnRequest(success=(DeleteRangeRequest(b"a"),)), TxnRequest(success=(PutRequest(b"a"),))),
        (TxnRequest(success=(PutRequest(b"a"),), failure=(PutRequest(b"b"),)), PutRequest(b"b")),
        (TxnRequest(success=(PutRequest(b"a"), DeleteRangeRequest(b"a")),),),
    ],
)
def test_duplicate_keys(abc, ops):
    with pytest.raises(DuplicateKeyError):
        abc.execute(TxnRequest(success=ops))
    with pytest.raises(DuplicateKeyError):  # checked in both branches, whichever runs
        abc.execute(TxnRequest(failure=ops))


@pytest.mark.parametrize(
    "ops",
    [
        (DeleteRangeRequest(b"a"), DeleteRangeRequest(b"a", b"c")),  # deletes may overlap
        (DeleteRangeRequest(b"b", b"c"), PutRequest(b"c")),  # range end is exclusive
        (DeleteRangeRequest(b"b", b"\0"), PutRequest(b"a")),
        (TxnRequest(success=(PutRequest(b"a"),), failure=(PutRequest(b"a"),)),),  # then/else exclusive
        (RangeRequest(b"a"), PutRequest(b"a")),
        # etcd checks a nested txn's puts only against deletes seen before it
        (TxnRequest(success=(PutRequest(b"a"),)), TxnRequest(success=(DeleteRangeRequest(b"a"),))),
    ],
)
def test_not_duplicate_keys(abc, ops):
    abc.execute(TxnRequest(success=ops))


def test_put_then_delete_of_one_key_in_one_revision(abc):
    # reachable through the etcd ordering quirk above; the store must stay exact
    ops = (TxnRequest(success=(PutRequest(b"a", b"x"),)), TxnRequest(success=(DeleteRangeRequest(b"a"),)))
    response, events = abc.execute(TxnRequest(success=ops))
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [(0, b"a", 5), (1, b"a", 5)]
    assert events[1].prev_kv.value == b"x"
    assert abc.get(b"a") is None and abc.get(b"a", revision=4).value == b"11"
    abc.compact(5)
    assert abc.get(b"a", revision=5) is None
    abc.put(b"a", b"again")
    assert abc.get(b"a").version == 1


def test_too_many_ops(store):
    store.max_txn_ops = 3
    store.execute(TxnRequest(success=tuple(PutRequest(b"k%d" % i) for i in range(3))))
    with pytest.raises(TooManyOpsError):
        store.execute(TxnRequest(success=tuple(PutRequest(b"x%d" % i) for i in range(4))))
    with pytest.raises(TooManyOpsError):
        store.execute(TxnRequest(compare=tuple(Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"a", 0) for _ in range(4))))
    # etcd counts the longest list, not the total...
    store.execute(
        TxnRequest(
            compare=(Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"a", 0),) * 3,
            success=(PutRequest(b"p"), PutRequest(b"q"), PutRequest(b"r")),
            failure=(PutRequest(b"s"),) * 1,
        )
    )
    # ...and a nested txn gets what its parent's longest list leaves
    nested = TxnRequest(success=(PutRequest(b"n1"), PutRequest(b"n2")))
    with pytest.raises(TooManyOpsError):
        store.execute(TxnRequest(success=(PutRequest(b"o"), nested)))  # 3 - 2 = 1 < 2
    store.execute(TxnRequest(success=(TxnRequest(success=(PutRequest(b"n1"),)),)))


def test_static_checks_inside_txn(abc):
    with pytest.raises(EmptyKeyError):
        abc.execute(TxnRequest(compare=(Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"", 0),)))
    with pytest.raises(EmptyKeyError):
        abc.execute(TxnRequest(failure=(TxnRequest(success=(RangeRequest(b""),)),)))
    with pytest.raises(ValueProvidedError):
        abc.execute(TxnRequest(success=(PutRequest(b"a", b"v", ignore_value=True),)))
    with pytest.raises(KeyTooLongError):
        abc.execute(TxnRequest(success=(PutRequest(b"a" * 512),)))
    with pytest.raises(InvalidArgumentError):
        abc.execute(TxnRequest(compare=(Compare(m.COMPARE_EQUAL, m.TARGET_VALUE, b"a", 3),)))
    with pytest.raises(InvalidArgumentError):
        abc.execute(TxnRequest(compare=(Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"a", b"3"),)))


def test_failed_txn_leaves_the_batch_unchanged(abc):
    bad = TxnRequest(success=(PutRequest(b"x"), DeleteRangeRequest(b"a"), PutRequest(b"y", lease=404)))
    with abc.batch() as writer:
        with pytest.raises(LeaseNotFoundError):
            writer.txn(bad)
        response, _ = writer.put(PutRequest(b"z"))
    assert response.header.revision == 5
    assert abc.get(b"x") is None and abc.get(b"a").value == b"11"


def test_execute_dispatches_ranges(abc):
    response, events = abc.execute(RangeRequest(b"a"))
    assert isinstance(response, RangeResponse) and events == []
