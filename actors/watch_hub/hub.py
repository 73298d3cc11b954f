"""The watch hub's logic: etcd's watch guarantees as a pure state machine.

Theory of operation
-------------------
The watch actor (actors/watch.py) is a thin shell around a Hub: it feeds in
client requests, the apply actor's AppliedEvents and the clock, lends the hub a
history reader over a short LMDB read transaction, and sends whatever frames
the hub hands out. The hub itself does no I/O, so every rule below is tested
deterministically (tests/unit/test_watch_hub.py).

Revisions are the only bookkeeping. Each watcher knows `next_revision`, the
first revision it has not yet been given; the live stream and the store are two
sources of the same totally ordered history, and a watcher takes each revision
from exactly one of them:

* synced: the watcher takes live events (AppliedEvents) of revision >=
  next_revision, and its coverage follows the hub's revision;
* unsynced: it ignores live events and reads the store from next_revision
  (Reader.events_since, whole revisions, a bounded batch per read). A read that
  reaches past the hub's live revision makes it synced again with next_revision
  = the read's end + 1, so live events the store already gave it are skipped
  (no duplicate) and every later one is taken (no gap). This is the seam of a
  watch created at a past revision, and of every catch-up after falling behind.

Live events with a revision the hub has already passed are duplicates and are
skipped. A batch whose first revision leaves a hole after the hub's revision
(the apply actor dropped a message on a full queue, or a snapshot was
installed) turns every synced watcher that needs the hole unsynced: the store
fills it. So does an elided batch: while the hub has no watchers it tells the
apply actor so (WatchInterest, from the shell) and apply sends only the new
revision; a watcher created before apply hears of it reads those revisions
from the store, like any other gap. The shell also reports the store's revision once a second
(note_store_revision), which finds a hole that no later batch reveals.

Sharing the work. Fan-out costs per watcher, so whatever can be done once
for many watchers is. Watchers with the same key range, filters, prev_kv and
fragment flag form a Selector: a live event is matched once per selector, and
a batch's units are built once per selector and copied to each synced watcher
that takes the whole batch (a watcher whose next revision falls inside the
batch gets units of its own). Frames are shared too (WatchResponses): see
output.py.

Flow control (credit): see credit.py.

Dead clients: see watchers.py.
"""

from __future__ import annotations

from actors.watch_hub.credit import Credit
from actors.watch_hub.limits import HubLimits
from actors.watch_hub.output import Outgoing, Output
from actors.watch_hub.units import Unit, build_units
from actors.watch_hub.watchers import Connection, Registry, Selector, Watcher
from transport.errors import CompactedError
from transport.messages import (
    ErrorResponse,
    Event,
    ResponseHeader,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchKeepAlive,
    WatchResponse,
)
from transport.watch_wire import FRAME_OVERHEAD_BYTES, EncodedEvent

# etcd's clientv3.InvalidWatchID: the id of a refused watch and of keep-alive replies.
INVALID_WATCH_ID = -1

REASON_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
REASON_UNKNOWN = WatchKeepAlive.UNKNOWN_WATCH


