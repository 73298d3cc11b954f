"""Hub: the coordinator of the watch hub's parts, and what the shell calls.

It holds what every part shares: the hub's revision (every event up to it has
been seen live or is known to be in the store), the term and ids that go in
response headers, and the notes the shell logs. Client requests and the live
stream come in here and are handed to the parts (see the package docstring for
the map); frames go out through output.py.

The live stream. Live events with a revision the hub has already passed are
duplicates and are skipped. A batch whose first revision leaves a hole after
the hub's revision (the apply actor dropped a message on a full queue, or a
snapshot was installed) turns every synced watcher that needs the hole
unsynced: the store fills it. So does an elided batch: while the hub has no
watchers it tells the apply actor so (WatchInterest, from the shell) and apply
sends only the new revision; a watcher created before apply hears of it reads
those revisions from the store, like any other gap. The shell also reports the
store's revision once a second (note_store_revision), which finds a hole that
no later batch reveals.
"""

from __future__ import annotations

from actors.watch_hub.catch_up import CatchUp
from actors.watch_hub.credit import Credit
from actors.watch_hub.fanout import FanOut
from actors.watch_hub.limits import HubLimits
from actors.watch_hub.output import Outgoing, Output
from actors.watch_hub.progress import Progress
from actors.watch_hub.watchers import Connection, Registry, Watcher
from transport.messages import (
    ErrorResponse,
    Event,
    ResponseHeader,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchKeepAlive,
    WatchResponse,
)

# etcd's clientv3.InvalidWatchID: the id of a refused watch and of keep-alive replies.
INVALID_WATCH_ID = -1

REASON_COMPACTED = "etcdserver: mvcc: required revision has been compacted"
REASON_UNKNOWN = WatchKeepAlive.UNKNOWN_WATCH


