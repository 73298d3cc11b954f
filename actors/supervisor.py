"""The member supervisor: spawns one OS process per actor and keeps them running.

Theory of operation
-------------------
`cairn node` runs this in the foreground. It takes an exclusive flock on the
data dir (so two members can never share one), removes ipc sockets a killed
member left behind, prepares the LMDB environments and checks the Raft log,
then spawns the actors with multiprocessing's *forkserver* (actors/forkserver.py):
a fresh interpreter started once per member, first thing, which imports the
actors' modules (FORKSERVER_PRELOAD) and then only forks. Each actor is a fork
of that clean process, so it inherits no socket, ZeroMQ context, LMDB handle or
lock of the supervisor's, and imports nothing again: a member's actors are up
in a fraction of the time spawn took, and a crashed actor comes back as fast.
The store's preparation runs in such a child too (`prepare_store`), so the
supervisor imports neither store/ nor the actors: its own start stays small
while the forkserver's imports run beside it. (The gateways' heavy libraries,
aiohttp and grpc, are imported after the fork, by the gateways alone: grpc
must not be imported before a fork.) It waits on the children's sentinels; an actor that
exits is logged and restarted after a back-off that doubles while it keeps dying
and resets once it stays up. SIGTERM or SIGINT stops the actors in reverse start
order (the gateways and frontend first, so no new requests arrive while the
rest wind down), waits
for them, kills stragglers, and removes the ipc sockets. The doors (gateway,
grpc) start last, once the raft actor and the frontend have bound their inboxes
(SupervisorLimits.doors_wait_s). The actors also ask the
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
from actors.crash_reports import CrashLoops, take_crash, write_member_errors
from actors.forkserver import context as forkserver_context
from actors.process import CLOSE_LINGER_MS, set_process_title
from actors.raft.markers import REMOVED_EXIT_CODE
from transport.limits import holds, limit, limits, positive
from transport.run_dir import ipc_path, make_run_dir, remove_stale_ipc

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
# A member whose Raft log is damaged (not merely a torn last write) does not
# start: it could forget entries it promised a quorum it holds. (sysexits' EX_DATAERR)
CORRUPT_LOG_EXIT_CODE = 65


@limits(
    positive("restart_backoff_s_min", "healthy_after_s"),
    holds(lambda l: l.restart_backoff_s_min <= l.restart_backoff_s_max, "the back-off doubles up to its maximum"),
    holds(lambda l: l.stop_grace_s * 1000 > CLOSE_LINGER_MS, "an actor's answers at close have time to leave"),
)
class SupervisorLimits:
    """The supervisor's periods, each with its reason."""

    restart_backoff_s_min: float = limit(
        0.1,
        "Back-off before restarting an actor that died, doubling while it keeps dying: the first restart is almost at "
        "once.")
    restart_backoff_s_max: float = limit(
        5.0,
        "The longest back-off: a crash loop costs at most one start per this.")
    healthy_after_s: float = limit(
        10.0,
        "An actor that stayed up this long is healthy again: its back-off resets and its crash report clears "
        "(actors/crash_reports.py).")
    stop_grace_s: float = limit(
        5.0,
        "How long stopping waits for the actors to answer what they hold and exit before it kills them.")
    doors_wait_s: float = limit(
        2.0,
        "The doors (HTTP, gRPC) start once the raft actor and the frontend have bound their inboxes, or after this "
        "long if they have not: the doors are clients of the frontend and serve nothing before it, and their imports "
        "(aiohttp, grpc: ~0.3 s of CPU) would otherwise compete with the core actors' start on a small machine.")


LIMITS = SupervisorLimits()


def actor_class(name: str):
    module, _, attribute = ACTOR_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def run_actor(name: str, config, member_name: str, parent_pid: int) -> None:
    """multiprocessing target: import the actor's module in the child only."""
    from actors.base import run

    run(actor_class(name), config, member_name, parent_pid)


def prepare_store(config, member_name: str, answer) -> None:
    """multiprocessing target: prepare the member's store (store/environment.py:
    prepare_member_store) in a child of the forkserver, which has imported
    store/ already, so the supervisor never imports it. Answers ("repairs",
    what was repaired) or ("corrupt", why the Raft log is damaged)."""
    from store.environment import prepare_member_store
    from store.wal_format import CorruptLog

    try:
        answer.send(("repairs", prepare_member_store(config, member_name)))
    except CorruptLog as error:
        answer.send(("corrupt", str(error)))