class Hub:
    def __init__(self, cluster_id: int, member_id: int, revision: int, now: float, limits: HubLimits | None = None):
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.limits = limits or HubLimits()
        self.term = 0
        self.revision = revision  # every event up to here has been seen live or is known to be in the store
        self.registry = Registry(self.limits)
        self.credit = Credit(self.limits, self.registry, self._note)
        self.output = Output(self.credit, self._header)
        self.next_progress_at = now + self.limits.progress_notify_s
        self.notes: list[tuple[str, dict]] = []  # for the shell to log
        # identity -> store revision to reach: progress requests waiting for the
        # live stream (one per connection; the gap check bounds the wait).
        self.pending_progress: dict[bytes, int] = {}

    # ------------------------------------------------------------------ client requests

    @property
    def watcher_count(self) -> int:
        return self.registry.count

    @property
    def connections(self) -> dict[bytes, Connection]:
        return self.registry.connections

    @property
    def buffered_bytes(self) -> int:
        return self.credit.buffered_bytes

    @property
    def peak_buffer_events(self) -> int:
        return self.credit.peak_buffer_events

    def heard(self, identity: bytes, now: float) -> Connection:
        return self.registry.heard(identity, now)

    def create(self, identity: bytes, request_id: int, request: WatchCreateRequest, store_revision: int, now: float) -> None:
        """store_revision: the store's current revision as the shell just read it
        (etcd's created header and the start of a watch from "now")."""
        connection = self.heard(identity, now)
        current = max(store_revision, self.revision)
        reason = self.registry.refusal(connection, request)
        if reason:
            self.notes.append(("watch_refused", {"request_id": request_id, "reason": reason}))
            self.output.send_control(identity, request_id, WatchResponse(
                self._header(current), INVALID_WATCH_ID, created=True, canceled=True, cancel_reason=reason))
            return
        watch_id = request.watch_id or connection.auto_id()
        watcher = Watcher(connection, watch_id, request_id, request)
        start = request.start_revision
        if start <= 0:
            watcher.next_revision, watcher.synced = current + 1, True
        else:
            # A future start waits for live events; a past one replays the store first.
            watcher.next_revision, watcher.synced = start, start > self.revision
        watcher.queued_revision = watcher.sent_revision = watcher.next_revision - 1
        self.registry.add(watcher)
        self.output.send_control(identity, request_id, WatchResponse(self._header(current), watch_id, created=True))
        self.notes.append(("watch_created", {
            "request_id": request_id, "watch_id": watch_id, "start_revision": watcher.next_revision,
            "synced": watcher.synced, "revision": current}))
        self.credit.schedule(watcher)

    def cancel(self, identity: bytes, request: WatchCancelRequest, now: float) -> None:
        """etcd answers a cancel of an unknown id with nothing."""
        connection = self.heard(identity, now)
        watcher = connection.watchers.get(request.watch_id)
        if watcher is None:
            self.notes.append(("cancel_unknown_watch", {"watch_id": request.watch_id}))
            return
        self._remove(watcher)
        self.output.send_control(identity, watcher.request_id, WatchResponse(self._header(self.revision), watcher.watch_id, canceled=True))
        self.notes.append(("watch_canceled", {"request_id": watcher.request_id, "watch_id": watcher.watch_id}))

    def request_progress(self, identity: bytes, store_revision: int, now: float) -> None:
        """etcd's RequestProgress: a progress notification on every watch of the
        connection, queued behind what the watch has pending so it never claims
        a revision whose events are still to come. It waits until the live
        stream has reached the store's revision (store_revision, as the shell
        just read it): a client that wrote, then asked, learns a revision at
        least as new as its write."""
        connection = self.heard(identity, now)
        if store_revision > self.revision:
            self.pending_progress[identity] = max(store_revision, self.pending_progress.get(identity, 0))
            return
        for watcher in connection.watchers.values():
            self._append_progress(watcher)

    def _answer_pending_progress(self) -> None:
        for identity, target in list(self.pending_progress.items()):
            if target > self.revision:
                continue
            del self.pending_progress[identity]
            connection = self.registry.connections.get(identity)
            if connection is not None:
                for watcher in connection.watchers.values():
                    self._append_progress(watcher)

    def keepalive(self, identity: bytes, request_id: int, message: WatchKeepAlive, now: float) -> None:
        connection = self.heard(identity, now)
        limits = self.limits
        connection.interval_s = min(max(message.interval_ms / 1000, limits.keepalive_interval_s_min), limits.keepalive_interval_s_max)
        for watch_id, watch_request_id, consumed in zip(message.watch_ids, message.request_ids, message.consumed):
            watcher = connection.watchers.get(watch_id)
            if watcher is None or watcher.request_id != watch_request_id:
                self.output.send_control(identity, watch_request_id, WatchResponse(
                    self._header(self.revision), watch_id, canceled=True, cancel_reason=REASON_UNKNOWN))
                self.notes.append(("keepalive_unknown_watch", {"watch_id": watch_id, "request_id": watch_request_id}))
                continue
            if consumed > watcher.acked_units:
                watcher.acked_units = min(consumed, watcher.sent_units)
                self.credit.schedule(watcher)
        self.output.send_control(identity, request_id, WatchResponse(self._header(self.revision), INVALID_WATCH_ID))

    def reply_error(self, identity: bytes, request_id: int, response: ErrorResponse) -> None:
        self.output.send_control(identity, request_id, response)

    # ------------------------------------------------------------------ the live stream

    def set_term(self, term: int) -> None:
        self.term = max(self.term, term)

    def on_events(self, revision: int, events: tuple[Event, ...] | list[Event], elided: bool = False) -> None:
        """One AppliedEvents: events in revision order, revision the store's after
        them. elided: apply left the events out (we had no watchers when it last
        heard from us); any watcher created since reads them from the store."""
        if elided:
            if revision > self.revision:
                if self.registry.count:
                    self._gap(revision, "events_elided")
                else:
                    self.revision = revision
                    if self.pending_progress:
                        self._answer_pending_progress()
            return
        if events:
            first = events[0].kv.mod_revision
            if first > self.revision + 1:
                self._gap(first - 1, "events_missing")
            revision = max(revision, events[-1].kv.mod_revision)
        if revision <= self.revision:
            return  # nothing new: a duplicate, or a batch the store already filled in
        matched: dict[Selector, list[EncodedEvent]] = {}
        for event in events:
            if event.kv.mod_revision <= self.revision:
                continue
            encoded = None
            for selector in self.registry.matching(event.kv.key):
                if not selector.wants(event):
                    continue
                if encoded is None:
                    encoded = EncodedEvent(event)
                found = matched.get(selector)
                if found is None:
                    matched[selector] = [encoded]
                else:
                    found.append(encoded)
        previous = self.revision
        self.revision = revision
        for selector, encoded_events in matched.items():
            self._deliver(selector, encoded_events, previous, revision)
        if self.pending_progress:
            self._answer_pending_progress()

    def note_store_revision(self, store_revision: int) -> None:
        """The store had reached store_revision a while ago (the shell's check
        interval) and the live stream has not: its events were lost on the way."""
        if store_revision > self.revision:
            self._gap(store_revision, "live_stream_behind_store")

    def _gap(self, upto: int, reason: str) -> None:
        """Revisions up to `upto` will not arrive live: every synced watcher that
        still needs one reads the store instead."""
        turned = 0
        for watcher in self.registry.watchers():
            if not watcher.synced:
                continue
            next_revision = max(watcher.next_revision, self.revision + 1)
            if next_revision <= upto:
                watcher.synced = False
                watcher.next_revision = next_revision
                watcher.queued_revision = next_revision - 1
                turned += 1
                self.credit.schedule(watcher)
        self.notes.append(("live_gap", {"reason": reason, "from_revision": self.revision + 1, "to_revision": upto, "watchers": turned}))
        self.revision = max(self.revision, upto)
        if self.pending_progress:
            self._answer_pending_progress()

    def _deliver(self, selector: Selector, events: list[EncodedEvent], previous: int, revision: int) -> None:
        """A live batch's events of one selector to each of its synced watchers,
        from the watcher's next revision on; the units are built once for all
        that take the whole batch."""
        template: list[Unit] | None = None
        first_revision = events[0].revision
        for watcher in list(selector.watchers):
            if not watcher.synced:
                continue
            if watcher.next_revision > first_revision:
                taken = [event for event in events if event.revision >= watcher.next_revision]
                if not taken:
                    continue
                units = build_units(selector, taken, 0, revision, self.limits.max_response_bytes)
            else:
                if template is None:
                    template = build_units(selector, events, 0, revision, self.limits.max_response_bytes)
                units = [unit.clone() for unit in template]
            units[0].first = max(watcher.queued_revision, previous) + 1
            self.credit.append(watcher, units, live=True)

    # ------------------------------------------------------------------ catching up from the store

    def catch_up(self, read) -> int:
        """Serve lagging watchers from the store: read(start_revision, key,
        range_end, max_events, prev_kv) -> (events, next_revision), as
        Reader.events_since; it may raise CompactedError. Returns reads made."""
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
                self._compacted(watcher, int(error.details.get("compact_revision", 0)))
                continue
            encoded, next_revision = self._bounded_history(watcher, events, next_revision)
            first = watcher.queued_revision + 1
            if encoded:
                self.credit.append(watcher, build_units(watcher, encoded, first, next_revision - 1, limits.max_response_bytes), live=False)
            watcher.next_revision = next_revision
            watcher.queued_revision = max(watcher.queued_revision, next_revision - 1)
            if next_revision > self.revision:
                watcher.synced = True
                self.notes.append(("watcher_synced", {"watch_id": watcher.watch_id, "request_id": watcher.request_id, "revision": next_revision - 1}))
            self.credit.schedule(watcher)
        return reads

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

    def _compacted(self, watcher: Watcher, compact_revision: int) -> None:
        """etcd: a watch whose next revision is compacted gets compact_revision
        with canceled set, and is gone."""
        self._remove(watcher)
        self.output.send_control(watcher.connection.identity, watcher.request_id, WatchResponse(
            self._header(self.revision), watcher.watch_id, canceled=True, compact_revision=compact_revision,
            cancel_reason=REASON_COMPACTED))
        self.notes.append(("watch_compacted", {
            "request_id": watcher.request_id, "watch_id": watcher.watch_id, "compact_revision": compact_revision}))

    # ------------------------------------------------------------------ units and buffers

    def _append_progress(self, watcher: Watcher) -> None:
        covered = max(watcher.queued_revision, self.revision) if watcher.synced else watcher.queued_revision
        header_revision = self.revision if watcher.synced else watcher.queued_revision
        unit = Unit([[]], watcher.queued_revision + 1, covered, FRAME_OVERHEAD_BYTES, progress=True, header_revision=header_revision)
        self.credit.append_progress(watcher, unit)

    # ------------------------------------------------------------------ output

    def has_output(self) -> bool:
        return self.output.has_output()

    def has_catch_up(self) -> bool:
        return bool(self.credit.lagging)

    def take_output(self, max_bytes: int) -> Outgoing | None:
        return self.output.take(max_bytes)

    def requeue(self, out: Outgoing) -> None:
        self.output.requeue(out)

    def _note(self, event: str, fields: dict) -> None:
        self.notes.append((event, fields))

    def _header(self, revision: int) -> ResponseHeader:
        return ResponseHeader(self.cluster_id, self.member_id, revision, self.term)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        self._expire_connections(now)
        if now >= self.next_progress_at:
            self.next_progress_at = now + self.limits.progress_notify_s
            self._progress_notify()

    def _expire_connections(self, now: float) -> None:
        for connection in self.registry.expire(now):
            if connection.watchers:
                self.notes.append(("connection_expired", {
                    "watches": len(connection.watchers), "silent_s": round(now - connection.last_heard, 3),
                    "request_ids": [w.request_id for w in connection.watchers.values()]}))
            for watcher in list(connection.watchers.values()):
                self._remove(watcher)

    def _progress_notify(self) -> None:
        """etcd's progress_notify: a watch that is synced and was sent no events
        since the last round gets an empty response with the current revision."""
        for watcher in self.registry.progress_watchers:
            if watcher.synced and not watcher.buffer and self.credit.window_open(watcher) and not watcher.events_since_progress:
                self._append_progress(watcher)
            watcher.events_since_progress = False

    # ------------------------------------------------------------------ bookkeeping

    def _remove(self, watcher: Watcher) -> None:
        if watcher.removed:
            return
        self.registry.remove(watcher)
        self.credit.drop(watcher)

    def stats(self) -> dict:
        """Gauges for the shell's periodic log line; peaks restart from now."""
        unsynced = sum(1 for watcher in self.registry.watchers() if not watcher.synced)
        return {
            "watchers": self.registry.count, "unsynced": unsynced, "connections": len(self.registry.connections),
            "revision": self.revision, **self.credit.stats(),
        }
