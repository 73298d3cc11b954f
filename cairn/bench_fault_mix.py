"""`cairn bench compare --fault-mix`: acknowledged operations per second of six
clients (reads, writes, compare-and-swaps, all linearizable) while members are
killed, stopped and restarted on a seeded schedule — and a check that the
history is linearizable with nothing acknowledged lost.

Theory of operation
-------------------
One run per system, on a fresh three-member cluster of cairn/bench_compare.py
(its Members: each member a process group, on free loopback ports):

* six worker threads, each with a client of its own (cairn's Client; for etcd
  one gRPC channel per member), starting on member (worker mod 3). Each
  operation sends requests of REQUEST_TIMEOUT_S until one gets a definite
  answer or OPERATION_TIMEOUT_S has passed, pausing with cairn.retry's
  back-off between them; after a failed request an etcd worker moves to the
  next member (cairn's Client fails over by itself). Every operation is safe to
  send again (cairn/bench_faults.py's guarded writes), so both systems are
  driven alike.
* the main thread plays cairn/bench_faults.py's schedule: kill -9 a
  member and start it again, SIGSTOP one and SIGCONT it, kill -9 the leader
  and start it again, kill -9 all three and start them again. Whatever
  happens, every stopped member is continued and every killed one started
  before the run ends, and Members.stop ends them all.

Afterwards each key is read once more (the lost-write check), the history is
checked (bench_faults.check_history), and every fault gets its window: how
long nothing was acknowledged, how long until the next acknowledged write, and
how long the workers stalled.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter

from cairn import bench_faults as bf
from cairn.retry import Backoff

WORKERS = 6
# One request's budget: a member that does not answer in this costs no more.
REQUEST_TIMEOUT_S = 1.0
# One operation's budget, over its requests: then it counts as failed and the worker moves on.
OPERATION_TIMEOUT_S = 5.0
# How long the cluster may take to serve again after the last fault, for the final reads.
RECOVERY_TIMEOUT_S = 60.0
# How long the injector looks for the leader before it kills the schedule's member instead.
LEADER_SEARCH_S = 1.0
KEY_PREFIX = b"fault-mix/"


def key_name(key: int) -> bytes:
    return KEY_PREFIX + b"%d" % key


# ---------------------------------------------------------------------------- the two systems' registers


class CairnRegisters:
    """A worker's reads and guarded writes through cairn's own Client."""

    def __init__(self, endpoints: list[str], first: int):
        from cairn import Client

        self.client = Client(endpoints[first:] + endpoints[:first], timeout=REQUEST_TIMEOUT_S)

    def read(self, key: int) -> int | None:
        kvs = self.client.get(key_name(key)).kvs
        return bf.decode_value(kvs[0].value if kvs else None)

    def write(self, key: int, value: int) -> tuple[bool, int | None]:
        from cairn import Compare

        return self._txn(key, Compare.value(key_name(key)) < bf.encode_value(value), value)

    def cas(self, key: int, expected: int, value: int) -> tuple[bool, int | None]:
        from cairn import Compare

        return self._txn(key, Compare.value(key_name(key)) == bf.encode_value(expected), value)

    def _txn(self, key: int, guard, value: int) -> tuple[bool, int | None]:
        from cairn import Op

        name = key_name(key)
        response = self.client.txn([guard], [Op.put(name, bf.encode_value(value))], [Op.get(name)])
        if response.succeeded:
            return True, None
        kvs = response.responses[0].kvs
        return False, bf.decode_value(kvs[0].value if kvs else None)

    def failed(self) -> None:
        """The Client chooses its next member itself."""

    @staticmethod
    def error_name(error: Exception) -> str:
        from transport.errors import CairnError, IndeterminateError, TimeoutError_

        if isinstance(error, (TimeoutError_, IndeterminateError)):
            return "timeout"
        if isinstance(error, CairnError):
            return type(error).__name__
        raise error

    def close(self) -> None:
        self.client.close()


class EtcdRegisters:
    """A worker's reads and guarded writes over etcd's gRPC KV API, one channel
    per member, moving to the next member after a failed request (the
    compare's gRPC client, as bench_compare's EtcdMembers uses it). grpc's
    reconnect back-off is held to 100 ms–1 s, about ZeroMQ's 100 ms reconnect
    interval, so neither client's reconnect policy is what is measured."""

    CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                       ("grpc.max_reconnect_backoff_ms", 1000)]

    def __init__(self, endpoints: list[str], first: int):
        import grpc
        from pyetcd.etcdrpc import rpc_pb2, rpc_pb2_grpc

        self.rpc = rpc_pb2
        self.channels = [grpc.insecure_channel(endpoint, options=self.CHANNEL_OPTIONS) for endpoint in endpoints]
        self.stubs = [rpc_pb2_grpc.KVStub(channel) for channel in self.channels]
        self.current = first

    def read(self, key: int) -> int | None:
        response = self.stubs[self.current].Range(self.rpc.RangeRequest(key=key_name(key)), timeout=REQUEST_TIMEOUT_S)
        return bf.decode_value(response.kvs[0].value if response.kvs else None)

    def write(self, key: int, value: int) -> tuple[bool, int | None]:
        return self._txn(key, self.rpc.Compare.LESS, value, value)

    def cas(self, key: int, expected: int, value: int) -> tuple[bool, int | None]:
        return self._txn(key, self.rpc.Compare.EQUAL, expected, value)

    def _txn(self, key: int, result, operand: int, value: int) -> tuple[bool, int | None]:
        rpc, name = self.rpc, key_name(key)
        request = rpc.TxnRequest(
            compare=[rpc.Compare(result=result, target=rpc.Compare.VALUE, key=name, value=bf.encode_value(operand))],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=name, value=bf.encode_value(value)))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=name))])
        response = self.stubs[self.current].Txn(request, timeout=REQUEST_TIMEOUT_S)
        if response.succeeded:
            return True, None
        kvs = response.responses[0].response_range.kvs
        return False, bf.decode_value(kvs[0].value if kvs else None)

    def failed(self) -> None:
        self.current = (self.current + 1) % len(self.stubs)

    @staticmethod
    def error_name(error: Exception) -> str:
        import grpc

        if not isinstance(error, grpc.RpcError):
            raise error
        code = error.code()
        return "timeout" if code == grpc.StatusCode.DEADLINE_EXCEEDED else code.name

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def registers_for(members, first: int):
    return (EtcdRegisters if members.name == "etcd" else CairnRegisters)(list(members.endpoints), first)


