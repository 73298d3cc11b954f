"""The client's I/O thread: owns every ZeroMQ socket of one Client.

Theory of operation
-------------------
ZeroMQ sockets must not be shared between threads, and a Client must be usable
from many. So callers never touch a socket: `submit` puts (endpoint, frame) on a
queue, wakes the I/O thread through an eventfd (cairn/wakeup.py), and returns
a Future. The thread sends on one DEALER per endpoint and routes each reply to
its Future by request id, so many requests are in flight at once over one
connection.

DEALER sockets use ZMQ_IMMEDIATE: a frame is only queued to a completed
connection. A request for an endpoint that does not connect within
dial_timeout fails with Unavailable, and it provably never left this process,
so the caller may send it elsewhere. In a client of several endpoints, an
endpoint known to be down (its last connection attempt was refused, or its
connection dropped, and none has succeeded since: the socket monitor's
events) fails such a request at once instead: a killed member would otherwise
cost every request that lands on it its whole dial_timeout (or its call's
whole timeout, when that is shorter), when the next member could answer in a
millisecond. A client of one endpoint has nowhere else to go, nor has a call
for one member (`endpoint=`), so such a request still waits for the
connection and leaves the moment it is made.

A request that did leave, on a connection that then drops (the member died or
restarted its frontend), will never be answered: a socket monitor sees the
disconnection and fails such requests at once with ConnectionLostError, rather
than leaving them to wait out their deadline. The client then treats them as
it treats a request that timed out after being sent: a read is sent again, a
write's outcome is unknown.

With CURVE (transport/curve.py) each DEALER is a CURVE client of its member's
public key. ZeroMQ hides a failed handshake (the connection just never
completes), so the same monitor watches the handshakes too and turns a failure
into AuthenticationFailed for every request waiting for that endpoint, at once:
the member refused this client's key, the member is plaintext (or this client
is and the member is not), or the member closed the connection during the
handshake twice in a row, which is what it does to a client holding another
key as its public key. Requests to a refused endpoint then fail at once; after
auth_retry_s the next request tries a fresh connection, so a member whose keys
are fixed is reachable again without restarting the client.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from concurrent.futures import Future

import zmq
from zmq.utils.monitor import parse_monitor_message

from cairn.wakeup import Wakeup
from transport import codec
from transport.curve import ClientCurve, handshake_error_text, make_client
from transport.errors import AuthenticationFailed, CairnError, ConnectionLostError, MalformedRequestError, Unavailable
from transport.limits import holds, limit, limits, positive
from transport.messages import RangeChunk, RangeResponse, WatchResponse, WatchResponses
from transport.sockets import EVENTS, NOBLOCK, POLLIN


@limits(
    positive("poll_ms", "auth_retry_s", "cut_off_handshakes"),
    holds(lambda l: l.heartbeat_timeout_ms >= 2 * l.heartbeat_ivl_ms, "one late heartbeat must not close a connection"),
)
class TransportLimits:
    """The I/O thread's own periods, each with its reason (a Client's sizes and
    timeouts are its constructor's arguments)."""

    poll_ms: int = limit(
        50,
        "The longest the thread sleeps in poll when nothing wakes it: bounds how soon a request waiting for its "
        "connection goes once the connection is made, and how late its dial_timeout is noticed.")
    heartbeat_ivl_ms: int = limit(
        1000,
        "ZMTP heartbeats on every connection: an idle connection to a member that died (or a network that dropped it) "
        "is closed within heartbeat_timeout_ms, and ZMQ_IMMEDIATE then fails new requests to it at once instead of "
        "queueing them.")
    heartbeat_timeout_ms: int = limit(
        3000,
        "How long a connection may go without a heartbeat's answer.")
    auth_retry_s: float = limit(
        1.0,
        "After a failed CURVE handshake, requests to that endpoint fail at once for this long; the first one after it "
        "tries a new connection.")
    cut_off_handshakes: int = limit(
        2,
        "Handshakes the member must cut off in a row before the client concludes its key is not the one the client "
        "holds (one may be a member stopping).")


MONITOR_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                  | zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED)


