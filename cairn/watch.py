"""Watches on the client side (etcd clientv3's Watcher), resumable across members.

    with client.watch(b"config/", prefix=True, prev_kv=True) as w:
        for response in w:                  # WatchResponse, fragments reassembled
            for event in response.events:
                ...
        w.cancel()

Theory of operation
-------------------
`Client.watch` sends a WatchCreateRequest through the preferred endpoint and
returns once the member has created the watch, so whatever the application
writes next is seen. Every response of the watch arrives under the create's
request id; the transport thread hands it to Watch._on_message, which only
reassembles fragments, records how far the watch is complete and queues the
response for the iterator.

How far the watch is complete ("covered") is what makes it resumable. The hub
puts in each response's header the revision up to which the watch is complete
once that response is delivered (actors/watch_hub/units.py); created responses
of a watch from "now" give its starting point. So when the member goes away, a
new watch created elsewhere with start_revision = covered + 1 continues exactly
where the old one stopped: responses already queued are delivered, nothing is
repeated, nothing is skipped. The application sees neither the re-created
watch's created response nor the switch.

One WatchManager thread per Client does everything periodic or slow, so the
transport thread never waits and the application's thread only iterates:

* keep-alives: every KEEPALIVE_INTERVAL_S, on each endpoint where watches are
  active, a WatchKeepAlive (a WatchProgressRequest to the frontend) that tells
  the hub the client is alive and how many responses each watch has consumed.
  The same message goes out sooner when a watch has consumed
  ACK_EVERY_RESPONSES responses since its last one: that returns credit, and
  the hub sends a watch at most its window (32) of unacknowledged responses,
  so a slow application holds a bounded number of responses here and the
  member's memory stays bounded too.
* failure detection: a keep-alive the endpoint cannot take (Unavailable: not
  connected within the dial timeout) or does not answer within
  KEEPALIVE_REPLY_TIMEOUT_S, while no response of its watches arrives either,
  means the member is gone (a busy member's reply waits behind the responses
  queued before it, and those prove it alive); its watches are
  re-created through the next endpoint, round robin, with exponential back-off
  between attempts. A retryable error reply (TooManyRequests, Stopping) and a
  hub that no longer holds the watch (it restarted) do the same.
* orphans: a watch abandoned while its member may still hold it (a create
  that timed out, a member that stopped answering) is canceled there as soon
  as it is known, so it does not keep a slot on a live member.

A compacted start revision, or compaction overtaking a resumed watch, ends the
stream as etcd's does: a last response with compact_revision set and canceled.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from typing import Callable

from transport import messages as m
from transport.codec import encode
from transport.errors import CairnError, InvalidArgumentError, TimeoutError_, Unavailable, from_response

# How often each connection with watches proves the client alive. The hub drops
# a connection's watches after three silent intervals (actors/watch_hub/watchers.py).
KEEPALIVE_INTERVAL_S = 2.0
# A keep-alive unanswered for this long marks its member as gone: long enough
# for a loaded member to answer, short enough that a watch moves on quickly.
KEEPALIVE_REPLY_TIMEOUT_S = 3.0
# Responses consumed before credit is returned early: a quarter of the hub's
# window (HubLimits.window_responses = 32), so a consumer that keeps up never
# finds the window closed.
ACK_EVERY_RESPONSES = 8
# One attempt to create (or re-create) a watch on one endpoint.
CREATE_TIMEOUT_S = 3.0
RESUME_BACKOFF_S_MIN = 0.05
RESUME_BACKOFF_S_MAX = 2.0
# The manager's pace while watches exist (it also wakes at once when needed).
MANAGER_POLL_S = 0.05
# How long a cancel of an abandoned watch waits for its created response.
ORPHAN_TTL_S = 30.0
# How long cancel() waits for the member to confirm.
CANCEL_WAIT_S = 2.0

_END = object()


def is_progress_notify(response: m.WatchResponse) -> bool:
    """etcd's IsProgressNotify: no events, not created, not canceled."""
    return not response.events and not response.created and not response.canceled and not response.compact_revision


