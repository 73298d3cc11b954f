"""The actor loop every cairn actor process runs.

Theory of operation
-------------------
An actor is a short receive loop (after pykka's _actor.py): poll its sockets with
a timeout of at most one tick, drain everything queued on each readable socket
(up to a limit) and hand it to the actor as one batch, then let the actor flush
what the batch produced (one LMDB transaction, one fsync, one message per peer)
and run its timers. The loop, not the actor, owns process concerns: the process
title `ps` shows, dying with the supervisor, signals, and logging of a crash.

Every actor has the same parts, so a change to how actors talk lands here:
* an inbox whose frames are decoded once and dispatched by message type to
  the handlers the actor registered (`on_message`); a bad frame is logged and
  counted, an unexpected type logged, and neither stops the actor;
* one way to send to another actor (`send`), with the policy for a full
  queue stated by the caller: answer what the message carried, or drop it
  because its protocol recovers;
* the member's CURVE keys (transport/curve.py) for the doors it serves
  (`serve_curve`) and the members it connects to (`connect_curve`,
  `client_security`); in plaintext mode these do nothing;
* `answer_pending`, which `close()` calls at shutdown so every request still
  open gets an answer (Stopping, retryable) instead of a silent wait, then
  `release` for the actor's resources;
* its metrics (actors/metrics.py): the loop counts each turn's messages and
  busy time, the actor its own counters in `self.metrics`, and once every
  REPORT_INTERVAL_S `report_metrics` sends them all to the member's frontend
  (`metrics_outbox`), which serves them to /metrics.

Signals: SIGTERM asks the loop to stop after the current batch; SIGINT is ignored
because Ctrl-C in a terminal reaches the whole process group and the supervisor
alone decides the order of shutdown.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import zmq

from actors import logs
from actors.crash_reports import record_crash
from actors.metrics import REPORT_INTERVAL_S, Metrics
from actors.process import CLOSE_LINGER_MS, die_with_parent, set_process_title
from transport import codec
from transport import curve
from transport.errors import CairnError, StoppingError
from transport.sockets import NOBLOCK, drain

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class Actor:
    """Base of every actor. Subclasses set `name`, open sockets in __init__,
    register their inbox (add_inbox) with a handler per message type
    (on_message) and any other socket with add_reader; the loop calls
    on_batch_end after each turn and on_timer at least once per timeout_ms."""

    name = "actor"

    def __init__(self, config, member_name: str):
        self.config = config
        self.member = config.member(member_name)
        self.settings = config.settings
        self.limits = config.settings.limits
        self.data_dir = config.data_dir(member_name)
        self.log = logs.configure(self.data_dir, member_name, self.name, self.settings.log_level)
        self.context = zmq.Context()
        self.stopping = False
        # What the loop is handling now, for a crash report (actors/crash_reports.py);
        # an actor may make it finer (the apply actor names the entries).
        self.current_input = "start-up"
        self._readers: list[tuple[zmq.Socket, object, bool]] = []
        self._readers_changed = False
        self._handlers: dict[type, object] = {}
        self._inboxes: list[zmq.Socket] = []
        self.bad_frames = 0  # frames dropped because they did not decode
        self._keys = None  # this member's CURVE key pair, read on first use
        self._zap: curve.ZapHandler | None = None
        self.metrics = Metrics()
        self.metrics_outbox: zmq.Socket | None = None  # the frontend's inbox; an actor sets it
        self._batch_size = self.metrics.histogram("cairn_actor_batch_size")
        self._busy_s = self.metrics.counter("cairn_actor_busy_seconds_total")
        self._queue_depth = self.metrics.gauge("cairn_actor_queue_depth")
        self._bad_frames = self.metrics.counter("cairn_actor_bad_frames_total")
        self._resident = self.metrics.gauge("cairn_actor_resident_memory_bytes")
        self._metrics_due = 0.0

    # ------------------------------------------------------------------ CURVE

    @property
    def keys(self) -> curve.KeyPair:
        if self._keys is None:
            self._keys = self.config.member_keys(self.member.name)
        return self._keys

    def serve_curve(self, socket: zmq.Socket, door: str) -> None:
        """Call before socket binds. In CURVE mode it then accepts only CURVE
        clients that know this member's public key and, on the "peer" door, hold
        a member's key; on the "client" door any key, or with
        security.client_keys only those and the members'. Refusals and failed
        handshakes are logged (rate-limited)."""
        security = self.config.security
        if not security.curve:
            return
        if self._zap is None:
            self._zap = curve.ZapHandler(self.context, self.log)
            self.add_reader(self._zap.socket, self._zap.on_requests, multipart=True)
        members = self.config.member_public_keys()
        if door == "peer":
            allowed = members
        elif security.client_keys:
            allowed = {**{key: "client" for key in security.client_keys}, **members}
        else:
            allowed = None
        self._zap.allow(door, allowed)
        curve.make_server(socket, self.keys, door)
        monitor = curve.HandshakeMonitor(socket, door, self.log)
        self.add_reader(monitor.socket, monitor.on_events, multipart=True)

    def allow_curve_keys(self, door: str, allowed: dict[bytes, str]) -> None:
        """The keys `door` admits from now on (the raft actor's peer door follows
        the membership); connections already made stay."""
        if self._zap is not None:
            self._zap.allow(door, allowed)

    def connect_curve(self, socket: zmq.Socket, member) -> None:
        """Call before socket connects to `member` (a MemberSpec): in CURVE mode
        it talks to that member only, as this member."""
        if self.config.security.curve:
            curve.make_client(socket, self.keys, member.public_key.encode())

    def client_security(self, member=None) -> dict:
        """cairn.Client keyword arguments to reach `member`'s frontend (this
        member's by default) as this member."""
        if not self.config.security.curve:
            return {}
        return {"server_public_keys": (member or self.member).public_key, "client_key": self.keys}

    def add_reader(self, socket: zmq.Socket, handler, multipart: bool = False) -> None:
        """handler(list of frames) is called with everything drained from socket."""
        self._readers.append((socket, handler, multipart))
        self._readers_changed = True

    def remove_reader(self, socket: zmq.Socket) -> None:
        self._readers = [reader for reader in self._readers if reader[0] is not socket]
        self._readers_changed = True

    def add_inbox(self, socket: zmq.Socket) -> None:
        """Read socket as an inbox of messages dispatched by type (on_message)."""
        self._inboxes.append(socket)
        self.add_reader(socket, self._dispatch)

    def on_message(self, message_type: type, handler) -> None:
        """handler(message) for every inbox message of exactly this type."""
        assert message_type not in self._handlers, f"two handlers for {message_type.__name__}"
        self._handlers[message_type] = handler

    def _dispatch(self, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                _, message = codec.decode(frame)
            except CairnError as error:
                self.bad_frames += 1
                self.log.error("bad_frame_dropped", error=str(error), bad_frames=self.bad_frames)
                continue
            handler = self._handlers.get(type(message))
            if handler is None:
                self.log.warning("unexpected_message", type=type(message).__name__)
                continue
            self.current_input = type(message).__name__
            handler(message)

    def send(self, socket: zmq.Socket, message, on_full=None) -> bool:
        """Send a message (or a frame already encoded) to another actor without
        blocking; False if it could not go.

        A full queue means the receiver is gone or far behind, and what then
        happens is the caller's explicit choice: `on_full()` answers or takes
        back what the message carried (the frontend fails the requests in it
        with TooManyRequests, the watch hub requeues its frames); without it the
        message is dropped and logged, for protocols that recover what they miss
        (raft resends on ApplyNeed, status is republished every tick, lease
        expiries are proposed again)."""
        frame = message if type(message) is bytes else codec.encode(message)
        try:
            socket.send(frame, NOBLOCK)  # an int: pyzmq's enum flag costs ~1 us more per send
            return True
        except zmq.Again:
            if on_full is not None:
                on_full()
            else:
                self.log.warning("send_queue_full", message=type(message).__name__)
            return False

    def timeout_ms(self) -> int:
        return self.settings.tick_ms

    def on_batch_end(self) -> None:
        """Flush what the batch produced."""

    def on_timer(self, now: float) -> None:
        """Called at least once per timeout_ms."""

    def queue_depth(self) -> int:
        """Work this actor holds and has not finished (cairn_actor_queue_depth);
        actors with queues of their own override it."""
        return 0

    def collect_metrics(self) -> None:
        """Set the gauges that are read rather than counted, just before a report."""

    def report_metrics(self, now: float) -> None:
        """Every REPORT_INTERVAL_S (and when a scrape asks the frontend): this
        actor's metrics to the frontend. A full queue drops the report; the
        next one carries the same counters."""
        self._metrics_due = now + REPORT_INTERVAL_S
        self._queue_depth.value = self.queue_depth()
        self._bad_frames.value = self.bad_frames
        self._resident.value = resident_bytes()
        self.collect_metrics()
        self.publish_metrics(self.metrics.report(self.name))

    def publish_metrics(self, report) -> None:
        """To the frontend (the frontend keeps its own)."""
        if self.metrics_outbox is not None:
            self.send(self.metrics_outbox, report, on_full=_dropped)

    def answer_pending(self, error: CairnError) -> int:
        """Answer every request this actor still holds with error; how many.
        Actors that hold requests override it (see close)."""
        return 0

    def release(self) -> None:
        """Release the actor's resources (LMDB environments, threads)."""

    def close(self) -> int:
        """At shutdown: answer what is pending (Stopping: the client retries
        elsewhere at once), then release resources; how many were answered."""
        answered = 0
        try:
            # What reached the inbox but was not read yet is taken in first, so
            # a request handed over in the last moment is answered too.
            for socket in self._inboxes:
                self._dispatch(drain(socket, self.limits.max_batch_messages))
            answered = self.answer_pending(StoppingError())
            if answered:
                self.log.info("pending_answered", count=answered)
        finally:
            self.release()
        return answered

    def serve(self) -> None:
        limit = self.limits.max_batch_messages
        poller = None
        while not self.stopping:
            if self._readers_changed or poller is None:
                poller = zmq.Poller()
                for socket, _, _ in self._readers:
                    poller.register(socket, zmq.POLLIN)
                self._readers_changed = False
            ready = dict(poller.poll(self.timeout_ms()))
            started = time.perf_counter()
            handled = 0
            for socket, handler, multipart in self._readers:
                if socket in ready:
                    self.current_input = handler.__name__
                    frames = drain(socket, limit, multipart)
                    handled += len(frames)
                    handler(frames)
            self.current_input = "batch end"
            self.on_batch_end()
            self.current_input = "timers"
            now = time.monotonic()
            self.on_timer(now)
            if handled:
                self._batch_size.observe(handled)
            if now >= self._metrics_due:
                self.report_metrics(now)
            self._busy_s.value += time.perf_counter() - started


def resident_bytes() -> int:
    """This process's resident memory (0 where /proc cannot say)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def _dropped() -> None:
    """A metrics report that found the frontend's queue full: the next one follows."""


def run(actor_class, config, member_name: str, parent_pid: int) -> None:
    """Entry point of an actor process (multiprocessing target)."""
    die_with_parent(parent_pid)
    set_process_title(f"cairn[{member_name}] {actor_class.name}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    actor = None
    try:
        actor = actor_class(config, member_name)

        def stop(signum, frame):
            actor.stopping = True

        signal.signal(signal.SIGTERM, stop)
        actor.log.info("actor_started", pid=os.getpid())
        actor.serve()
        actor.log.info("actor_stopping", reason="signal")
    except Exception as error:  # the top of an actor loop: log, then exit so the supervisor restarts us
        if actor is not None:
            actor.log.exception("actor_crashed", input=actor.current_input)
            record_crash(actor.data_dir, actor_class.name, actor.current_input, error)
        else:
            import traceback

            traceback.print_exc()
        sys.exit(70)
    finally:
        if actor is not None:
            answered = 0
            try:
                answered = actor.close()
            finally:
                # answers queued by close() get a moment to leave; otherwise no wait
                actor.context.destroy(linger=CLOSE_LINGER_MS if answered else 0)
