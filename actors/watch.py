"""The watch actor: the member's watch hub, serving etcd's Watch service.

Theory of operation
-------------------
A thin shell around actors.watch_hub.Hub, whose package holds every rule
(ordering, history replay and its seam with the live stream, filters,
fragments, progress, credit-based flow control, slow watchers, dead clients);
read its docstring first (actors/watch_hub/__init__.py, with a map of the
parts). This module only does the I/O, in the actor loop's rhythm:

* inbox (ipc PULL): AppliedEvents from apply (every committed batch's events,
  in revision order) go to the hub once per loop turn, and while they flow
  fast at most once per feed_interval_ms (actors/watch_hub/pacing.py), always
  before the next client request (Hub.on_event_batches joins those that
  continue each other); RaftStatus gives the term for
  headers; ClientRequests from the frontend carry client frames, each decoded
  here and handed to the hub with the client's ROUTER identity.
* store (LMDB, read-only): a watch created at a past revision, or a watcher
  that fell behind, catches up through Reader.events_since. Each loop turn runs
  at most catch_up_reads_per_turn bounded reads in ONE short read transaction,
  so LMDB can reuse freed pages and apply is never held up.
* frontend (ipc PUSH): the hub's frames, as ClientReplies of about
  replies_message_bytes each (WatchLimits), sent NOBLOCK. zmq.Again means the frontend is
  behind: the frames go back into the hub (requeue) and the hub's bounded
  buffers decide what a watcher that falls too far behind reads from the store
  instead. Nothing waits, nothing is dropped silently.
* apply (ipc PUSH): WatchInterest, whether the hub has watchers, on change
  and every interest_repeat_s; without watchers apply sends only revisions.
* timers: connection expiry and progress notifications (Hub.tick), a check of
  the store's revision against the live stream every gap_check_s (an
  AppliedEvents message lost on a full queue is found even if no later one
  arrives), and a stats line every stats_log_s that shows the buffers' peaks.

Any member serves watches from its own applied state, followers included.
"""

from __future__ import annotations

import math
import time

from actors.base import Actor
from actors.watch_hub import Hub, HubLimits
from actors.watch_hub.pacing import Pacing
from store.environment import open_kv
from store.mvcc import KeySpace
from transport import codec
from transport.errors import CairnError, MalformedRequestError
from transport.limits import holds, limit, limits, positive
from transport.messages import (
    AppliedEvents,
    KeyspaceReplaced,
    ClientReplies,
    ClientRequests,
    RaftStatus,
    ResponseHeader,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchKeepAlive,
    WatchProgressRequest,
    WatchInterest,
)
from transport.sockets import inbox, outbox


@limits(
    holds(lambda l: l.replies_hwm >= l.replies_messages_per_turn, "one turn's replies fit the queue"),
    positive("blocked_retry_ms"),
    positive("gap_check_s", "interest_repeat_s", "stats_log_s"),
    holds(lambda l: l.feed_interval_ms >= 0, "an interval (0: every turn)"),
)
class WatchLimits:
    """The watch actor's own bounds and periods, each with its reason; the
    hub's are HubLimits (actors/watch_hub/limits.py)."""

    replies_message_bytes: int = limit(
        1024 * 1024,
        "Bytes of client frames per ClientReplies message: the frontend relays each message in one go, so this bounds "
        "the time one message holds it.")
    replies_messages_per_turn: int = limit(
        16,
        "Messages sent to the frontend per loop turn before the inbox is read again.")
    replies_hwm: int = limit(
        64,
        "Messages this actor queues towards the frontend (the frontend's inbox keeps its own high-water mark): small, "
        "so a frontend that falls behind shows up as zmq.Again soon and the hub's bounded buffers (and the store) "
        "take over.")
    blocked_retry_ms: int = limit(
        10,
        "After a full queue to the frontend, wait this long before trying again rather than spinning.")
    gap_check_s: float = limit(
        1.0,
        "How often the store's revision is compared with the live stream's. One interval is also the grace an "
        "AppliedEvents message has to arrive.")
    interest_repeat_s: float = limit(
        2.0,
        "How often apply is reminded whether the hub has watchers (WatchInterest).")
    stats_log_s: float = limit(
        1.0,
        "How often a line of gauges is logged while there are watchers.")
    feed_interval_ms: int = limit(
        30,
        "While events keep coming, the hub is handed the live stream at most this often (actors/watch_hub/pacing.py): "
        "fan-out costs per watcher per batch on the hub and on every client, so fewer, larger batches are what lets "
        "a thousand watchers keep up with a thousand puts a second (docs/PERFORMANCE.md, round 3: 0, 20 and 40 ms "
        "measured). It is also the most a live event waits here.")


