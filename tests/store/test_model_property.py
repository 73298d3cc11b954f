"""Property test: the LMDB keyspace behaves exactly like tests/store/model.py.

Random batches of put / delete_range / txn (compares, nested txns, reads) /
compaction (whole or stepped) / lease grant and revoke run against both, in
one LMDB write transaction per batch as the apply actor does. Every response,
event and error must match; after each batch every drawn range is compared at
every revision from the compact revision to the current one (and the
Compacted / Future errors just outside), with history replay and paging too.

CAIRN_HYPOTHESIS_EXAMPLES raises the number of examples (default 300).
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from store.mvcc import KeySpace
from store.revisions import revision_main
from transport.errors import CairnError
from transport.messages import (
    CompactionRequest,
    Compare,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
)

from tests.store.conftest import HEADER, open_env
from tests.store.model import Model

EXAMPLES = int(os.environ.get("CAIRN_HYPOTHESIS_EXAMPLES", "300"))
MAX_TXN_OPS = 5
GRANTED = (1, 2)  # granted before every example; lease 3 is never granted

keys = st.sampled_from([b"a", b"b", b"c", b"ab", b"d", b"\0"])
range_ends = st.sampled_from([b"", b"", b"\0", b"b", b"c", b"e", b"a"])
values = st.sampled_from([b"", b"x", b"y", b"zz"])
leases = st.sampled_from([0, 0, 0, 1, 2, 3])
small_revisions = st.integers(min_value=0, max_value=14)
rarely = st.sampled_from([False] * 7 + [True])


@st.composite
def puts(draw):
    ignore_value = draw(rarely)
    return PutRequest(
        draw(keys),
        draw(st.sampled_from([b"", b"", b"", b"x"])) if ignore_value else draw(values),
        lease=draw(leases),
        prev_kv=draw(st.booleans()),
        ignore_value=ignore_value,
        ignore_lease=draw(rarely),
    )


deletes = st.builds(DeleteRangeRequest, keys, range_ends, prev_kv=st.booleans())

ranges = st.builds(
    RangeRequest,
    keys,
    range_ends,
    limit=st.integers(min_value=0, max_value=3),
    revision=st.one_of(st.just(0), small_revisions),
    sort_order=st.integers(min_value=0, max_value=2),
    sort_target=st.integers(min_value=0, max_value=4),
    keys_only=st.booleans(),
    count_only=st.sampled_from([False, False, False, True]),
    min_mod_revision=st.sampled_from([0, 0, 0, 3, 6]),
    max_mod_revision=st.sampled_from([0, 0, 0, 5, 9]),
    min_create_revision=st.sampled_from([0, 0, 0, 4]),
    max_create_revision=st.sampled_from([0, 0, 0, 7]),
)


@st.composite
def compares(draw):
    target = draw(st.integers(min_value=0, max_value=4))
    operand = draw(values) if target == 3 else draw(st.integers(min_value=0, max_value=8))
    return Compare(
        draw(st.integers(min_value=0, max_value=3)),
        target,
        draw(keys),
        operand,
        draw(st.sampled_from([b"", b"", b"", b"c", b"\0"])),
    )


def txns(depth: int = 2):
    """Nested txns get shorter lists: etcd gives them only what the parent's
    longest list leaves of max_txn_ops."""
    width = 1 + depth
    ops = st.one_of(puts(), deletes, ranges) if depth == 0 else st.one_of(puts(), deletes, ranges, txns(depth - 1))
    return st.builds(
        TxnRequest,
        st.lists(compares(), max_size=min(width, 2)).map(tuple),
        st.lists(ops, max_size=width).map(tuple),
        st.lists(ops, max_size=width - 1).map(tuple),
    )


operations = st.one_of(
    puts(),
    puts(),
    puts(),
    deletes,
    txns(),
    txns(),
    st.tuples(st.just("compact"), st.integers(min_value=-1, max_value=4), st.sampled_from([0, 0, 1, 2])),
    st.tuples(st.just("grant"), st.integers(min_value=0, max_value=4)),
    st.tuples(st.just("revoke"), st.integers(min_value=1, max_value=4)),
)


def outcome(call):
    """(result, None) or (None, comparable error)."""
    try:
        return call(), None
    except CairnError as error:
        return None, (type(error).__name__, error.details.get("compact_revision"))


def compact_revision(model, back: int) -> int:
    """Compactions are drawn relative to the current revision (-1: a future one)."""
    return model.revision - back


def apply_to_store(writer, operation, model):
    if isinstance(operation, tuple):
        kind = operation[0]
        if kind == "compact":
            request = CompactionRequest(compact_revision(model, operation[1]))
            return writer.compact(request, max_records=operation[2]), []
        if kind == "grant":
            return writer.lease_grant(operation[1], 60), []
        return writer.lease_revoke(operation[1])
    return writer.execute(operation)


def apply_to_model(model, operation):
    if isinstance(operation, tuple):
        kind = operation[0]
        if kind == "compact":
            return model.compact(compact_revision(model, operation[1])), []
        if kind == "grant":
            return model.lease_grant(operation[1], 60), []
        return model.lease_revoke(operation[1])
    return model.execute(operation)


def check_reads(space, env, model, queries):
    with env.begin() as txn:
        reader = space.reader(txn, HEADER)
        assert space.current_revision(txn) == model.revision
        low = max(model.compacted, 1)
        for revision in [0, *range(low - 1, model.revision + 2)]:
            for query in queries:
                request = RangeRequest(**{**_fields(query), "revision": revision})
                expected = outcome(lambda: model.range(request))
                assert outcome(lambda: reader.range(request)) == expected, (request, model.revision, model.compacted)
                if expected[1] is None:
                    check_pages(reader, request, revision, model)
        check_replay(reader, model, low)
        check_layout(space, txn, model.compacted)
        for lease_id in (1, 2, 3):
            assert reader.lease_keys(lease_id) == model.lease_keys(lease_id)
        assert sorted(reader.leases()) == sorted(model.leases)


def check_layout(space, txn, compacted):
    """The dbs agree with each other, and a finished compaction left only what
    reads at >= the compact revision can see."""
    index = {}
    for key, entry in txn.cursor(db=space.index_db).iternext():
        index.setdefault(key, []).append(entry)
    revs = dict(txn.cursor(db=space.revs_db).iternext())
    assert sorted(entry[:12] for entries in index.values() for entry in entries) == sorted(revs)
    live = dict(txn.cursor(db=space.live_db).iternext())
    assert live == {key: entries[-1][:12] for key, entries in index.items() if entries[-1][12] == 0}
    if compacted and not space.compaction_pending(txn):
        for entries in index.values():
            old = [entry for entry in entries if revision_main(entry) <= compacted]
            assert len(old) <= 1
            assert not old or old[0][12] == 0 or revision_main(old[0]) == compacted


def check_pages(reader, request, revision, model):
    """range_page, joined up, is the unlimited unsorted range; count is its count."""
    plain = RangeRequest(**{**_fields(request), "limit": 0, "sort_order": 0, "sort_target": 0, "count_only": False})
    expected = model.range(plain)
    joined, after = [], None
    while True:
        page, after = reader.range_page(request, revision, after, max_bytes=40)
        joined.extend(page)
        if after is None:
            break
    assert tuple(joined) == expected.kvs
    assert reader.count(request, revision) == expected.count


def check_replay(reader, model, low):
    for start in range(low - 1, model.revision + 2):
        for key, range_end in ((b"\0", b"\0"), (b"a", b""), (b"b", b"d")):
            expected = outcome(lambda: model.events_since(start, key, range_end, True))
            actual = outcome(lambda: reader.events_since(start, key, range_end, 10**6, True))
            if expected[1] is not None:
                assert actual == expected
                continue
            events, next_revision = actual[0]
            assert events == expected[0], (start, key, range_end)
            assert next_revision == max(start, model.revision + 1)
    if low <= model.revision:  # paged replay joins up to the whole replay
        joined, start = [], low
        while start <= model.revision:
            events, start = reader.events_since(start, b"\0", b"\0", 2, False, max_records=3)
            joined.extend(events)
        assert joined == model.events_since(low, b"\0", b"\0", False)


def _fields(request):
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    batches=st.lists(st.lists(operations, min_size=1, max_size=6), min_size=3, max_size=10),
    queries=st.lists(ranges, min_size=1, max_size=3),
)
def test_store_matches_model(batches, queries):
    with tempfile.TemporaryDirectory() as directory:
        env = open_env(directory, map_bytes=32 * 1024 * 1024)
        try:
            space = KeySpace(env)
            model = Model(HEADER, MAX_TXN_OPS)
            with env.begin(write=True) as txn:
                for lease_id in GRANTED:
                    space.writer(txn, HEADER).lease_grant(lease_id, 60)
                    model.lease_grant(lease_id, 60)
            for batch in batches:
                with env.begin(write=True) as txn:
                    space.writer(txn, HEADER).compact_step(2)  # finish stepped compactions bit by bit
                    for operation in batch:
                        writer = space.writer(txn, HEADER, MAX_TXN_OPS)
                        actual = outcome(lambda: apply_to_store(writer, operation, model))
                        expected = outcome(lambda: apply_to_model(model, operation))
                        assert actual == expected, operation
                        event(f"{type(operation).__name__ if not isinstance(operation, tuple) else operation[0]}: "
                              f"{'error ' + expected[1][0] if expected[1] else 'ok'}")
                check_reads(space, env, model, queries)
            event(f"final revision >= {model.revision // 5 * 5}, compacted: {model.compacted > 0}")
        finally:
            env.close()
