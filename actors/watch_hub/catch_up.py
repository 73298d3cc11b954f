"""Catch-up: unsynced watchers read what they need from the store.

A watcher is unsynced when it starts at a past revision, when the live stream
has a hole it needs (hub.py), and when its buffer spilled (credit.py). Once its
buffer is empty and its window open it waits in credit's lagging queue, and
here it reads the store from its next_revision until a read reaches past the
hub's live revision and it is synced again (the seam: see the package
docstring).

Watchers of one selector that wait for the very same read (unsynced at the
same revisions) share it: one read, its units built once and put in each
buffer (shared, as fanout.py's), so watches that fell behind together catch up
for the cost of one. Each turn makes at most catch_up_reads_per_turn reads
(the shell runs them in one short read transaction), each of at most
catch_up_events events and cut to about a buffer's bytes, so live events and
client requests are never held up long. A watch whose next revision has been
compacted away is canceled with the compact revision, as etcd does
(Hub._compacted).
"""

from __future__ import annotations

from typing import Callable

from actors.watch_hub.credit import Credit
from actors.watch_hub.limits import HubLimits
from actors.watch_hub.units import build_units
from actors.watch_hub.watchers import Watcher
from transport.errors import CompactedError
from transport.watch_wire import EncodedEvent


class CatchUp:
    def __init__(self, limits: HubLimits, credit: Credit, note: Callable[[str, dict], None],
                 compacted: Callable[[Watcher, int], None]):
        self.limits = limits
        self.credit = credit
        self.note = note
        self.compacted = compacted  # (watcher, compact_revision): the watch ends

    def serve(self, read, revision: int) -> int:
        """Serve lagging watchers from the store: read(start_revision, key,
        range_end, max_events, prev_kv) -> (events, next_revision), as
        Reader.events_since; it may raise CompactedError. `revision` is the
        hub's live revision. Returns reads made."""
        limits = self.limits
        reads = 0
        while reads < limits.catch_up_reads_per_turn:
            watcher = self.credit.next_lagging()  # the others are rescheduled when that changes
            if watcher is None:
                break
            reads += 1
            try:
                events, next_revision = read(watcher.next_revision, watcher.key, watcher.range_end, limits.catch_up_events, watcher.prev_kv)
            except CompactedError as error:
                self.compacted(watcher, int(error.details.get("compact_revision", 0)))
                continue
            encoded, next_revision = self._bounded_history(watcher, events, next_revision)
            units = []
            if encoded:
                units = build_units(watcher, encoded, watcher.queued_revision + 1, next_revision - 1, limits.max_response_bytes)
            alike = self._alike(watcher)
            if len(alike) > 1:
                for unit in units:
                    unit.shared = True  # in several buffers: a merge copies it (units.py)
            for each in alike:
                self._advance(each, units, next_revision, revision)
        return reads

    def _alike(self, watcher: Watcher) -> list[Watcher]:
        """The watcher, and the others of its selector that wait for the very
        same read: unsynced at the same revisions, buffer empty, window open.
        One read and its units serve them all, so watches that fell behind
        together (a resumed connection, a spilled group) catch up for the
        cost of one."""
        alike = [watcher]
        for other in watcher.selector.watchers:
            if (other is not watcher and not other.synced and not other.buffer and not other.removed
                    and other.next_revision == watcher.next_revision and other.queued_revision == watcher.queued_revision
                    and self.credit.window_open(other)):
                alike.append(other)
        return alike

    def _advance(self, watcher: Watcher, units: list, next_revision: int, revision: int) -> None:
        """The watcher has read up to next_revision - 1: queue what it read; it
        is synced again once that passes the hub's live `revision`."""
        if units:
            self.credit.append(watcher, units, live=False)
        watcher.next_revision = next_revision
        watcher.queued_revision = max(watcher.queued_revision, next_revision - 1)
        if next_revision > revision:
            watcher.synced = True
            self.note("watcher_synced", {"watch_id": watcher.watch_id, "request_id": watcher.request_id, "revision": next_revision - 1})
        self.credit.schedule(watcher)

    def _bounded_history(self, watcher: Watcher, events, next_revision: int) -> tuple[list[EncodedEvent], int]:
        """The read's events the watcher wants, cut at a revision boundary once
        they pass the buffer's byte limit (one revision is kept whole)."""
        kept: list[EncodedEvent] = []
        size, limit = 0, self.limits.buffer_bytes_max
        for event in events:
            encoded = EncodedEvent(event)
            if size > limit and kept and encoded.revision != kept[-1].revision:
                return kept, encoded.revision  # resume at the first revision not kept
            if watcher.wants(event):
                kept.append(encoded)
                size += len(encoded.encoded(watcher.prev_kv))
        return kept, next_revision