# Requests answered as of the store's current revision (read once per batch).
WATCH_REQUESTS_AT_A_REVISION = (WatchCreateRequest, WatchProgressRequest)


def hub_limits(socket_hwm: int) -> HubLimits:
    """The frontend's ROUTER drops frames to a client whose pipe holds
    socket_hwm of them. A connection's watches together may have
    window_responses each unacknowledged, so their number is capped to keep all
    of them within half that pipe (the other half is for other replies)."""
    window = HubLimits().window_responses
    return HubLimits(max_watches_per_connection=max(1, socket_hwm // (2 * window)))


class WatchActor(Actor):
    name = "watch"
    watch_limits = WatchLimits()

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.inbox = inbox(self.context, self.data_dir, "watch", self.limits.socket_hwm)
        self.to_frontend = outbox(self.context, self.data_dir, "frontend", self.watch_limits.replies_hwm)
        self.to_apply = outbox(self.context, self.data_dir, "apply", self.limits.socket_hwm)
        self.metrics_outbox = self.to_frontend
        self.interest_sent: bool | None = None  # what apply was last told
        self.interest_due = 0.0
        self.env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        self.keyspace = KeySpace(self.env)
        now = time.monotonic()
        revision = self.store_revision()
        self.hub = Hub(config.id, self.member.id, revision, now, hub_limits(self.limits.socket_hwm))
        self.blocked_until = 0.0
        self.applied: list[tuple] = []  # AppliedEvents not yet handed to the hub
        self.pacing = Pacing(self.watch_limits.feed_interval_ms / 1000)
        self.gap_check_at = now + self.watch_limits.gap_check_s
        self.store_revision_seen = revision
        self.stats_at = now + self.watch_limits.stats_log_s
        self.add_inbox(self.inbox)
        self.on_message(AppliedEvents, self.on_applied_events)
        self.on_message(ClientRequests, self.on_client_requests)
        self.on_message(RaftStatus, lambda status: self.hub.set_term(status.term))
        self.on_message(KeyspaceReplaced, self.on_keyspace_replaced)
        self.log.info("watch_hub_started", revision=revision)

    def on_keyspace_replaced(self, message: KeyspaceReplaced) -> None:
        """A defragment replaced the keyspace file: read the new one from now on
        (no read transaction outlives a handler here)."""
        if message.error:
            return  # the defragment failed: the file was not replaced
        # close first: a second defragment may already have given the new lock
        # file the inode of the one the old environment holds (LMDB refuses that)
        self.env.close()
        self.env = open_kv(self.data_dir, self.settings.kv_map_bytes)
        self.keyspace = KeySpace(self.env)

    def store_revision(self) -> int:
        with self.env.begin() as txn:
            return self.keyspace.current_revision(txn)

    # ------------------------------------------------------------------ input

    def on_applied_events(self, message: AppliedEvents) -> None:
        """Kept until the turn's end, or longer while events flow fast
        (pacing.py), but never past the next client request, so requests and
        events reach the hub in the order they came: the hub joins the batches
        that continue each other (Hub.on_event_batches)."""
        self.applied.append((message.revision, message.events, message.elided))

    def feed_applied(self, now: float) -> None:
        if self.applied:
            applied, self.applied = self.applied, []
            self.hub.on_event_batches(applied)
            self.pacing.fed(now)

    def on_client_requests(self, message: ClientRequests) -> None:
        now = time.monotonic()
        self.feed_applied(now)
        store_revision = None  # read once per batch, only if a request needs it
        for identity, frame in zip(message.identities, message.frames):
            try:
                request_id, request = codec.decode(frame)
            except CairnError as error:  # the frontend validated it; a bug or a newer client
                self.hub.reply_error(identity, codec.peek_request_id(frame), error.to_response())
                continue
            if isinstance(request, WatchKeepAlive):
                self.hub.keepalive(identity, request_id, request, now)
                continue
            if isinstance(request, WATCH_REQUESTS_AT_A_REVISION) and store_revision is None:
                store_revision = self.store_revision()
            if isinstance(request, WatchCreateRequest):
                self.hub.create(identity, request_id, request, store_revision, now)
            elif isinstance(request, WatchCancelRequest):
                self.hub.cancel(identity, request, now)
            elif isinstance(request, WatchProgressRequest):
                self.hub.request_progress(identity, store_revision, now)
            else:
                error = MalformedRequestError(f"{type(request).__name__} is not a watch request")
                self.hub.reply_error(identity, request_id, error.to_response())

    # ------------------------------------------------------------------ work and output

    def timeout_ms(self) -> int:
        if self.hub.has_catch_up():
            return 0
        now = time.monotonic()
        timeout = self.settings.tick_ms
        if self.applied:
            timeout = math.ceil(self.pacing.wait_s(now) * 1000)
        if self.hub.has_output():
            timeout = min(timeout, self.watch_limits.blocked_retry_ms if now < self.blocked_until else 0)
        return timeout

    def on_batch_end(self) -> None:
        now = time.monotonic()
        if self.pacing.due(now):
            self.feed_applied(now)
        self.log_notes()
        if self.hub.has_catch_up():
            self.catch_up()
        self.flush()
        self.tell_interest(time.monotonic())

    def tell_interest(self, now: float) -> None:
        """Tell apply whether we have watchers when that changes, and again every
        interest_repeat_s (apply restarts assuming we do; a lost message is only
        a cost either way: events we do not need, or a gap the store fills)."""
        watching = self.hub.watcher_count > 0
        if watching == self.interest_sent and now < self.interest_due:
            return
        if watching != self.interest_sent:
            self.log.info("watch_interest", watching=watching, revision=self.hub.revision)
        self.interest_sent = watching
        self.interest_due = now + self.watch_limits.interest_repeat_s
        self.send(self.to_apply, WatchInterest(watching))

    def catch_up(self) -> None:
        header = ResponseHeader(self.config.id, self.member.id, 0, self.hub.term)
        records = self.hub.limits.catch_up_records
        with self.env.begin() as txn:
            reader = self.keyspace.reader(txn, header)

            def read(start_revision, key, range_end, max_events, prev_kv):
                return reader.events_since(start_revision, key, range_end, max_events, prev_kv, records)

            reads = self.hub.catch_up(read)
        if reads:
            self.log.debug("caught_up", reads=reads, revision=self.hub.revision)
        self.log_notes()

    def flush(self) -> None:
        if not self.hub.has_output() or time.monotonic() < self.blocked_until:
            return
        for _ in range(self.watch_limits.replies_messages_per_turn):
            out = self.hub.take_output(self.watch_limits.replies_message_bytes)
            if out is None:
                return
            if not self.send(self.to_frontend, ClientReplies(tuple(out.identities), tuple(out.frames)),
                             on_full=lambda: self.blocked(out)):
                return

    def blocked(self, out) -> None:
        """The frontend is behind: the hub takes the frames back, its bounded
        buffers decide what a slow watcher reads from the store instead."""
        self.hub.requeue(out)
        self.blocked_until = time.monotonic() + self.watch_limits.blocked_retry_ms / 1000
        self.log.warning("frontend_queue_full", frames=len(out.frames), bytes=out.bytes)

    # ------------------------------------------------------------------ timers

    def collect_metrics(self) -> None:
        self.metrics.gauge("etcd_debugging_mvcc_watcher_total").value = self.hub.watcher_count
        self.metrics.gauge("etcd_debugging_mvcc_watch_stream_total").value = len(self.hub.connections)

    def on_timer(self, now: float) -> None:
        self.hub.tick(now)
        if now >= self.gap_check_at:
            self.gap_check_at = now + self.watch_limits.gap_check_s
            # What the store held one interval ago must have arrived live by now.
            self.feed_applied(now)
            self.hub.note_store_revision(self.store_revision_seen)
            self.store_revision_seen = self.store_revision()
        if now >= self.stats_at:
            self.stats_at = now + self.watch_limits.stats_log_s
            if self.hub.watcher_count or self.hub.buffered_bytes:
                self.log.info("watch_stats", **self.hub.stats())
        self.log_notes()
        self.flush()
        self.tell_interest(now)

    def log_notes(self) -> None:
        notes, self.hub.notes = self.hub.notes, []
        for event, fields in notes:
            self.log.info(event, **fields)

    # The hub holds no request awaiting an answer: a create is answered at once,
    # and a watch is a stream the client library resumes on another member
    # from its last revision when this connection goes. So answer_pending is
    # the base's (nothing to answer).

    def release(self) -> None:
        self.env.close()
