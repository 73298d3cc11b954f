"""Credit and spill: what each watcher may hold and have in flight.

Flow control (credit). The frontend's ROUTER silently drops frames to a client
whose pipe is full, and a client that reads slowly would otherwise buffer
without bound. So at most WINDOW_RESPONSES units per watch may be unacknowledged:
the client library counts the responses its application has consumed and
returns that count (WatchKeepAlive.consumed) after every ACK_EVERY responses and
with its periodic keep-alive. A watch whose window is full keeps its units in
the hub's buffer; a buffer past BUFFER_EVENTS_MAX events or BUFFER_BYTES_MAX
bytes is dropped and the watcher turns unsynced from the first revision it was
not sent: nothing is lost, the store has it, and the watcher catches up as
credit returns, one bounded read at a time. A full send queue to the frontend
(zmq.Again) puts the taken units back (requeue), so the buffers absorb it the
same way. Other watchers and the apply actor never wait on a slow one.

The hub works from two queues of watchers with credit, kept here: ready (units
buffered; output.py takes one unit of each in turn) and lagging (unsynced with
an empty buffer; catch_up.py reads the store for them). A watcher is put in
one whenever that may have changed (schedule).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from actors.watch_hub.limits import HubLimits
from actors.watch_hub.units import Unit
from actors.watch_hub.watchers import Registry, Watcher


class Credit:
    """Every watcher's buffer, held to its window and to the hub's bounds, and
    the ready and lagging queues."""

    def __init__(self, limits: HubLimits, registry: Registry, note: Callable[[str, dict], None]):
        self.limits = limits
        self.registry = registry
        self.note = note
        self.ready: deque[Watcher] = deque()
        self.lagging: deque[Watcher] = deque()
        self.buffered_bytes = 0
        self.peak_buffer_bytes = 0
        self.peak_buffer_events = 0

    def window_open(self, watcher: Watcher) -> bool:
        return watcher.sent_units - watcher.acked_units < self.limits.window_responses

    def schedule(self, watcher: Watcher) -> None:
        """Put the watcher where the next turn will look for it: ready (units to
        send and credit) or lagging (unsynced, nothing queued, credit). Entries
        are checked again when taken, so a stale one costs a skip."""
        if watcher.removed or watcher.sent_units - watcher.acked_units >= self.limits.window_responses:
            return  # removed, or its window is closed (window_open, inline: this runs per watcher per batch)
        if watcher.buffer:
            if not watcher.in_ready:
                watcher.in_ready = True
                self.ready.append(watcher)
        elif not watcher.synced and not watcher.in_lagging:
            watcher.in_lagging = True
            self.lagging.append(watcher)

    # ------------------------------------------------------------------ filling buffers

    def append(self, watcher: Watcher, units: list[Unit], live: bool) -> None:
        """Units for the watcher. Live ones spill a buffer they would overfill;
        those read from the store are not held to that bound: a read is made
        only for an empty buffer and cut to about a buffer's size (catch_up.py)."""
        limits = self.limits
        for unit in units:
            if live and (watcher.buffer_events + unit.events > limits.buffer_events_max
                         or watcher.buffer_bytes + unit.bytes > limits.buffer_bytes_max):
                self.spill(watcher, "buffer_full")
                return
            self._add(watcher, unit)
            watcher.events_since_progress = True
            if watcher.buffer_bytes > self.peak_buffer_bytes:  # per watcher per batch: no max() calls
                self.peak_buffer_bytes = watcher.buffer_bytes
            if watcher.buffer_events > self.peak_buffer_events:
                self.peak_buffer_events = watcher.buffer_events
        self.schedule(watcher)
        if self.buffered_bytes > limits.total_buffer_bytes_max:
            largest = max(self.registry.watchers(), key=lambda w: w.buffer_bytes)
            self.spill(largest, "total_buffer_full")

    def append_progress(self, watcher: Watcher, unit: Unit) -> None:
        """A progress notification: no events, so no bound to check."""
        self._add(watcher, unit)
        self.schedule(watcher)

    def _add(self, watcher: Watcher, unit: Unit) -> None:
        buffer = watcher.buffer
        merged = buffer[-1].merged(unit, self.limits.max_response_bytes) if buffer else None
        if merged is None:
            buffer.append(unit)
        elif merged is not buffer[-1]:
            buffer[-1] = merged  # the tail was shared: the merge is this watcher's own copy
        watcher.buffer_events += unit.events
        watcher.buffer_bytes += unit.bytes
        self.buffered_bytes += unit.bytes
        if unit.end > watcher.queued_revision:
            watcher.queued_revision = unit.end

    def spill(self, watcher: Watcher, reason: str) -> None:
        """Drop the watcher's backlog; it reads the store from the first revision
        it was not sent."""
        self.note("watcher_unsynced", {
            "watch_id": watcher.watch_id, "request_id": watcher.request_id, "reason": reason,
            "buffer_events": watcher.buffer_events, "buffer_bytes": watcher.buffer_bytes,
            "buffer_events_max": self.limits.buffer_events_max, "buffer_bytes_max": self.limits.buffer_bytes_max,
            "next_revision": watcher.sent_revision + 1, "unacked": watcher.sent_units - watcher.acked_units})
        self.drop(watcher)
        watcher.synced = False
        watcher.next_revision = watcher.sent_revision + 1
        watcher.queued_revision = watcher.sent_revision
        self.schedule(watcher)

    def drop(self, watcher: Watcher) -> None:
        self.buffered_bytes -= watcher.buffer_bytes
        watcher.buffer.clear()
        watcher.buffer_events = watcher.buffer_bytes = 0

    # ------------------------------------------------------------------ sending and catching up

    def next_ready(self) -> Watcher | None:
        """The next watcher with a unit to send and credit to send it."""
        while self.ready:
            watcher = self.ready.popleft()
            watcher.in_ready = False
            if not watcher.removed and watcher.buffer and self.window_open(watcher):
                return watcher
        return None

    def take(self, watcher: Watcher) -> Unit:
        """The watcher's next unit, counted as sent (it spends one credit)."""
        unit = watcher.buffer.popleft()
        watcher.buffer_events -= unit.events
        watcher.buffer_bytes -= unit.bytes
        self.buffered_bytes -= unit.bytes
        watcher.sent_units += 1
        watcher.sent_revision = unit.end
        self.schedule(watcher)
        return unit

    def give_back(self, watcher: Watcher, unit: Unit) -> None:
        """Undo take: the unit was not sent after all."""
        watcher.buffer.appendleft(unit)
        watcher.buffer_events += unit.events
        watcher.buffer_bytes += unit.bytes
        self.buffered_bytes += unit.bytes
        watcher.sent_units -= 1
        watcher.sent_revision = unit.first - 1
        self.schedule(watcher)

    def next_lagging(self) -> Watcher | None:
        """The next unsynced watcher with an empty buffer and credit: its turn
        to read the store."""
        while self.lagging:
            watcher = self.lagging.popleft()
            watcher.in_lagging = False
            if not (watcher.removed or watcher.synced or watcher.buffer or not self.window_open(watcher)):
                return watcher
        return None

    def stats(self) -> dict:
        """The buffers' gauges; peaks restart from the buffers as they are now."""
        stats = {
            "buffered_bytes": self.buffered_bytes,
            "peak_buffer_bytes": self.peak_buffer_bytes, "peak_buffer_events": self.peak_buffer_events,
            "buffer_bytes_max": self.limits.buffer_bytes_max, "buffer_events_max": self.limits.buffer_events_max,
        }
        self.peak_buffer_bytes = max((w.buffer_bytes for w in self.registry.watchers()), default=0)
        self.peak_buffer_events = max((w.buffer_events for w in self.registry.watchers()), default=0)
        return stats