class _Responses:
    """A watch's queue of (generation, item): a deque the I/O thread appends to
    without a lock, an Event only for threads blocked in get(), and `listener`
    (if set) called after each put, so an event loop can wait for a watch's
    responses without a thread blocked in get().

    queue.Queue took its Condition on every put and every get; with 1,000
    watches in one process that was most of the client's work per response.
    No wake-up is lost: a waiter counts itself in `waiters` before it looks at
    the deque, and a put appends before it looks at `waiters`."""

    __slots__ = ("items", "waiters", "wake", "lock", "listener")

    def __init__(self):
        self.items: deque = deque()
        self.waiters = 0
        self.wake = threading.Event()
        self.lock = threading.Lock()  # only for counting waiters
        self.listener = None

    def put(self, item) -> None:
        self.items.append(item)
        if self.waiters:
            self.wake.set()
        listener = self.listener
        if listener is not None:
            listener()

    def get(self, timeout: float | None):
        """The oldest item; None if there is none within `timeout` seconds
        (0: do not wait; None: wait as long as it takes)."""
        if timeout == 0 and not self.items:
            return None  # a poll of an empty queue: no exception raised and caught per call
        try:
            return self.items.popleft()
        except IndexError:
            if timeout == 0:
                return None
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            self.waiters += 1
        try:
            while True:
                self.wake.clear()
                try:
                    return self.items.popleft()
                except IndexError:
                    pass
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self.wake.wait(remaining)
        finally:
            with self.lock:
                self.waiters -= 1
                if self.waiters and self.items:
                    self.wake.set()  # another waiter may have slept through the item this one saw

    def clear(self) -> None:
        self.items.clear()

    def __bool__(self) -> bool:
        return bool(self.items)