# ---------------------------------------------------------------------------- workers


class Worker:
    """One client: reads of any key, writes and cas of its own, until told to stop."""

    def __init__(self, index: int, registers, keys: int, seed: int):
        self.index, self.registers, self.keys = index, registers, keys
        self.rng = random.Random(seed * 1000 + index)
        self.operations: list[bf.Operation] = []
        self.failed_requests: Counter = Counter()
        self.sequence = 0  # the last value this worker wrote (or tried to)
        self.known = 0  # the value this worker believes its key holds
        self.error: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        """Operations until `stop`; a bug (not the system's answer) stops the
        whole run rather than quietly lowering its figure."""
        try:
            self._loop(stop)
        except BaseException as error:  # noqa: BLE001 - re-raised by fault_mix
            self.error = error
            stop.set()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            kind = self.rng.choice((bf.READ, bf.WRITE, bf.CAS))
            if kind == bf.READ:
                key = self.rng.randrange(self.keys)
                op = self._operation(kind, key, lambda: (self.registers.read(key), None))
                if op.ok and key == self.index:
                    self.known = op.value
            else:
                self.sequence += 1
                value, expected = self.sequence, self.known
                if kind == bf.WRITE:
                    attempt = lambda: self.registers.write(self.index, value)  # noqa: E731
                else:
                    attempt = lambda: self.registers.cas(self.index, expected, value)  # noqa: E731
                op = self._operation(kind, self.index, attempt, value, expected if kind == bf.CAS else None)
                if bf.write_acknowledged(op):
                    self.known = value
                elif op.ok:
                    self.known = op.observed if op.observed is not None else self.known
            self.operations.append(op)

    def _operation(self, kind: str, key: int, attempt, value=None, expected=None) -> bf.Operation:
        invoked = time.monotonic()
        deadline = invoked + OPERATION_TIMEOUT_S
        backoff, attempts, error = Backoff(self.rng), 0, ""
        while True:
            attempts += 1
            try:
                result, observed = attempt()
            except Exception as failure:  # noqa: BLE001 - error_name re-raises what is not the system's answer
                error = self.registers.error_name(failure)
                self.failed_requests[error] += 1
                self.registers.failed()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return bf.Operation(self.index, kind, key, invoked, time.monotonic(), False, value, expected,
                                        retried=attempts > 1, error=error)
                time.sleep(backoff.next_pause(remaining))
                continue
            returned = time.monotonic()
            if kind == bf.READ:
                return bf.Operation(self.index, kind, key, invoked, returned, True, result, retried=attempts > 1)
            return bf.Operation(self.index, kind, key, invoked, returned, True, value, expected, result, observed,
                                retried=attempts > 1)


