"""How many bytes of applied entries the raft actor still holds in memory.

The in-memory log keeps `snapshot_entries` applied entries so a follower a
little behind catches up from the log rather than by snapshot. Counted in
entries alone that is no bound on memory: 10,000 entries of 1.5 MiB requests
would be 15 GiB. This tracks the payload bytes of the entries handed to apply
since the last compaction, so the actor also compacts once they pass a byte
limit (Limits.max_retained_log_bytes). Pure bookkeeping, no I/O.

``compaction_index`` is the actor's whole policy: keep snapshot_entries applied
entries, and nothing a recently active follower still needs (the core's
catch_up_index: a follower installing a snapshot goes on from the entries after
it), unless the bytes held pass their limit, which wins: memory is bounded
first. Never past what the keyspace made durable, though: an OS crash may undo
the batches apply committed after it, and they are applied again from the log
(store/environment.py).
"""

from __future__ import annotations

from collections import deque


class RetainedBytes:
    __slots__ = ("_sizes", "_last_index", "bytes")

    def __init__(self) -> None:
        self._sizes: deque[tuple[int, int]] = deque()  # (index, payload bytes), increasing index
        self._last_index = 0
        self.bytes = 0

    def add(self, entries) -> None:
        """Entries handed to apply; ones already counted (a re-send) are skipped."""
        for entry in entries:
            if entry.index > self._last_index:
                size = len(entry.data)
                self._sizes.append((entry.index, size))
                self.bytes += size
                self._last_index = entry.index

    def drop_through(self, index: int) -> None:
        """The log was compacted through `index`."""
        sizes = self._sizes
        while sizes and sizes[0][0] <= index:
            self.bytes -= sizes.popleft()[1]

    def compact_point(self, limit_bytes: int, upto: int) -> int:
        """0 while at most limit_bytes are held; otherwise the index to compact
        through (never past `upto`) so that at most half the limit stays, which
        makes compactions rare rather than one per batch."""
        if self.bytes <= limit_bytes:
            return 0
        remaining, point = self.bytes, 0
        for index, size in self._sizes:
            if remaining <= limit_bytes // 2 or index > upto:
                break
            remaining -= size
            point = index
        return point


def compaction_index(durable: int, keep_entries: int, first_index: int, catch_up: int | None, by_bytes: int) -> int:
    """The index to compact the log through now, 0 for none. `durable`: the
    keyspace's synced applied index; `catch_up`: RaftCore.catch_up_index();
    `by_bytes`: RetainedBytes.compact_point(). Compactions come in steps of at
    least a quarter of keep_entries, not one per batch; the bytes limit wins
    over keep_entries and catch_up, never over durable."""
    target = durable - keep_entries
    if catch_up is not None:
        target = min(target, catch_up)
    if by_bytes > target:
        target = min(by_bytes, durable)
    elif target <= 0 or target - first_index < keep_entries // 4 + 1:
        return 0
    return target if target >= first_index else 0