def _gone(pid: int, deadline: float) -> bool:
    """Whether pid has exited (or is a zombie) by deadline."""
    while True:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except OSError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
        self.context = forkserver_context()
        self.processes: dict[str, multiprocessing.Process] = {}
        self.started_at: dict[str, float] = {}
        member = config.member(member_name)
        self.actor_names = [name for name in ACTOR_CLASSES
                            if name not in OPTIONAL_ACTORS or getattr(member, OPTIONAL_ACTORS[name])]
        self.backoff_s: dict[str, float] = {name: LIMITS.restart_backoff_s_min for name in self.actor_names}
        self.restart_at: dict[str, float] = {}
        self.crash_loops = CrashLoops()
        self.doors_pending: list[str] = []  # the doors to start once the core actors listen (doors_wait_s)
        self.doors_due = 0.0
        self.stopping = False
        self.exit_code = 0
        self.refusal = ""  # why the member did not start, for `cairn node` to print

    def prepare(self) -> tuple[str, object]:
        """Ready the data dir for the actors: ("repairs", the Raft log's repairs)
        or ("corrupt", why the member must not start)."""
        remove_stale_ipc(self.data_dir)
        make_run_dir(self.data_dir)  # owner-only before any actor binds in it
        write_member_errors(self.data_dir, {})
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(target=prepare_store, args=(self.config, self.member_name, sender),
                                       name=f"cairn[{self.member_name}] prepare")
        process.start()
        sender.close()
        try:
            return receiver.recv()
        except EOFError:
            process.join()
            raise RuntimeError(f"preparing the data dir {self.data_dir} failed (exit code {process.exitcode}; "
                               "its traceback is on stderr)") from None
        finally:
            receiver.close()
            process.join()

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
        outcome, found = self.prepare()
        if outcome == "corrupt":
            self.log.error("raft_log_corrupt", error=found)
            self.refusal = f"the Raft log is damaged, refusing to start: {found}"
            self.lock.close()
            return CORRUPT_LOG_EXIT_CODE
        for repair in found:
            self.log.warning("raft_log_repaired", repair=repair)
        self.log.info("member_starting", member_id=self.config.member(self.member_name).id, data_dir=self.data_dir)
        for name in self.actor_names:
            if name in OPTIONAL_ACTORS:
                self.doors_pending.append(name)
            else:
                self.spawn(name)
        self.doors_due = time.monotonic() + LIMITS.doors_wait_s
        while not self.stopping:
            self._watch_children()
        self.stop_all()
        return self.exit_code

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _core_actors_listening(self) -> bool:
        """Whether the raft actor and the frontend have bound their inboxes
        (prepare removed any a killed member left)."""
        return all(os.path.exists(ipc_path(self.data_dir, name)) for name in ("raft", "frontend"))

    def _watch_children(self) -> None:
        now = time.monotonic()
        if self.doors_pending and (now >= self.doors_due or self._core_actors_listening()):
            for name in self.doors_pending:
                self.spawn(name)
            self.doors_pending = []
        for name in list(self.crash_loops.errors):
            if name not in self.restart_at and now - self.started_at[name] >= LIMITS.healthy_after_s and self.crash_loops.healthy(name):
                self.log.info("actor_recovered", actor_name=name)
                write_member_errors(self.data_dir, self.crash_loops.errors)
        for name, when in list(self.restart_at.items()):
            if now >= when:
                del self.restart_at[name]
                self.spawn(name)
        alive = {p.sentinel: name for name, p in self.processes.items() if name not in self.restart_at}
        ready = multiprocessing.connection.wait(list(alive), timeout=0.01 if self.doors_pending else 0.2)
        for sentinel in ready:
            name = alive[sentinel]
            process = self.processes[name]
            process.join(timeout=0)
            if self.stopping:
                return
            if name == "raft" and process.exitcode == REMOVED_EXIT_CODE:
                # The member was removed from the cluster (actors/raft/actor.py): stop it.
                self.log.error("member_removed_stopping", actor_name=name)
                self.exit_code = REMOVED_EXIT_CODE
                self.stopping = True
                return
            uptime = time.monotonic() - self.started_at[name]
            if uptime >= LIMITS.healthy_after_s:
                self.backoff_s[name] = LIMITS.restart_backoff_s_min
                self.crash_loops.healthy(name)
            delay = self.backoff_s[name]
            self.backoff_s[name] = min(delay * 2, LIMITS.restart_backoff_s_max)
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
        deadline = time.monotonic() + LIMITS.stop_grace_s
        for name, process in self.processes.items():
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            # The actors are the forkserver's children: a forkserver stopped by
            # the same signal (Ctrl-C's or a process group's) cannot report
            # their exit, so the supervisor also waits for each pid to be gone.
            if not _gone(process.pid, deadline):
                self.log.warning("actor_killed", actor_name=name, pid=process.pid)
                _kill(process.pid)
                _gone(process.pid, time.monotonic() + LIMITS.stop_grace_s)
        remove_stale_ipc(self.data_dir)
        self.log.info("member_stopped")
        self.lock.close()