# ---------------------------------------------------------------------------- faults


class Injector:
    """Plays the schedule against members; heals everything it did, however it
    ends. It runs on the main thread: a member started with
    CAIRN_DIE_WITH_PARENT dies with the *thread* that started it
    (PR_SET_PDEATHSIG), so a restart from a thread that then ends would kill
    the member again."""

    def __init__(self, members, schedule: list[bf.Fault]):
        self.members, self.schedule = members, schedule
        self.events: list[bf.FaultEvent] = []
        self.stopped: set[int] = set()

    def run(self, started: float, seconds: float, stop: threading.Event) -> None:
        """The schedule's faults, then the rest of the run; returns early if `stop` is set."""
        assert threading.current_thread() is threading.main_thread(), "members must be started by the main thread"
        try:
            for fault in self.schedule:
                if stop.wait(max(0.0, started + fault.at_s - time.monotonic())):
                    return
                self._inject(fault, stop)
            stop.wait(max(0.0, started + seconds - time.monotonic()))
        finally:
            self.heal()

    def _inject(self, fault: bf.Fault, stop: threading.Event) -> None:
        members = self.members
        if fault.kind == bf.KILL_ALL:
            targets = (0, 1, 2)
        elif fault.kind == bf.KILL_LEADER:
            targets = (self._leader(fault.member),)
        else:
            targets = (fault.member,)
        began = time.monotonic()
        for index in targets:
            if fault.kind == bf.STOP:
                os.killpg(members.processes[index].pid, signal.SIGSTOP)
                self.stopped.add(index)
            else:
                members.kill9(index)
        stop.wait(fault.hold_s)
        self.heal()
        self.events.append(bf.FaultEvent(fault.kind, targets, began, time.monotonic()))

    def _leader(self, fallback: int) -> int:
        deadline = time.monotonic() + LEADER_SEARCH_S
        while time.monotonic() < deadline:
            for index in range(3):
                try:
                    if self.members.leads(index):
                        return index
                except Exception:  # noqa: BLE001 - a member that does not answer does not lead
                    continue
        return fallback

    def heal(self) -> None:
        for index in sorted(self.stopped):
            try:
                os.killpg(self.members.processes[index].pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.stopped.clear()
        for index in range(3):
            if index not in self.members.processes:
                self.members.start_member(index)


# ---------------------------------------------------------------------------- one run


def fault_mix(members, seconds: float, seed: int, clients: int = WORKERS) -> dict:
    """Run the fault mix on started `members` (bench_compare.Members) and return
    its summary; members are left running, healed."""
    from cairn.bench_compare import poll

    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    for key in range(clients):  # every key at 0, acknowledged, before any op
        poll(lambda: members.put(key_name(key), bf.encode_value(0)), deadline, f"{members.name}: key {key} set")
    schedule = bf.fault_schedule(seed, seconds)
    workers = [Worker(index, registers_for(members, index % 3), clients, seed) for index in range(clients)]
    injector = Injector(members, schedule)
    stop = threading.Event()
    threads = [threading.Thread(target=worker.run, args=(stop,), name=f"fault-mix-worker-{worker.index}", daemon=True)
               for worker in workers]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        injector.run(started, seconds, stop)
    finally:
        stop.set()
        stopped = time.monotonic()
        for thread in threads:
            thread.join(timeout=OPERATION_TIMEOUT_S + 2 * REQUEST_TIMEOUT_S)
        for worker in workers:
            worker.registers.close()
    for error in [worker.error for worker in workers]:
        if error is not None:
            raise error
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a fault-mix worker did not stop within its operation's timeout")
    ops = [op for worker in workers for op in worker.operations]
    finals = final_reads(members, clients)
    verdict = bf.check_history(ops, finals)
    # the figure counts what was acknowledged while the run lasted, not the answers that came while it stopped
    run_s = stopped - started
    in_run = [op for op in ops if op.ok and op.returned <= stopped]
    windows = bf.fault_windows(_relative_events(injector.events, started), _relative_ops(ops, started), run_s, clients)
    failed_requests = sum((worker.failed_requests for worker in workers), Counter())
    # before the first fault the cluster is whole: the same clients' rate without faults, to tell the
    # cost of the faults (ops_per_s / steady) from the cost of each operation
    steady_s = schedule[0].at_s if schedule else run_s
    steady = sum(1 for op in in_run if op.returned - started < steady_s) / steady_s
    return {
        "seconds": round(run_s, 3), "seed": seed, "clients": clients,
        "ops_per_s": round(len(in_run) / run_s, 1),
        "ops_per_s_before_faults": round(steady, 1),
        "kept_under_faults": round(len(in_run) / run_s / steady, 3) if steady else None,
        "acknowledged": len(in_run),
        "acknowledged_by_kind": dict(Counter(op.kind for op in in_run)),
        "failed_operations": sum(not op.ok for op in ops),
        "failed_requests": dict(failed_requests),
        "timeouts": failed_requests.get("timeout", 0),
        "errors": sum(failed_requests.values()) - failed_requests.get("timeout", 0),
        "linearizable": verdict.linearizable, "values_checked": verdict.values_checked,
        "violations": verdict.violations[:20], "lost": verdict.lost[:20],
        "faults": windows, "by_fault": bf.summarize_windows(windows),
    }


def final_reads(members, keys: int) -> list[bf.Operation]:
    """Each key read (linearizable) once the cluster serves again, as worker -1."""
    from cairn.bench_compare import poll

    registers = registers_for(members, 0)
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    finals = []
    try:
        for key in range(keys):
            def attempt():
                try:
                    return registers.read(key)
                except Exception:
                    registers.failed()
                    raise

            invoked = time.monotonic()
            value = poll(attempt, deadline, f"{members.name}: final read of key {key}")
            finals.append(bf.Operation(-1, bf.READ, key, invoked, time.monotonic(), True, value))
    finally:
        registers.close()
    return finals


def _relative_events(events: list[bf.FaultEvent], started: float) -> list[bf.FaultEvent]:
    return [bf.FaultEvent(e.kind, e.members, round(e.began - started, 3), round(e.healed - started, 3)) for e in events]


def _relative_ops(ops: list[bf.Operation], started: float) -> list[bf.Operation]:
    from dataclasses import replace

    return [replace(op, invoked=op.invoked - started, returned=op.returned - started) for op in ops]


def render(results: dict) -> str:
    """The fault-mix table: each system's figures and, for two, the ratio."""
    systems = list(results)
    header = ["fault mix", *systems] + (["cairn / etcd"] if len(systems) == 2 else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(name, cell, ratio=False):
        cells = [name, *(cell(results[s]) for s in systems)]
        if len(systems) == 2:
            if ratio:
                etcd = results["etcd"]["ops_per_s"]
                cells.append(f"{results['cairn']['ops_per_s'] / etcd:.2f}× (higher is better)" if etcd else "-")
            else:
                cells.append("")
        lines.append("| " + " | ".join(cells) + " |")

    seconds = next(iter(results.values()))["seconds"]
    row(f"ops/s of {next(iter(results.values()))['clients']} clients over {seconds:.0f} s", lambda r: f"{r['ops_per_s']:,.1f}/s",
        ratio=True)
    row("ops/s before the first fault", lambda r: f"{r['ops_per_s_before_faults']:,.1f}/s")
    row("share of that kept under the faults", lambda r: f"{r['kept_under_faults'] or 0:.0%}")
    row("failed requests: timeouts / errors", lambda r: f"{r['timeouts']} / {r['errors']}")
    row("operations failed (after retries)", lambda r: str(r["failed_operations"]))
    row("linearizable, nothing acknowledged lost", lambda r: "yes" if r["linearizable"] else
        f"**NO**: {len(r['violations'])} violations, {len(r['lost'])} lost")
    for kind in bf.FAULT_KINDS:
        row(f"{kind}: no ack / first write / worker stall (mean s)",
            lambda r, k=kind: _window_cell(r["by_fault"].get(k)))
    return "\n".join(lines)


def _window_cell(summary: dict | None) -> str:
    if not summary:
        return "-"
    first_write = summary["to_first_write_s"]
    first = f"{first_write:.2f}" if first_write is not None else "-"
    return f"{summary['no_ack_s']:.2f} / {first} / {summary['worker_stall_s']:.2f} ×{summary['count']}"
