"""Range rules (etcd applierV3backend.Range, kvstore_txn.go rangeKeys)."""

from __future__ import annotations

import pytest

from transport.errors import CompactedError, EmptyKeyError, FutureRevisionError, InvalidArgumentError
from transport import messages as m
from transport.messages import RangeRequest


def keys(response):
    return [kv.key for kv in response.kvs]


@pytest.fixture
def filled(store):
    # revisions: a=2, b=3, c=4, d=5, then b again at 6 (version 2), e at 7
    for key, value in [(b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"d", b"0"), (b"b", b"9"), (b"e", b"5")]:
        store.put(key, value)
    return store


def test_single_key(filled):
    assert keys(filled.range(b"b")) == [b"b"]
    assert filled.range(b"bb").kvs == ()


def test_half_open_interval(filled):
    assert keys(filled.range(b"b", b"d")) == [b"b", b"c"]


def test_range_end_zero_means_every_key_from(filled):
    assert keys(filled.range(b"c", b"\0")) == [b"c", b"d", b"e"]


def test_zero_zero_is_everything(filled):
    filled.put(b"\0")
    filled.put(b"\xff\xff")
    assert keys(filled.range(b"\0", b"\0")) == [b"\0", b"a", b"b", b"c", b"d", b"e", b"\xff\xff"]


def test_range_end_below_key_is_empty(filled):
    assert filled.range(b"d", b"b").kvs == ()


def test_limit_more_and_count(filled):
    response = filled.range(b"a", b"\0", limit=2)
    assert (keys(response), response.more, response.count) == ([b"a", b"b"], True, 5)
    response = filled.range(b"a", b"\0", limit=5)
    assert (len(response.kvs), response.more, response.count) == (5, False, 5)
    response = filled.range(b"a", b"\0", limit=-1)  # etcd: limit <= 0 is no limit
    assert (len(response.kvs), response.more) == (5, False)


def test_keys_only_omits_values(filled):
    response = filled.range(b"a", b"c", keys_only=True)
    assert [(kv.key, kv.value, kv.version) for kv in response.kvs] == [(b"a", b"", 1), (b"b", b"", 2)]


def test_count_only(filled):
    response = filled.range(b"b", b"\0", count_only=True, limit=1)
    assert (response.kvs, response.count, response.more) == ((), 4, False)


def test_count_only_whole_keyspace_and_at_history(filled):
    assert filled.range(b"\0", b"\0", count_only=True).count == 5
    assert filled.range(b"\0", b"\0", count_only=True, revision=4).count == 3


@pytest.mark.parametrize(
    ("order", "target", "expected"),
    [
        (m.SORT_NONE, m.SORT_BY_KEY, [b"a", b"b", b"c", b"d", b"e"]),
        (m.SORT_ASCEND, m.SORT_BY_KEY, [b"a", b"b", b"c", b"d", b"e"]),
        (m.SORT_DESCEND, m.SORT_BY_KEY, [b"e", b"d", b"c", b"b", b"a"]),
        (m.SORT_ASCEND, m.SORT_BY_VALUE, [b"d", b"c", b"a", b"e", b"b"]),
        (m.SORT_DESCEND, m.SORT_BY_VALUE, [b"b", b"e", b"a", b"c", b"d"]),
        (m.SORT_ASCEND, m.SORT_BY_MOD, [b"a", b"c", b"d", b"b", b"e"]),
        (m.SORT_DESCEND, m.SORT_BY_CREATE, [b"e", b"d", b"c", b"b", b"a"]),
        # ties keep key order, ascending or descending
        (m.SORT_DESCEND, m.SORT_BY_VERSION, [b"b", b"a", b"c", b"d", b"e"]),
        (m.SORT_ASCEND, m.SORT_BY_VERSION, [b"a", b"c", b"d", b"e", b"b"]),
        # etcd: order NONE with a target other than KEY sorts ascending
        (m.SORT_NONE, m.SORT_BY_VALUE, [b"d", b"c", b"a", b"e", b"b"]),
    ],
)
def test_sort(filled, order, target, expected):
    assert keys(filled.range(b"a", b"\0", sort_order=order, sort_target=target)) == expected


def test_sorted_limit_sorts_everything_first(filled):
    response = filled.range(b"a", b"\0", sort_order=m.SORT_DESCEND, sort_target=m.SORT_BY_VALUE, limit=2)
    assert (keys(response), response.more, response.count) == ([b"b", b"e"], True, 5)


