"""The range watches' interval index (actors/watch_hub/ranges.py) against a
scan of every range: seeded, so every run checks the same cases."""

from __future__ import annotations

import random

import pytest

from actors.watch_hub.ranges import REBUILD_CHANGES_MIN, RangeIndex
from store.keys import bounds, contains


class Range:
    """A stand-in for a Selector: hashable by identity, with start and end."""

    def __init__(self, key: bytes, range_end: bytes):
        self.start, self.end = bounds(key, range_end)

    def __repr__(self):
        return f"Range({self.start!r}, {self.end!r})"


def scan(ranges, key: bytes) -> set:
    return {r for r in ranges if contains(r.start, r.end, key)}


def random_key(rng: random.Random) -> bytes:
    return bytes(rng.choice(b"abc\x00") for _ in range(rng.randint(0, 4)))


def random_range(rng: random.Random) -> Range:
    key = random_key(rng) or b"\0"
    kind = rng.random()
    if kind < 0.3:  # a prefix, as etcd's clientv3.WithPrefix asks
        return Range(key, key[:-1] + bytes([key[-1] + 1]))
    if kind < 0.4:
        return Range(key, b"\0")  # from the key on
    end = key + random_key(rng) + b"\x01"
    return Range(key, end)


@pytest.mark.parametrize("seed", range(20))
def test_holding_finds_exactly_the_ranges_a_scan_finds_through_adds_and_removes(seed):
    rng = random.Random(seed)
    index, alive = RangeIndex(), []
    for step in range(400):
        if alive and rng.random() < 0.35:
            gone = alive.pop(rng.randrange(len(alive)))
            index.remove(gone)
        else:
            added = random_range(rng)
            index.add(added)
            alive.append(added)
        for _ in range(5):
            key = random_key(rng)
            found = list(index.holding(key))
            assert len(found) == len(set(found)), "a range is reported once"
            assert set(found) == scan(alive, key), (step, key)
    assert len(index) == len(alive)


def test_bounds_are_start_inclusive_end_exclusive_and_none_is_unbounded():
    index = RangeIndex()
    a, b, c = Range(b"b", b"d"), Range(b"c", b"\0"), Range(b"a", b"b")
    for r in (a, b, c):
        index.add(r)
    assert set(index.holding(b"b")) == {a}  # a's start, c's end
    assert set(index.holding(b"d")) == {b}  # a's end
    assert set(index.holding(b"\xff" * 8)) == {b}
    assert set(index.holding(b"a")) == {c}
    assert set(index.holding(b"")) == set()


def test_many_ranges_are_built_into_the_tree_and_a_lookup_visits_few_of_them():
    """Past the rebuild threshold the ranges live in the tree: a key inside one
    narrow range among thousands meets O(log n) nodes, not every range."""
    index = RangeIndex()
    ranges = [Range(b"k%05d/" % n, b"k%05d0" % n) for n in range(4000)]
    for r in ranges:
        index.add(r)
    assert len(index.pending) < max(REBUILD_CHANGES_MIN, len(ranges) // 4)
    assert list(index.holding(b"k01234/x")) == [ranges[1234]]

    def depth(node) -> int:
        return 0 if node is None else 1 + max(depth(node.below), depth(node.above))

    assert depth(index.root) <= 4000 .bit_length() + 1  # each level halves the starts


def test_results_come_in_the_same_order_for_the_same_history():
    def history():
        rng = random.Random(7)
        index = RangeIndex()
        made = []
        for _ in range(200):
            r = random_range(rng)
            index.add(r)
            made.append(r)
        return [[made.index(r) for r in index.holding(key)] for key in (b"a", b"ab", b"b\x00", b"c")]

    assert history() == history()