class TransportThread:
    limits = TransportLimits()

    def __init__(self, endpoints: list[str], dial_timeout: float, max_receive_bytes: int, curve: ClientCurve | None = None):
        self.endpoints = list(endpoints)
        self.curve = curve
        # endpoint index -> (AuthenticationFailed, when; None: for good); I/O thread only
        self.refused: dict[int, tuple[AuthenticationFailed, float | None]] = {}
        self.cut_off: dict[int, int] = {}  # endpoint index -> handshakes cut off in a row
        self.down: set[int] = set()  # endpoints refused or dropped since their last connection; I/O thread only
        self.dial_timeout = dial_timeout
        self.max_receive_bytes = max_receive_bytes
        self.context = zmq.Context()
        self.submissions = deque()
        self.pending: dict[int, Future] = {}
        self.sent: set[int] = set()  # request ids that left this process
        self.sent_on: dict[int, int] = {}  # request id -> the endpoint it left on, while unanswered
        self.chunks: dict[int, list] = {}  # request id -> kvs of a large range so far
        self.streams: dict[int, object] = {}  # request id -> callback(message) for streamed replies
        self.lock = threading.Lock()
        self.request_ids = itertools.count(int.from_bytes(os.urandom(6), "big") << 12)
        self.wakeup = Wakeup()
        self.wake_lock = threading.Lock()
        self.closed = False
        self.new_endpoints: deque[str] = deque(self.endpoints)  # the I/O thread connects these
        self.thread = threading.Thread(target=self._run, name="cairn-client-io", daemon=True)
        self.thread.start()
        self.thread_id = self.thread.ident

    def add_endpoint(self, address: str) -> int:
        """Connect to one more endpoint (endpoint discovery); returns its index."""
        with self.lock:
            if address in self.endpoints:
                return self.endpoints.index(address)
            if self.curve is not None and self.curve.server_key(address) is None:
                return -1  # discovered, but this client has no key for it: not used
            self.endpoints.append(address)
            self.new_endpoints.append(address)
            index = len(self.endpoints) - 1
        self._wake()
        return index

    def next_request_id(self) -> int:
        return next(self.request_ids) & ((1 << 64) - 1)

    def submit(self, endpoint: int, frame: bytes, request_id: int, resolve_on_send: bool = False,
               may_go_elsewhere: bool = True) -> Future:
        """Queue a frame for the I/O thread. The Future resolves with the reply
        (or, with resolve_on_send, with None as soon as the frame is sent: its
        replies go to a subscription). may_go_elsewhere=False: the caller will
        not send it to another endpoint (a call for one member), so it waits
        for a connection to an endpoint known to be down as a client of one
        endpoint does, rather than failing at once."""
        future: Future = Future()
        key = (request_id, "send") if resolve_on_send else request_id
        with self.lock:
            self.pending[key] = future
        self.submissions.append((endpoint, frame, key, time.monotonic() + self.dial_timeout, may_go_elsewhere))
        if threading.get_ident() == self.thread_id and not self.closed:
            # A callback of a reply (a closed-loop caller issuing its next request)
            # runs on the I/O thread, which sends what was submitted before it
            # polls again: no wake-up through the eventfd to itself.
            return future
        if not self._wake():
            with self.lock:
                ours = self.pending.pop(key, None) is not None  # else close() already failed it
            if ours:
                future.set_exception(Unavailable("client is closed"))
        return future

    def _wake(self, closing: bool = False) -> bool:
        """Wake the I/O thread; False if the client is closed. The closed flag,
        the wake-up and the I/O thread's teardown of the wakeup all happen under
        wake_lock, so no thread ever writes to an fd that is closed (its number
        may belong to another file by then)."""
        with self.wake_lock:
            if self.closed:
                return False
            self.closed = closing
            self.wakeup.wake()
            return True

    def subscribe(self, request_id: int, callback) -> None:
        """Every reply under request_id goes to callback(message) (called on the
        I/O thread: it must only hand the message on, e.g. to a queue) instead of
        resolving a Future. Used by watches and keep-alive streams."""
        with self.lock:
            self.streams[request_id] = callback

    def unsubscribe(self, request_id: int) -> None:
        with self.lock:
            self.streams.pop(request_id, None)

    def send(self, endpoint: int, frame: bytes, request_id: int) -> Future:
        """Send a frame whose replies go to a subscription; the Future resolves
        with None once sent, or fails with Unavailable if it cannot be."""
        return self.submit(endpoint, frame, request_id, resolve_on_send=True)

    def forget(self, request_id: int) -> bool:
        """Stop waiting for request_id; True if its frame had already been sent
        (so a write's outcome is unknown), False if it never left this process."""
        with self.lock:
            self.pending.pop(request_id, None)
            self.chunks.pop(request_id, None)
            was_sent = request_id in self.sent
            self.sent.discard(request_id)
            self.sent_on.pop(request_id, None)
        return was_sent

    def close(self) -> None:
        if not self._wake(closing=True):
            return
        self.thread.join(timeout=5)
        with self.lock:
            pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(Unavailable("client closed"))

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        dealers = self.dealers = []
        monitors = self.monitors = {}  # monitor socket -> endpoint index
        poller = self.poller = zmq.Poller()
        wake_fd = self.wakeup.fileno()
        poller.register(wake_fd, zmq.POLLIN)
        unsent: deque = deque()
        try:
            while not self.closed:
                events = dict(poller.poll(self.limits.poll_ms))
                if wake_fd in events:
                    self.wakeup.drain()
                while self.new_endpoints:
                    dealers.append(None)
                    self._open(len(dealers) - 1, self.new_endpoints.popleft())
                for monitor, endpoint in list(monitors.items()):
                    if monitor in events:
                        self._on_monitor(monitor, endpoint)
                unsent = self._send_submitted(dealers, unsent)
                for socket in dealers:
                    if socket in events:
                        self._receive_all(socket)
                if self.submissions:  # submitted meanwhile; a reply's callback on this thread did not wake it
                    unsent = self._send_submitted(dealers, unsent)
        finally:
            for monitor in monitors:
                monitor.close(linger=0)
            for socket in dealers:
                socket.close(linger=0)
            with self.wake_lock:
                self.closed = True  # also when the loop died of an error: submits fail, not crash
                self.wakeup.close()
            self.context.term()

    def _open(self, index: int, address: str) -> None:
        """The DEALER of endpoint `index` and its monitor (replacing any before)."""
        old = self.dealers[index]
        if old is not None:
            for monitor, endpoint in list(self.monitors.items()):
                if endpoint == index:
                    self.poller.unregister(monitor)
                    del self.monitors[monitor]
                    monitor.close(linger=0)
            self.poller.unregister(old)
            old.close(linger=0)
        self.down.discard(index)  # a new socket: its own events will tell
        socket = self.dealers[index] = self._dealer(address, index)
        self.poller.register(socket, zmq.POLLIN)
        monitor = socket.get_monitor_socket(MONITOR_EVENTS, addr=f"inproc://cairn-client-monitor-{id(self)}-{id(socket)}")
        self.monitors[monitor] = index
        self.poller.register(monitor, zmq.POLLIN)

    def _dealer(self, endpoint: str, index: int):
        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.IMMEDIATE, 1)
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.HEARTBEAT_IVL, self.limits.heartbeat_ivl_ms)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, self.limits.heartbeat_timeout_ms)
        if self.curve is not None:
            server_key = self.curve.server_key(endpoint)
            if server_key is None:
                self.refused[index] = (AuthenticationFailed(
                    f"no public key for the member at {endpoint}: this client was given keys for "
                    f"{', '.join(sorted(self.curve.server_keys)) or 'no endpoint'}", endpoint=endpoint), None)
                return socket  # never connected
            make_client(socket, self.curve.keys, server_key)
        socket.connect(endpoint)
        return socket

    def _send_all(self, dealers, unsent: deque) -> deque:
        still_unsent = deque()
        now = time.monotonic()
        for item in unsent:
            endpoint, frame, request_id, deadline, may_go_elsewhere = item
            if endpoint in self.refused:
                error, when = self.refused[endpoint]
                if when is None or now - when < self.limits.auth_retry_s:
                    self._resolve(request_id, error=error)
                    continue
                del self.refused[endpoint]  # time to try a new connection
                self._open(endpoint, self.endpoints[endpoint])
            with self.lock:
                if request_id not in self.pending:
                    continue  # the caller gave up
                try:
                    dealers[endpoint].send(frame, NOBLOCK)
                except zmq.Again:
                    pass
                else:
                    if type(request_id) is tuple:  # a stream's frame: done once sent
                        self.pending.pop(request_id).set_result(None)
                    else:
                        self.sent.add(request_id)
                        self.sent_on[request_id] = endpoint
                    continue
            if now < deadline and not (endpoint in self.down and may_go_elsewhere and len(self.endpoints) > 1):
                still_unsent.append(item)
            else:
                address = self.endpoints[endpoint]
                self._resolve(request_id, error=Unavailable(f"cannot connect to {address}", endpoint=address))
        return still_unsent

    def _send_submitted(self, dealers, unsent: deque) -> deque:
        """Send what was submitted, after what still waits; returns what waits on."""
        while self.submissions:
            unsent.append(self.submissions.popleft())
        if not unsent:
            return unsent  # a turn that only brought replies: nothing to look at
        return self._send_all(dealers, unsent)

    def _receive_all(self, socket) -> None:
        """Read what socket holds, but after a stream's message (a watch's)
        leave as soon as something waits to be sent: the loop sends it and
        comes back (poll finds the rest at once). A watch's keep-alive returns
        the credit its member needs to send more; queued behind a burst of
        watch responses it made the member hold events for the length of the
        burst (round 3 of the fan-out work in docs/PERFORMANCE.md: keep-alives
        waited up to ~1 s here). Replies to calls are all read first: each
        frees a caller who sends again at once, and leaving after each one
        sent those one at a time (256 concurrent linearizable gets fell from
        ~14,000/s to ~6,000/s, the frontend seeing one request per turn).
        It stops when ZMQ_EVENTS says nothing more is queued, as
        transport/sockets.py's drain does: raising zmq.Again to end a turn of
        one reply cost more than the check, on the caller's path."""
        receive, option = socket.recv, socket.get
        while True:
            try:
                frame = receive(NOBLOCK)
            except zmq.Again:  # nothing was queued (poll's readiness was stale)
                return
            if self._on_frame(frame) and self.submissions:
                return
            if not option(EVENTS) & POLLIN:
                return

    def _on_frame(self, frame: bytes) -> bool:
        """One reply: to its Future, its stream, or a large range's chunks.
        True if it went to a stream (a watch's traffic)."""
        try:
            request_id, message = codec.decode(frame, self.max_receive_bytes)
        except CairnError as error:
            request_id = codec.peek_request_id(frame)
            self._resolve(request_id, error=MalformedRequestError(f"bad reply from server: {error.message}"))
            return False
        if type(message) is WatchResponses:
            self._split(message)
            return True
        with self.lock:
            stream = self.streams.get(request_id)
        if stream is not None:
            stream(message)
            return True
        if type(message) is RangeChunk:
            with self.lock:
                if request_id in self.pending:
                    self.chunks.setdefault(request_id, []).extend(message.kvs)
            return False
        self._resolve(request_id, result=message)
        return False

    def _split(self, message: WatchResponses) -> None:
        """One response several watches are due: each gets it as if it had
        come alone (the events are decoded once and shared)."""
        r = message.response
        with self.lock:
            streams = [self.streams.get(request_id) for request_id in message.request_ids]
        for stream, watch_id in zip(streams, message.watch_ids):
            if stream is not None:
                stream(WatchResponse(r.header, watch_id, r.created, r.canceled, r.compact_revision, r.cancel_reason,
                                     r.fragment, r.events))

    def _on_monitor(self, monitor, endpoint: int) -> None:
        """Connection events of `endpoint`: a drop, or a CURVE handshake's outcome."""
        disconnected = False
        try:
            while True:
                event, value = self._event(monitor.recv_multipart(zmq.NOBLOCK))
                if event == zmq.EVENT_DISCONNECTED:
                    disconnected = True
                    self.down.add(endpoint)
                elif event == zmq.EVENT_CONNECT_RETRIED:
                    self.down.add(endpoint)
                elif event == zmq.EVENT_CONNECTED:
                    self.down.discard(endpoint)
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self.cut_off.pop(endpoint, None)
                elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                    self.cut_off[endpoint] = self.cut_off.get(endpoint, 0) + 1
                    if self.cut_off[endpoint] >= self.limits.cut_off_handshakes:
                        self._refuse(endpoint, event, value)
                elif event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                    self._refuse(endpoint, event, value)
        except zmq.Again:
            pass
        if disconnected:
            self._on_disconnected(endpoint)

    @staticmethod
    def _event(parts: list[bytes]) -> tuple[int, int]:
        """(event, value) of a monitor message."""
        event = parse_monitor_message(parts)
        return event["event"], event["value"]

    def _refuse(self, endpoint: int, event: int, value: int) -> None:
        """The handshake with `endpoint` failed: its waiting requests fail now (in _send_all)."""
        address = self.endpoints[endpoint]
        public = self.curve.keys.public if self.curve is not None else None
        text = handshake_error_text(event, value, address, self.curve is not None, public)
        self.refused[endpoint] = (AuthenticationFailed(text, endpoint=address), time.monotonic())
        self.cut_off.pop(endpoint, None)

    def _on_disconnected(self, endpoint: int) -> None:
        """The connection to `endpoint` dropped: what was sent on it and not yet
        answered never will be."""
        with self.lock:
            lost = [request_id for request_id, on in self.sent_on.items() if on == endpoint]
        address = self.endpoints[endpoint]
        for request_id in lost:
            self._resolve(request_id, error=ConnectionLostError(f"connection to {address} lost", endpoint=address))

    def _resolve(self, request_id: int, result=None, error=None) -> None:
        with self.lock:
            future = self.pending.pop(request_id, None)
            self.sent.discard(request_id)
            self.sent_on.pop(request_id, None)
            chunks = self.chunks.pop(request_id, None)
        if future is None or future.done():
            return
        if chunks and type(result) is RangeResponse:
            result = RangeResponse(result.header, tuple(chunks) + result.kvs, result.more, result.count)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
