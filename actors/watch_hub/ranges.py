"""The index of range watches: which key ranges hold a key, without a scan of every range.

A live event is matched against every selector whose range holds its key
(watchers.py). Single keys are a dict lookup; ranges (prefixes included) are
kept here, in a centered interval tree (Edelsbrunner's; de Berg et al.,
"Computational Geometry", §10.1): each node holds the ranges that contain its
center, sorted by start and by end, and the ranges entirely below or above it
go to its children. A key meets one node per level: O(log n + matches)
instead of O(n) for n ranges.

The tree is built from a snapshot, so ranges added since wait in a short list
that is scanned, and removed ones are skipped by a membership check until the
next build. A build happens when those changes reach a quarter of the ranges
(REBUILD_CHANGES_MIN at least), so a burst of creates costs an amortized
O(log n) each and a lookup never scans more than that quarter.

Ranges are [start, end) of bytes with end None for "to the end of the
keyspace" (store.keys.bounds). Pure: no I/O; results come in a deterministic
order (tree order, then the pending ranges in the order they were added).
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

R = TypeVar("R")  # hashable, with `start: bytes` and `end: bytes | None`

# Pending changes (additions plus removals) a build waits for at least: below
# it a scan of the pending list costs less than building.
REBUILD_CHANGES_MIN = 32


class _Node(Generic[R]):
    __slots__ = ("center", "by_start", "by_end", "below", "above")

    def __init__(self, center: bytes, holding: list[R], below: "_Node | None", above: "_Node | None"):
        self.center = center
        self.by_start = sorted(holding, key=lambda item: item.start)
        # by end, the farthest first (None, unbounded, farthest of all)
        self.by_end = sorted(holding, key=lambda item: (item.end is None, item.end or b""), reverse=True)
        self.below = below
        self.above = above


def _build(items: list[R]) -> _Node | None:
    """A centered interval tree of items (each with start < end)."""
    if not items:
        return None
    starts = sorted(item.start for item in items)
    center = starts[len(starts) // 2]  # a start is held by its own range, so every node holds one
    holding, below, above = [], [], []
    for item in items:
        if item.end is not None and item.end <= center:
            below.append(item)
        elif item.start > center:
            above.append(item)
        else:
            holding.append(item)
    return _Node(center, holding, _build(below), _build(above))


class RangeIndex(Generic[R]):
    """Items with a [start, end) range; `holding(key)` yields those whose range holds key."""

    def __init__(self):
        self.members: dict[R, None] = {}  # every item, in the order added
        self.root: _Node | None = None
        self.pending: dict[R, None] = {}  # added since the build
        self.removed = 0  # removed since the build but still in the tree

    def __len__(self) -> int:
        return len(self.members)

    def add(self, item: R) -> None:
        assert item.end is None or item.start < item.end, "an empty range holds no key"
        assert item not in self.members
        self.members[item] = None
        self.pending[item] = None
        self._rebuild_if_due()

    def remove(self, item: R) -> None:
        del self.members[item]
        if item in self.pending:
            del self.pending[item]
        else:
            self.removed += 1
        self._rebuild_if_due()

    def holding(self, key: bytes) -> Iterator[R]:
        members = self.members
        node = self.root
        while node is not None:
            if key < node.center:
                for item in node.by_start:  # all hold the center, so end > key
                    if item.start > key:
                        break
                    if item in members:
                        yield item
                node = node.below
            else:
                for item in node.by_end:  # all hold the center, so start <= key
                    if item.end is not None and item.end <= key:
                        break
                    if item in members:
                        yield item
                node = node.above if key > node.center else None
        for item in self.pending:
            if item.start <= key and (item.end is None or key < item.end):
                yield item

    def _rebuild_if_due(self) -> None:
        if len(self.pending) + self.removed < max(REBUILD_CHANGES_MIN, len(self.members) // 4):
            return
        self.root = _build(list(self.members))
        self.pending = {}
        self.removed = 0
