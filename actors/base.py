"""The actor loop every cairn actor process runs.

Theory of operation
-------------------
An actor is a short receive loop (after pykka's _actor.py): poll its sockets with
a timeout of at most one tick, drain everything queued on each readable socket
(up to a limit) and hand it to the actor as one batch, then let the actor flush
what the batch produced (one LMDB transaction, one fsync, one message per peer)
and run its timers. The loop, not the actor, owns process concerns: the process
title `ps` shows, dying with the supervisor, signals, and logging of a crash.

Signals: SIGTERM asks the loop to stop after the current batch; SIGINT is ignored
because Ctrl-C in a terminal reaches the whole process group and the supervisor
alone decides the order of shutdown.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import zmq

from actors import logs
from actors.crash_reports import record_crash
from transport import codec
from transport.sockets import drain

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


def set_process_title(title: str) -> None:
    """Name this process for `ps` (comm, 15 bytes) and, where the setproctitle
    package happens to be installed, for `ps -f` too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(title.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    try:
        import setproctitle  # optional, not a dependency

        setproctitle.setproctitle(title)
    except ImportError:
        pass


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGTERM us when the supervisor dies, even by kill -9,
    so a member never leaves orphan actors behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


class Actor:
    """Base of every actor. Subclasses set `name`, open sockets in __init__ and
    register readers with add_reader; the loop calls on_batch_end after each turn
    and on_timer when timer_due_ms says a timer is due."""

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

    def add_reader(self, socket: zmq.Socket, handler, multipart: bool = False) -> None:
        """handler(list of frames) is called with everything drained from socket."""
        self._readers.append((socket, handler, multipart))
        self._readers_changed = True

    def remove_reader(self, socket: zmq.Socket) -> None:
        self._readers = [reader for reader in self._readers if reader[0] is not socket]
        self._readers_changed = True

    def send(self, socket: zmq.Socket, message) -> bool:
        """Send one message to another actor without blocking. A full queue means
        the receiver is gone or far behind: the message is dropped and logged, and
        each protocol recovers what it misses (raft resends on ApplyNeed, the
        frontend times requests out, leases retry). False if dropped."""
        try:
            socket.send(codec.encode(message), zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.log.warning("send_queue_full", message=type(message).__name__)
            return False

    def timeout_ms(self) -> int:
        return self.settings.tick_ms

    def on_batch_end(self) -> None:
        """Flush what the batch produced."""

    def on_timer(self, now: float) -> None:
        """Called at least once per timeout_ms."""

    def close(self) -> None:
        """Answer what is pending with an error and release resources."""

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
            for socket, handler, multipart in self._readers:
                if socket in ready:
                    self.current_input = handler.__name__
                    handler(drain(socket, limit, multipart))
            self.current_input = "batch end"
            self.on_batch_end()
            self.current_input = "timers"
            self.on_timer(time.monotonic())


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
            try:
                actor.close()
            finally:
                actor.context.destroy(linger=0)
