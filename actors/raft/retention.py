"""How many bytes of applied entries the raft actor still holds in memory.

The in-memory log keeps `snapshot_entries` applied entries so a follower a
little behind catches up from the log rather than by snapshot. Counted in
entries alone that is no bound on memory: 10,000 entries of 1.5 MiB requests
would be 15 GiB. This tracks the payload bytes of the entries handed to apply
since the last compaction, so the actor also compacts once they pass a byte
limit (Limits.max_retained_log_bytes). Pure bookkeeping, no I/O.

`compaction_index` is where those bounds meet: never past what the keyspace
made durable, since an OS crash may undo the batches apply committed after
it, and they are applied again from the log (store/environment.py).
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


def compaction_index(durable: int, first_index: int, keep: int, by_bytes: int) -> int:
    """The index to compact the log through, or 0 to keep it: `keep` entries
    behind `durable` (the keyspace's synced applied index), in steps of at
    least a quarter of keep so compactions are rare; further (to by_bytes,
    RetainedBytes.compact_point) when the entries held pass the byte limit;
    never past durable, never behind the log's first index."""
    compact_to = durable - keep
    if by_bytes > compact_to:
        compact_to = by_bytes
    elif compact_to <= 0 or compact_to - first_index < keep // 4 + 1:
        return 0
    compact_to = min(compact_to, durable)
    return compact_to if compact_to >= first_index else 0