class Watch:
    """One watch: a context manager and an iterator of WatchResponse."""

    def __init__(self, manager: "WatchManager", request: m.WatchCreateRequest, endpoint: int):
        self._manager = manager
        self._transport = manager.transport
        self._request = request
        self._lock = threading.Lock()
        self._queue = _Responses()  # bounded by the hub's window (and one stale window)
        self._ready = threading.Event()
        self._open_error: CairnError | None = None
        self._last_error: CairnError | None = None
        self._cancel_confirmed = threading.Event()
        self._cancel_response: m.WatchResponse | None = None
        self._user_canceled = False
        self._ended = False
        self.closed = False
        # how far the watch is complete; None until a watch from "now" is created
        self.covered: int | None = request.start_revision - 1 if request.start_revision > 0 else None
        self.created_header: m.ResponseHeader | None = None
        self.resumes = 0
        # the current incarnation (one WatchCreateRequest on one endpoint)
        self.endpoint = endpoint
        self.request_id: int | None = None
        self.watch_id: int | None = None
        self.active = False
        self._generation = 0
        self._fragments: list[m.Event] = []
        self._consumed = 0
        self._acked = 0
        self._received = 0  # responses of the current incarnation: signs of its member's life
        self._received_seen = 0  # what the manager last saw of it (WatchManager._heard_from)
        self._attempt_deadline = 0.0
        self._send_future = None
        self._resume_at = 0.0
        self._backoff = RESUME_BACKOFF_S_MIN

    # ------------------------------------------------------------------ application side

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.cancel()

    def __iter__(self):
        return self

    def __next__(self) -> m.WatchResponse:
        response = self.get()
        if response is None:
            raise StopIteration
        return response

    def get(self, timeout: float | None = None) -> m.WatchResponse | None:
        """The next response; None when `timeout` seconds pass first or once the
        stream has ended (then `ended` is True)."""
        if self._ended:
            return None
        entry = self._queue.get(timeout)
        if entry is None:
            return None
        generation, item = entry
        if item is _END:
            self._ended = True
            return None
        if isinstance(item, CairnError):
            self._ended = True
            raise item
        self._count_consumed(generation, item)
        return item

    @property
    def ended(self) -> bool:
        return self._ended

    def set_listener(self, listener) -> None:
        """listener() is called, on another thread, whenever a response (or the
        end) is queued: cairn.aio wakes its event loop with it."""
        self._queue.listener = listener
        if listener is not None and self._queue:
            listener()

    def cancel(self) -> m.WatchResponse | None:
        """Cancel the watch; iteration ends. Returns the member's canceled
        response, or None if it did not confirm in time (or was gone)."""
        with self._lock:
            if self.closed:
                return None
            self.closed = self._user_canceled = True
            request_id, endpoint, watch_id, active = self.request_id, self.endpoint, self.watch_id, self.active
        if active:
            self._transport.send(endpoint, encode(m.WatchCancelRequest(watch_id), request_id), request_id)
            self._cancel_confirmed.wait(self._manager.cancel_wait_s)
        elif request_id is not None:
            self._manager.adopt_orphan(endpoint, request_id, None)  # a create in flight: cancel it once created
        if request_id is not None and active:
            self._transport.unsubscribe(request_id)
        self._manager.remove(self)
        self._drain_and_end()
        return self._cancel_response

    def request_progress(self) -> None:
        """etcd's RequestProgress: every watch on this watch's connection gets a
        progress notification (an empty response with the revision it is
        complete up to)."""
        with self._lock:
            endpoint, active = self.endpoint, self.active
        if active:
            request_id = self._transport.next_request_id()
            self._transport.send(endpoint, encode(m.WatchProgressRequest(), request_id), request_id)

    def _count_consumed(self, generation: int, response: m.WatchResponse) -> None:
        if response.created or response.canceled:
            return
        with self._lock:
            if generation != self._generation or not self.active:
                return  # credit of an abandoned incarnation is moot
            self._consumed += 1
            due = self._consumed - self._acked >= ACK_EVERY_RESPONSES
            endpoint = self.endpoint
        if due:
            self._manager.ack_soon(endpoint)

    def _drain_and_end(self) -> None:
        self._queue.clear()
        self._queue.put((0, _END))

    # ------------------------------------------------------------------ transport thread side

    def _on_message(self, request_id: int, message) -> None:
        """Called on the transport's I/O thread: sort the message and hand it on."""
        with self._lock:
            if request_id != self.request_id:
                return  # an abandoned incarnation
            self._received += 1
            if isinstance(message, m.ErrorResponse):
                self._on_error(from_response(message))
            elif not isinstance(message, m.WatchResponse):
                self._on_error(CairnError(f"unexpected {type(message).__name__} on a watch"))
            elif message.created:
                self._on_created(message)
            elif message.canceled:
                self._on_canceled(message)
            elif message.fragment:
                self._fragments.extend(message.events)
            else:
                if self._fragments:
                    message = dataclasses.replace(message, events=tuple(self._fragments) + message.events)
                    self._fragments = []
                self.covered = max(self.covered or 0, message.header.revision)
                if not self.closed:
                    self._queue.put((self._generation, message))

    def _on_created(self, message: m.WatchResponse) -> None:
        if message.canceled:  # refused (duplicate id, empty range, too many)
            error = InvalidArgumentError(message.cancel_reason or "watch refused")
            if not self._ready.is_set():
                self._open_error = error
                self._ready.set()
            else:
                self._finish(message)
            return
        self.watch_id = message.watch_id
        self.active = True
        self._backoff = RESUME_BACKOFF_S_MIN
        if self.covered is None:
            self.covered = message.header.revision  # a watch from "now" starts after this
        if self.created_header is None:
            self.created_header = message.header
        if self.closed:  # canceled while being created
            self._manager.adopt_orphan(self.endpoint, self.request_id, self.watch_id)
        self._ready.set()

    def _on_canceled(self, message: m.WatchResponse) -> None:
        if message.cancel_reason == m.WatchKeepAlive.UNKNOWN_WATCH:
            self.watch_id = None  # nothing to cancel there: its id may already be someone else's
            self._abandon("the member no longer holds the watch", same_endpoint=True)
        elif self._user_canceled:
            self._cancel_response = message
            self._cancel_confirmed.set()
        else:  # compacted, or ended by the member: the stream's last word
            self._finish(message)

    def _on_error(self, error: CairnError) -> None:
        self._last_error = error
        if error.retryable:
            self._abandon(f"member answered {error.code}")
        elif not self._ready.is_set():
            self._open_error = error
            self._ready.set()
        else:
            self._finish(error)

    def _finish(self, last) -> None:
        """The stream ends with `last` (a response or an error). Lock held."""
        self.closed = True
        self.active = False
        self._queue.put((self._generation, last))
        if not isinstance(last, CairnError):
            self._queue.put((self._generation, _END))
        self._manager.remove_soon(self)

    # ------------------------------------------------------------------ manager thread side

    def _abandon(self, reason: str, same_endpoint: bool = False) -> None:
        """Leave the current incarnation; the manager re-creates the watch from
        covered + 1 after a back-off. Lock held."""
        if self.closed or self.request_id is None:
            return
        old_request_id, old_endpoint, old_watch_id = self.request_id, self.endpoint, self.watch_id
        count = len(self._transport.endpoints)
        self.request_id = None
        self.active = False
        self.watch_id = None
        self._fragments = []
        self.endpoint = old_endpoint if same_endpoint else (old_endpoint + 1) % count
        self._resume_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, RESUME_BACKOFF_S_MAX)
        self._manager.note_abandoned(self, old_endpoint, old_request_id, old_watch_id, reason, same_endpoint)

    def _step(self, now: float) -> None:
        """Drive (re-)creation: start an attempt when due, give up on one that failed."""
        start = None
        with self._lock:
            if self.closed or self.active:
                return
            if self.request_id is not None:
                future = self._send_future
                failed = future is not None and future.done() and future.exception() is not None
                if failed:
                    self._last_error = future.exception()
                elif now < self._attempt_deadline:
                    return
                else:
                    self._last_error = TimeoutError_(f"no created response from {self._transport.endpoints[self.endpoint]}")
                self._abandon("create failed")
                return
            if now < self._resume_at:
                return
            request_id = self._transport.next_request_id()
            self.request_id = request_id
            self._generation += 1
            self._consumed = self._acked = 0
            self._received = self._received_seen = 0  # a moved watch says nothing of its new endpoint yet
            self._attempt_deadline = now + CREATE_TIMEOUT_S
            start = 0 if self.covered is None else self.covered + 1
            request = dataclasses.replace(self._request, start_revision=start)
            endpoint = self.endpoint
        self._transport.subscribe(request_id, lambda message: self._on_message(request_id, message))
        options_for = getattr(self._manager, "options_for", None)
        options = options_for(endpoint) if options_for is not None else None  # the auth token (cairn/calls.py)
        future = self._transport.send(endpoint, encode(request, request_id, options), request_id)
        with self._lock:
            if self.request_id == request_id:
                self._send_future = future

    def _keepalive_entry(self) -> tuple[int, int, int] | None:
        with self._lock:
            if not self.active or self.closed:
                return None
            self._acked = self._consumed
            return self.watch_id, self.request_id, self._consumed