def test_order_none_with_other_target_sorts_only_the_fetched_keys(filled):
    # etcd fetches limit + 1 keys (sort_order is NONE), then sorts those by value
    response = filled.range(b"a", b"\0", sort_order=m.SORT_NONE, sort_target=m.SORT_BY_VALUE, limit=2)
    assert (keys(response), response.more) == ([b"c", b"a"], True)  # from a=3, b=9, c=2


def test_revision_filters_prune_after_fetch_and_count_ignores_them(filled):
    response = filled.range(b"a", b"\0", min_mod_revision=5)
    assert (keys(response), response.count) == ([b"b", b"d", b"e"], 5)
    response = filled.range(b"a", b"\0", max_create_revision=3)
    assert keys(response) == [b"a", b"b"]
    response = filled.range(b"a", b"\0", min_create_revision=3, max_mod_revision=5)
    assert keys(response) == [b"c", b"d"]


def test_filters_with_limit_set_more_from_the_filtered_kvs(filled):
    response = filled.range(b"a", b"\0", min_mod_revision=5, limit=2)
    assert (keys(response), response.more, response.count) == ([b"b", b"d"], True, 5)
    response = filled.range(b"a", b"\0", min_mod_revision=6, limit=2)
    assert (keys(response), response.more, response.count) == ([b"b", b"e"], False, 5)


def test_history_reads(filled):
    assert keys(filled.range(b"a", b"\0", revision=3)) == [b"a", b"b"]
    assert filled.get(b"b", revision=5).value == b"1"
    assert filled.get(b"b", revision=6).value == b"9"
    assert filled.get(b"e", revision=6) is None


def test_history_read_reports_current_header_revision(filled):
    assert filled.range(b"a", revision=2).header.revision == 7


def test_future_revision(filled):
    with pytest.raises(FutureRevisionError):
        filled.range(b"a", revision=8)


def test_compacted_revision(filled):
    filled.compact(5)
    with pytest.raises(CompactedError) as raised:
        filled.range(b"a", revision=4)
    assert raised.value.compact_revision == 5
    assert keys(filled.range(b"a", b"\0", revision=5)) == [b"a", b"b", b"c", b"d"]  # R == compact is readable


def test_empty_key_rejected(filled):
    with pytest.raises(EmptyKeyError):
        filled.range(b"")


def test_invalid_sort_option_rejected(filled):
    with pytest.raises(InvalidArgumentError):
        filled.range(b"a", sort_order=7)
    with pytest.raises(InvalidArgumentError):
        filled.range(b"a", sort_target=9)


def test_keys_longer_than_lmdb_allows_are_just_absent(filled):
    long_key = b"b" * 600
    assert filled.range(long_key).kvs == ()
    assert keys(filled.range(long_key, b"\0")) == [b"c", b"d", b"e"]
    assert keys(filled.range(b"a", long_key)) == [b"a", b"b"]
    assert keys(filled.range(long_key, b"\0", revision=4)) == [b"c"]
    assert filled.range(long_key, revision=4).kvs == ()


def test_reader_count_and_pages(filled):
    with filled.reading() as reader:
        assert reader.count(RangeRequest(b"b", b"\0"), 0) == 4
        assert reader.count(RangeRequest(b"b", b"\0"), 4) == 2
        pages, after = [], None
        while True:
            page, after = reader.range_page(RangeRequest(b"a", b"\0", keys_only=True), 6, after, max_bytes=1)
            pages.append(keys_of(page))
            if after is None:
                break
        assert pages == [[b"a"], [b"b"], [b"c"], [b"d"]]  # revision 6 has no e
        assert all(kv.value == b"" for kv in page)


def test_range_page_sizes_and_filters(filled):
    with filled.reading() as reader:
        page, after = reader.range_page(RangeRequest(b"a", b"\0"), 0, None, max_bytes=10**6)
        assert (keys_of(page), after) == ([b"a", b"b", b"c", b"d", b"e"], None)
        page, after = reader.range_page(RangeRequest(b"a", b"\0", min_mod_revision=6), 0, None, max_bytes=34)
        assert (keys_of(page), after) == ([b"b"], b"b")
        page, after = reader.range_page(RangeRequest(b"a", b"\0", min_mod_revision=6), 0, after, max_bytes=34)
        assert (keys_of(page), after) == ([b"e"], None)
    filled.compact(3)
    with filled.reading() as reader, pytest.raises(CompactedError):
        reader.range_page(RangeRequest(b"a"), 2, None, 100)


def keys_of(kvs):
    return [kv.key for kv in kvs]
