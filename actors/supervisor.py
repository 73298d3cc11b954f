"""The member supervisor: spawns one OS process per actor and keeps them running.

Theory of operation
-------------------
`cairn node` runs this in the foreground. It takes an exclusive flock on the
data dir (so two members can never share one), removes ipc sockets a killed
member left behind, prepares the LMDB environments, then spawns the actors with
the multiprocessing *spawn* method (a fresh interpreter: no inherited sockets,
LMDB handles or locks). It waits on the children's sentinels; an actor that
exits is logged and restarted after a back-off that doubles while it keeps dying
and resets once it stays up. SIGTERM or SIGINT stops the actors in reverse start
order (the gateways and frontend first, so no new requests arrive while the
rest wind down), waits
for them, kills stragglers, and removes the ipc sockets. The actors also ask the
kernel to SIGTERM them if the supervisor itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import fcntl
import importlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import time

from actors import logs
from actors.base import set_process_title
from actors.crash_reports import CrashLoops, take_crash, write_member_errors
from transport.sockets import make_run_dir, remove_stale_ipc

# Start order: the log owner first, the client-facing door last.
ACTOR_CLASSES = {
    "raft": "actors.raft.actor:RaftActor",
    "apply": "actors.apply:ApplyActor",
    "lease": "actors.lease:LeaseActor",
    "watch": "actors.watch:WatchActor",
    "frontend": "actors.frontend:FrontendActor",
    # Only for members with an `http` address: etcd's JSON gateway, a client of the frontend.
    "gateway": "actors.gateway:GatewayActor",
    # Only for members with a `grpc` address: etcd's gRPC API, a client of the frontend.
    "grpc": "actors.grpc_gateway:GrpcActor",
}
# The actors a member runs only when its config gives it the address they serve.
OPTIONAL_ACTORS = {"gateway": "http", "grpc": "grpc"}

RESTART_BACKOFF_S_MIN = 0.1
RESTART_BACKOFF_S_MAX = 5.0
# An actor that stayed up this long is healthy again: its back-off resets.
HEALTHY_AFTER_S = 10.0
STOP_GRACE_S = 5.0


def actor_class(name: str):
    module, _, attribute = ACTOR_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def run_actor(name: str, config, member_name: str, parent_pid: int) -> None:
    """multiprocessing target: import the actor's module in the child only."""
    from actors.base import run

    run(actor_class(name), config, member_name, parent_pid)


class DataDirLocked(Exception):
    pass


def lock_data_dir(data_dir: str):
    """An exclusive flock held for the supervisor's life; the kernel drops it when
    the process dies, however it dies, so it is never stale."""
    os.makedirs(data_dir, exist_ok=True)
    handle = open(os.path.join(data_dir, "cairn.lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirLocked(f"data dir {data_dir} is in use by another cairn member") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Supervisor:
    def __init__(self, config, member_name: str):
        self.config = config
        self.member_name = member_name
        self.data_dir = config.data_dir(member_name)
        self.lock = lock_data_dir(self.data_dir)
        self.log = logs.configure(self.data_dir, member_name, "supervisor", config.settings.log_level)
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict[str, multiprocessing.Process] = {}
        self.started_at: dict[str, float] = {}
        member = config.member(member_name)
        self.actor_names = [name for name in ACTOR_CLASSES
                            if name not in OPTIONAL_ACTORS or getattr(member, OPTIONAL_ACTORS[name])]
        self.backoff_s: dict[str, float] = {name: RESTART_BACKOFF_S_MIN for name in self.actor_names}
        self.restart_at: dict[str, float] = {}
        self.crash_loops = CrashLoops()
        self.stopping = False

    def prepare(self) -> None:
        remove_stale_ipc(self.data_dir)
        make_run_dir(self.data_dir)  # owner-only before any actor binds in it
        write_member_errors(self.data_dir, {})
        from store.environment import prepare_member_store

        prepare_member_store(self.config, self.member_name)

    def spawn(self, name: str) -> None:
        process = self.context.Process(
            target=run_actor,
            args=(name, self.config, self.member_name, os.getpid()),
            name=f"cairn[{self.member_name}] {name}",
            daemon=False,
        )
        process.start()
        self.processes[name] = process
        self.started_at[name] = time.monotonic()
        self.log.info("actor_spawned", actor_name=name, pid=process.pid)

    def run(self) -> int:
        set_process_title(f"cairn[{self.member_name}] supervisor")
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.prepare()
        self.log.info("member_starting", member_id=self.config.member(self.member_name).id, data_dir=self.data_dir)
        for name in self.actor_names:
            self.spawn(name)
        while not self.stopping:
            self._watch_children()
        self.stop_all()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _watch_children(self) -> None:
        now = time.monotonic()
        for name in list(self.crash_loops.errors):
            if name not in self.restart_at and now - self.started_at[name] >= HEALTHY_AFTER_S and self.crash_loops.healthy(name):
                self.log.info("actor_recovered", actor_name=name)
                write_member_errors(self.data_dir, self.crash_loops.errors)
        for name, when in list(self.restart_at.items()):
            if now >= when:
                del self.restart_at[name]
                self.spawn(name)
        alive = {p.sentinel: name for name, p in self.processes.items() if name not in self.restart_at}
        ready = multiprocessing.connection.wait(list(alive), timeout=0.2)
        for sentinel in ready:
            name = alive[sentinel]
            process = self.processes[name]
            process.join(timeout=0)
            if self.stopping:
                return
            uptime = time.monotonic() - self.started_at[name]
            if uptime >= HEALTHY_AFTER_S:
                self.backoff_s[name] = RESTART_BACKOFF_S_MIN
                self.crash_loops.healthy(name)
            delay = self.backoff_s[name]
            self.backoff_s[name] = min(delay * 2, RESTART_BACKOFF_S_MAX)
            self.restart_at[name] = time.monotonic() + delay
            report = take_crash(self.data_dir, name)
            self.log.warning(
                "actor_died", actor_name=name, pid=process.pid, exitcode=process.exitcode, uptime_s=round(uptime, 3),
                restart_in_s=delay, input=(report or {}).get("input"), error=(report or {}).get("error"),
            )
            looping = self.crash_loops.died(name, report)
            if looping:
                self.log.error("actor_crash_loop", actor_name=name, input=report.get("input"), error=report.get("error"))
                write_member_errors(self.data_dir, self.crash_loops.errors)

    def stop_all(self) -> None:
        self.log.info("member_stopping")
        for name in reversed(self.actor_names):
            process = self.processes.get(name)
            if process is not None and process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for name, process in self.processes.items():
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                self.log.warning("actor_killed", actor_name=name, pid=process.pid)
                process.kill()
                process.join()
        remove_stale_ipc(self.data_dir)
        self.log.info("member_stopped")
        self.lock.close()