class Hub:
    def __init__(self, cluster_id: int, member_id: int, revision: int, now: float, limits: HubLimits | None = None):
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.limits = limits = limits or HubLimits()
        self.term = 0
        self.revision = revision  # every event up to here has been seen live or is known to be in the store
        self.notes: list[tuple[str, dict]] = []  # for the shell to log
        self.registry = Registry(limits)
        self.credit = Credit(limits, self.registry, self._note)
        self.output = Output(self.credit, self._header)
        self.fanout = FanOut(limits, self.registry, self.credit)
        self.from_store = CatchUp(limits, self.credit, self._note, self._compacted)
        self.progress = Progress(limits, self.registry, self.credit, now)

    # ------------------------------------------------------------------ gauges

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

    def stats(self) -> dict:
        """Gauges for the shell's periodic log line; peaks restart from now."""
        unsynced = sum(1 for watcher in self.registry.watchers() if not watcher.synced)
        return {
            "watchers": self.registry.count, "unsynced": unsynced, "connections": len(self.registry.connections),
            "revision": self.revision, **self.credit.stats(),
        }

    # ------------------------------------------------------------------ client requests

    def heard(self, identity: bytes, now: float) -> Connection:
        return self.registry.heard(identity, now)

    def create(self, identity: bytes, request_id: int, request: WatchCreateRequest, store_revision: int, now: float) -> None:
        """store_revision: the store's current revision as the shell just read it
        (etcd's created header and the start of a watch from "now")."""
        connection = self.heard(identity, now)
        current = max(store_revision, self.revision)
        reason = self.registry.refusal(connection, request)
        if reason:
            self._note("watch_refused", {"request_id": request_id, "reason": reason})
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
        self._note("watch_created", {
            "request_id": request_id, "watch_id": watch_id, "start_revision": watcher.next_revision,
            "synced": watcher.synced, "revision": current})
        self.credit.schedule(watcher)

    def cancel(self, identity: bytes, request: WatchCancelRequest, now: float) -> None:
        """etcd answers a cancel of an unknown id with nothing."""
        connection = self.heard(identity, now)
        watcher = connection.watchers.get(request.watch_id)
        if watcher is None:
            self._note("cancel_unknown_watch", {"watch_id": request.watch_id})
            return
        self._remove(watcher)
        self.output.send_control(identity, watcher.request_id, WatchResponse(self._header(self.revision), watcher.watch_id, canceled=True))
        self._note("watch_canceled", {"request_id": watcher.request_id, "watch_id": watcher.watch_id})

    def request_progress(self, identity: bytes, store_revision: int, now: float) -> None:
        """etcd's RequestProgress (progress.py); store_revision as the shell just read it."""
        self.progress.request(self.heard(identity, now), store_revision, self.revision)

    def keepalive(self, identity: bytes, request_id: int, message: WatchKeepAlive, now: float) -> None:
        connection = self.heard(identity, now)
        limits = self.limits
        connection.interval_s = min(max(message.interval_ms / 1000, limits.keepalive_interval_s_min), limits.keepalive_interval_s_max)
        for watch_id, watch_request_id, consumed in zip(message.watch_ids, message.request_ids, message.consumed):
            watcher = connection.watchers.get(watch_id)
            if watcher is None or watcher.request_id != watch_request_id:
                self.output.send_control(identity, watch_request_id, WatchResponse(
                    self._header(self.revision), watch_id, canceled=True, cancel_reason=REASON_UNKNOWN))
                self._note("keepalive_unknown_watch", {"watch_id": watch_id, "request_id": watch_request_id})
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
                    self.progress.answer_pending(self.revision)
            return
        if events:
            first = events[0].kv.mod_revision
            if first > self.revision + 1:
                self._gap(first - 1, "events_missing")
            revision = max(revision, events[-1].kv.mod_revision)
        if revision <= self.revision:
            return  # nothing new: a duplicate, or a batch the store already filled in
        previous, self.revision = self.revision, revision
        self.fanout.deliver(events, previous, revision)
        self.progress.answer_pending(self.revision)

    def on_event_batches(self, batches: list[tuple[int, tuple[Event, ...], bool]]) -> None:
        """The AppliedEvents of one turn of the shell, as (revision, events,
        elided), in arrival order: those that continue each other exactly are
        one batch (continuous, below), so a busy hub builds and sends each
        watcher one unit per turn instead of one per message."""
        for revision, events, elided in continuous(batches):
            self.on_events(revision, events, elided)

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
        self._note("live_gap", {"reason": reason, "from_revision": self.revision + 1, "to_revision": upto, "watchers": turned})
        self.revision = max(self.revision, upto)
        self.progress.answer_pending(self.revision)

    # ------------------------------------------------------------------ catching up from the store

    def has_catch_up(self) -> bool:
        return bool(self.credit.lagging)

    def catch_up(self, read) -> int:
        """Serve lagging watchers from the store (catch_up.py): read(start_revision,
        key, range_end, max_events, prev_kv) -> (events, next_revision), as
        Reader.events_since; it may raise CompactedError. Returns reads made."""
        return self.from_store.serve(read, self.revision)

    def _compacted(self, watcher: Watcher, compact_revision: int) -> None:
        """etcd: a watch whose next revision is compacted gets compact_revision
        with canceled set, and is gone."""
        self._remove(watcher)
        self.output.send_control(watcher.connection.identity, watcher.request_id, WatchResponse(
            self._header(self.revision), watcher.watch_id, canceled=True, compact_revision=compact_revision,
            cancel_reason=REASON_COMPACTED))
        self._note("watch_compacted", {
            "request_id": watcher.request_id, "watch_id": watcher.watch_id, "compact_revision": compact_revision})

    # ------------------------------------------------------------------ output

    def has_output(self) -> bool:
        return self.output.has_output()

    def take_output(self, max_bytes: int) -> Outgoing | None:
        """Frames for one message to the frontend, about max_bytes (output.py)."""
        return self.output.take(max_bytes)

    def requeue(self, out: Outgoing) -> None:
        """The message could not be queued: put everything back in order."""
        self.output.requeue(out)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        self._expire_connections(now)
        self.progress.tick(now, self.revision)

    def _expire_connections(self, now: float) -> None:
        for connection in self.registry.expire(now):
            if connection.watchers:
                self._note("connection_expired", {
                    "watches": len(connection.watchers), "silent_s": round(now - connection.last_heard, 3),
                    "request_ids": [w.request_id for w in connection.watchers.values()]})
            for watcher in list(connection.watchers.values()):
                self._remove(watcher)

    # ------------------------------------------------------------------ shared by the parts

    def _remove(self, watcher: Watcher) -> None:
        if watcher.removed:
            return
        self.registry.remove(watcher)
        self.credit.drop(watcher)

    def _header(self, revision: int) -> ResponseHeader:
        return ResponseHeader(self.cluster_id, self.member_id, revision, self.term)

    def _note(self, event: str, fields: dict) -> None:
        self.notes.append((event, fields))


def continuous(batches: list[tuple[int, tuple[Event, ...], bool]]) -> list[tuple[int, list[Event], bool]]:
    """Live batches, (revision, events, elided), joined where one continues the
    last exactly: its first event is the revision right after the last's, or it
    has no events. Anything else (an elided batch, a hole, a duplicate) stays a
    batch of its own, so on_events sees holes and duplicates as before, and
    the joined batch gives every watcher the same events in the same order."""
    joined: list[tuple[int, list[Event], bool]] = []
    for revision, events, elided in batches:
        if events:
            revision = max(revision, events[-1].kv.mod_revision)
        if joined and not elided and not joined[-1][2]:
            last_revision, last_events, _ = joined[-1]
            if not events or events[0].kv.mod_revision == last_revision + 1:
                last_events.extend(events)
                joined[-1] = (max(last_revision, revision), last_events, False)
                continue
        joined.append((revision, list(events), elided))
    return joined