class _Link:
    """Keep-alive state of one endpoint."""

    __slots__ = ("last_sent", "outstanding", "heard_at")

    def __init__(self):
        self.last_sent = 0.0
        self.outstanding: deque = deque()  # (request id, future, sent at)
        self.heard_at = 0.0  # when a response of its watches last arrived


class WatchManager:
    """The Client's watch thread (see the module docstring).

    transport: the client's TransportThread (its endpoints, its request ids, the
    frames); first_endpoint(): the index of the endpoint a new watch is created
    through (the client's preferred one); timeout: the client's default call
    timeout, which also bounds how long cancel() waits for the member."""

    def __init__(self, transport, first_endpoint: Callable[[], int], timeout: float,
                 options_for: Callable[[int], dict | None] | None = None):
        self.transport = transport
        self.options_for = options_for
        self.first_endpoint = first_endpoint
        self.cancel_wait_s = min(CANCEL_WAIT_S, timeout)
        self.lock = threading.Lock()
        self.watches: set[Watch] = set()
        self.links: dict[int, _Link] = {}
        self.acks_due: set[int] = set()
        self.finished: list[Watch] = []
        self.orphans: dict[int, tuple[int, float]] = {}  # request id -> (endpoint, expires at)
        self.orphan_cancels: deque = deque()  # (request id, watch id)
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cairn-watch", daemon=True)
        self.thread.start()

    def open(self, request: m.WatchCreateRequest, timeout: float) -> Watch:
        if self.transport.closed:
            raise Unavailable("client is closed")
        watch = Watch(self, request, self.first_endpoint())
        with self.lock:
            self.watches.add(watch)
        self.wake.set()
        if not watch._ready.wait(timeout) or watch._open_error is not None:
            error = watch._open_error or watch._last_error
            watch.cancel()
            if error is None:
                raise TimeoutError_("watch not created before the timeout")
            if isinstance(error, Unavailable) or error.retryable:
                raise Unavailable(f"no member created the watch: {error.message}")
            raise error
        return watch

    def remove(self, watch: Watch) -> None:
        with self.lock:
            self.watches.discard(watch)

    def remove_soon(self, watch: Watch) -> None:
        """From the transport thread (a watch ended): no blocking there."""
        self.finished.append(watch)
        self.wake.set()

    def ack_soon(self, endpoint: int) -> None:
        with self.lock:
            self.acks_due.add(endpoint)
        self.wake.set()

    def note_abandoned(self, watch: Watch, endpoint: int, request_id: int, watch_id, reason: str, same_endpoint: bool) -> None:
        """A watch left an incarnation (called with the watch's lock held)."""
        watch.resumes += 1
        self.adopt_orphan(endpoint, request_id, watch_id)
        self.wake.set()

    def adopt_orphan(self, endpoint: int, request_id: int, watch_id) -> None:
        """Cancel an incarnation nobody reads any more: now if its id is known,
        else when its created response arrives."""
        self.orphans[request_id] = (endpoint, time.monotonic() + ORPHAN_TTL_S)
        self.transport.subscribe(request_id, lambda message: self._orphan_message(request_id, message))
        if watch_id is not None:
            self.orphan_cancels.append((request_id, watch_id))
        self.wake.set()

    def _orphan_message(self, request_id: int, message) -> None:
        if isinstance(message, m.WatchResponse) and message.created and not message.canceled:
            self.orphan_cancels.append((request_id, message.watch_id))
            self.wake.set()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            with self.lock:
                idle = not self.watches and not self.orphans
            self.wake.wait(1.0 if idle else MANAGER_POLL_S)
            self.wake.clear()
            if self.transport.closed:
                self._end_all()
                return
            self._turn(time.monotonic())

    def _turn(self, now: float) -> None:
        # Cancels of abandoned incarnations go first: on one connection frames
        # arrive in order, so a cancel always reaches the hub before a new
        # create that might be given the same watch id.
        self._cancel_orphans(now)
        while self.finished:
            self.remove(self.finished.pop())
        with self.lock:
            watches = list(self.watches)
            acks_due, self.acks_due = self.acks_due, set()
        active: dict[int, list[Watch]] = {}
        for watch in watches:
            watch._step(now)
            if watch.active:
                active.setdefault(watch.endpoint, []).append(watch)
        for endpoint in list(self.links):
            if endpoint not in active:
                self._drop_link(endpoint)
        for endpoint, endpoint_watches in active.items():
            link = self.links.setdefault(endpoint, _Link())
            if self._heard_from(endpoint_watches):
                link.heard_at = now
            if self._link_dead(link, now):
                self._drop_link(endpoint)
                for watch in endpoint_watches:
                    with watch._lock:
                        watch._abandon("member not answering keep-alives")
                continue
            if endpoint in acks_due or now - link.last_sent >= KEEPALIVE_INTERVAL_S:
                self._send_keepalive(endpoint, link, endpoint_watches, now)
        self._cancel_orphans(now)

    @staticmethod
    def _heard_from(watches: list[Watch]) -> bool:
        """Whether a response reached any of these watches (of one endpoint)
        since the last look."""
        heard = False
        for watch in watches:
            received = watch._received
            if received != watch._received_seen:
                watch._received_seen = received
                heard = True
        return heard

    def _link_dead(self, link: _Link, now: float) -> bool:
        answered = -1
        for position, (_, future, _) in enumerate(link.outstanding):
            if future.done():
                if future.exception() is not None:
                    return True  # could not even be sent: not connected
                answered = position
        for _ in range(answered + 1):  # a reply proves every earlier keep-alive moot
            request_id, future, _ = link.outstanding.popleft()
            if not future.done():
                self.transport.forget(request_id)
        if not link.outstanding:
            return False
        return now - max(link.outstanding[0][2], link.heard_at) > KEEPALIVE_REPLY_TIMEOUT_S

    def _drop_link(self, endpoint: int) -> None:
        link = self.links.pop(endpoint, None)
        if link is not None:
            for request_id, _, _ in link.outstanding:
                self.transport.forget(request_id)

    def _send_keepalive(self, endpoint: int, link: _Link, watches: list[Watch], now: float) -> None:
        entries = [entry for entry in (watch._keepalive_entry() for watch in watches) if entry is not None]
        if not entries:
            return
        watch_ids, request_ids, consumed = zip(*entries)
        request_id = self.transport.next_request_id()
        message = m.WatchKeepAlive(int(KEEPALIVE_INTERVAL_S * 1000), watch_ids, request_ids, consumed)
        future = self.transport.submit(endpoint, encode(message, request_id), request_id)
        link.outstanding.append((request_id, future, now))
        link.last_sent = now

    def _cancel_orphans(self, now: float) -> None:
        while self.orphan_cancels:
            request_id, watch_id = self.orphan_cancels.popleft()
            orphan = self.orphans.get(request_id)
            if orphan is not None:
                self.transport.send(orphan[0], encode(m.WatchCancelRequest(watch_id), request_id), request_id)
        for request_id, (_, expires_at) in list(self.orphans.items()):
            if expires_at <= now:
                del self.orphans[request_id]
                self.transport.unsubscribe(request_id)

    def _end_all(self) -> None:
        with self.lock:
            watches, self.watches = list(self.watches), set()
        for watch in watches:
            with watch._lock:
                watch.closed = True
                watch.active = False
            watch._queue.put((0, _END))
