"""`cairn bench`: load generator and latency report, modelled on etcd's benchmark tool.

    cairn bench put   --endpoints E1,E2 --clients 256 --total 20000 --key-size 8 --val-size 256
    cairn bench range KEY --clients 256 --total 20000 --consistency l|s
    cairn bench txn-put --clients 64 --total 5000
    cairn bench lease-keepalive --clients 64 --total 20000
    cairn bench watch --watchers 1000 --total 10000 --clients 16
    cairn bench memory --keys 1000000 --val-size 100 --root-pid PID_OF_CAIRN_CLUSTER
    cairn bench standard --config configs/local-3node.yaml --output bench-results/latest.json
    cairn bench --cluster-config secure.yaml [--client-key client.key] put ...   (a CURVE cluster)

Theory of operation
-------------------
The load is spread over --processes worker processes (so the generator is not
the bottleneck on a 2-core machine, and the GIL of one process does not cap it).
Each worker opens --conns connections and keeps clients/processes requests in
flight: a closed loop where each completed request immediately issues the next
one, driven by the client's asynchronous transport (no thread per request).
Latencies are measured per request with a monotonic clock and merged; the report
gives throughput, a latency histogram and p50/p90/p99/p99.9, as text or JSON.
`standard` starts a fresh local cluster from a config (in a temporary directory),
runs a fixed set, writes the figures to a file and stops the cluster.
A cluster with CURVE security takes cairnctl's flags (--server-keys,
--client-key, --cluster-config); every connection the generator opens uses
them (`new_transport`, `new_client`).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from collections import deque

from cairn.cli import ArgumentParser, UsageError, security_flags, security_options
from cairn.procfs import process_tree
from transport import codec
from transport import messages as m

DEFAULT_ENDPOINTS = "tcp://127.0.0.1:2379,tcp://127.0.0.1:22379,tcp://127.0.0.1:32379"


# ---------------------------------------------------------------------------- requests


def make_requests(args, worker: int):
    """A function(sequence number) -> request for the chosen benchmark."""
    rng = random.Random(worker)
    value = b"v" * args.val_size

    def key(n: int) -> bytes:
        index = n if args.sequential_keys else rng.randrange(args.key_space_size)
        return str(index % args.key_space_size).zfill(args.key_size).encode()[-args.key_size:]

    if args.command == "put":
        return lambda n: m.PutRequest(key(n), value)
    if args.command == "range":
        start = args.key.encode()
        end = args.end.encode() if args.end else b""
        serializable = args.consistency == "s"
        return lambda n: m.RangeRequest(start, end, serializable=serializable)
    if args.command == "txn-put":
        # one key per op, distinct within the txn (etcd refuses a txn that puts a key twice)
        return lambda n: m.TxnRequest(success=tuple(m.PutRequest(key(n) + b"/%d" % i, value) for i in range(args.txn_ops)))
    if args.command == "lease-keepalive":
        return lambda n: m.LeaseKeepAliveRequest(args.lease_ids[n % len(args.lease_ids)])
    raise ValueError(args.command)


# ---------------------------------------------------------------------------- worker


def closed_loop(transports, endpoint_count: int, make, total: int, inflight: int, deadline: float, offset: int = 0,
                keep_replies: bool = False):
    """closed_loop_over with cairn's transports (requests spread over the endpoints)."""
    return closed_loop_over(cairn_sender(transports, endpoint_count, offset), make, total, inflight, deadline, keep_replies)


def cairn_sender(transports, endpoint_count: int, offset: int = 0):
    """send(slot, request) -> Future of the reply, over cairn's own wire: slot s
    uses transport s and endpoint (offset + s), so the load spreads evenly."""

    def send(slot: int, request):
        transport = transports[slot % len(transports)]
        request_id = transport.next_request_id()
        return transport.submit((offset + slot) % endpoint_count, codec.encode(request, request_id), request_id)

    return send


def closed_loop_over(send, make, total: int, inflight: int, deadline: float, keep_replies: bool = False):
    """Keep `inflight` requests in flight until `total` are done or the deadline:
    each completed request immediately issues the next one. send(slot, request)
    returns a future (concurrent.futures or grpc's: add_done_callback, result,
    exception), so the same loop drives cairn and etcd (cairn/bench_compare.py).
    Returns (latencies in seconds, errors by code, replies if asked for)."""
    latencies: list[float] = []
    replies: list = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    done = threading.Event()
    issued = [0]

    def finished_all() -> bool:
        return len(latencies) + sum(errors.values()) >= issued[0] and (issued[0] >= total or time.monotonic() >= deadline)

    def issue(slot: int) -> None:
        with lock:
            n = issued[0]
            if n >= total or time.monotonic() >= deadline:
                if finished_all():
                    done.set()
                return
            issued[0] += 1
        started = time.monotonic()
        future = send(slot, make(n))

        def finished(result, slot=slot, started=started):
            elapsed = time.monotonic() - started
            error = result.exception()
            reply = None if error else result.result()
            with lock:
                if error is not None:
                    name = error_name(error)
                    errors[name] = errors.get(name, 0) + 1
                elif isinstance(reply, m.ErrorResponse):
                    errors[reply.code] = errors.get(reply.code, 0) + 1
                else:
                    latencies.append(elapsed)
                    if keep_replies:
                        replies.append(reply)
                if finished_all():
                    done.set()
            issue(slot)

        future.add_done_callback(finished)

    for slot in range(max(1, min(inflight, total))):
        issue(slot)
    done.wait(timeout=max(1.0, deadline - time.monotonic() + 30))
    return latencies, errors, replies


def new_transport(args, endpoints: list[str]):
    """A transport to endpoints, with the CURVE keys of the security flags."""
    from cairn.transport_thread import TransportThread
    from transport.curve import ClientCurve

    security = getattr(args, "security", None) or {}
    curve = ClientCurve(list(endpoints), security["server_public_keys"], security["client_key"]) if security else None
    return TransportThread(endpoints, 2.0, 64 << 20, curve)


def new_client(security: dict | None, endpoints: list[str], **options):
    """A Client of endpoints with the security flags' keys (args.security)."""
    from cairn import Client

    return Client(endpoints, **(security or {}), **options)


def error_name(error: BaseException) -> str:
    """A failed call's name in the report: grpc's status code, else the exception's type."""
    code = getattr(error, "code", None)
    return code().name if callable(code) else type(error).__name__


def run_worker(args, worker: int, inflight: int, total: int, results, ready, go) -> None:
    """One process of a closed-loop benchmark. It connects, says so on
    `ready`, and starts its load when `go` is set, so the figure's clock
    counts neither process start-up nor imports (seconds on a busy machine)."""
    endpoints = args.endpoints.split(",")
    if args.protocol == "etcd-grpc":
        from cairn.bench_compare import etcd_sender

        send, close = etcd_sender(endpoints, max(1, args.conns), offset=worker)
    else:
        transports = [new_transport(args, endpoints) for _ in range(max(1, args.conns))]
        send = cairn_sender(transports, len(endpoints), offset=worker)

        def close() -> None:
            for transport in transports:
                transport.close()

    try:
        ready.put(worker)
        go.wait()
        deadline = time.monotonic() + (args.duration or 3600)
        latencies, errors, _ = closed_loop_over(send, make_requests(args, worker), total, inflight, deadline)
    finally:
        close()
    results.put((latencies, errors))


# ---------------------------------------------------------------------------- report


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def summarize(name: str, latencies: list[float], errors: dict, elapsed_s: float, params: dict) -> dict:
    values = sorted(latencies)
    buckets = {}
    for bound_ms in (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, math.inf):
        buckets[str(bound_ms)] = 0
    for value in values:
        for bound in buckets:
            if value * 1000 <= float(bound):
                buckets[bound] += 1
                break
    return {
        "benchmark": name,
        "params": params,
        "requests": len(values),
        "errors": errors,
        "elapsed_s": round(elapsed_s, 3),
        "throughput_per_s": round(len(values) / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "latency_ms": {
            "mean": round(1000 * sum(values) / len(values), 3) if values else 0.0,
            "p50": round(1000 * percentile(values, 0.50), 3),
            "p90": round(1000 * percentile(values, 0.90), 3),
            "p99": round(1000 * percentile(values, 0.99), 3),
            "p99.9": round(1000 * percentile(values, 0.999), 3),
            "max": round(1000 * values[-1], 3) if values else 0.0,
        },
        "histogram_ms": buckets,
    }


def render(summary: dict) -> str:
    """Text report: throughput, percentiles, histogram and any scenario extras."""
    lat = summary["latency_ms"]
    lines = [
        f"{summary['benchmark']}: {summary['requests']} requests in {summary['elapsed_s']}s, "
        f"{summary['throughput_per_s']}/s, errors {summary['errors'] or 0}",
        f"  latency ms: mean {lat['mean']}  p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  p99.9 {lat['p99.9']}  max {lat['max']}",
    ]
    peak = max(summary["histogram_ms"].values() or [1]) or 1
    for bound, count in summary["histogram_ms"].items():
        if count:
            lines.append(f"  <= {bound:>6} ms  {count:>8}  {'#' * max(1, round(40 * count / peak))}")
    standard_keys = {"benchmark", "params", "requests", "errors", "elapsed_s", "throughput_per_s", "latency_ms", "histogram_ms", "name"}
    extras = {key: value for key, value in summary.items() if key not in standard_keys}
    if extras:
        lines.append("  " + json.dumps(extras))
    return "\n".join(lines)


def run_benchmark(args) -> dict:
    processes = max(1, min(args.processes, args.clients))
    per_process = [args.clients // processes + (1 if i < args.clients % processes else 0) for i in range(processes)]
    totals = [args.total // processes + (1 if i < args.total % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    results, ready, go = context.Queue(), context.Queue(), context.Event()
    workers = [context.Process(target=run_worker, args=(args, i, per_process[i], totals[i] if not args.duration else 1 << 62,
                                                        results, ready, go)) for i in range(processes)]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=300)
    started = time.monotonic()
    go.set()
    latencies, errors = [], {}
    for _ in workers:
        worker_latencies, worker_errors = results.get()
        latencies.extend(worker_latencies)
        for code, count in worker_errors.items():
            errors[code] = errors.get(code, 0) + count
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    params = {k: v for k, v in vars(args).items() if k in ("clients", "conns", "total", "duration", "key_size", "val_size",
                                                            "key_space_size", "sequential_keys", "consistency", "processes",
                                                            "txn_ops", "key", "protocol")}
    return summarize(args.command, latencies, errors, elapsed, params)


# ---------------------------------------------------------------------------- watch fan-out


# Latencies are kept for this many watchers per process (every watcher counts its
# events): 1,000 watchers x 10,000 events would be 10 million samples.
SAMPLED_WATCHERS_PER_PROCESS = 10


class _Arrivals:
    """Which watches have responses waiting: each watch's listener (called on
    the client's I/O thread) notes its index, and the worker waits on one
    Event instead of polling every watch. The Event is set only when it is
    clear, and the worker clears it before it looks again, so no arrival is
    missed."""

    def __init__(self):
        self.indexes: deque[int] = deque()
        self.event = threading.Event()

    def listener(self, index: int):
        indexes, event = self.indexes, self.event

        def arrived() -> None:
            indexes.append(index)
            if not event.is_set():
                event.set()
        return arrived

    def take(self, timeout: float) -> set[int]:
        """The indexes noted since the last take, waiting up to timeout for one."""
        if not self.indexes:
            self.event.clear()
            if not self.indexes:
                self.event.wait(timeout)
        taken = set()
        while self.indexes:
            taken.add(self.indexes.popleft())
        return taken


def watch_worker(endpoints, security, prefix: bytes, watchers: int, expected: int, timeout_s: float, ready, results) -> None:
    with new_client(security, endpoints, timeout=30) as client:
        watches = [client.watch(prefix, prefix=True) for _ in range(watchers)]
        arrivals = _Arrivals()
        for index, watch in enumerate(watches):
            watch.set_listener(arrivals.listener(index))
        ready.put(watchers)
        latencies, received = [], [0] * watchers
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and min(received) < expected:
            for index in arrivals.take(0.1):
                watch = watches[index]
                response = watch.get(timeout=0)
                while response is not None:
                    now = time.time()
                    received[index] += len(response.events)
                    if index < SAMPLED_WATCHERS_PER_PROCESS:
                        latencies.extend(now - float(event.kv.value) for event in response.events)
                    response = watch.get(timeout=0)
        for watch in watches:
            watch.set_listener(None)
            watch.cancel()
    results.put((latencies, sum(received), min(received)))


def run_watch(args) -> dict:
    """--watchers watchers on one prefix, then a burst of --total puts; the
    delivery latency of each event (put sent -> event read) is the figure."""
    endpoints = args.endpoints.split(",")
    prefix = b"bench-watch/"
    processes = max(1, min(args.processes, args.watchers))
    shares = [args.watchers // processes + (1 if i < args.watchers % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    timeout_s = 60 + args.total / 100
    workers = [context.Process(target=watch_worker, args=(endpoints, getattr(args, "security", None), prefix, share, args.total, timeout_s, ready, results))
               for share in shares]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    transport = new_transport(args, endpoints)
    started = time.monotonic()
    try:
        put_latencies, put_errors, _ = closed_loop(
            [transport], len(endpoints),
            lambda n: m.PutRequest(prefix + str(n % max(1, args.key_space_size)).encode(), repr(time.time()).encode()),
            args.total, args.clients, started + timeout_s)
    finally:
        transport.close()
    latencies, delivered, least = [], 0, args.total
    for _ in workers:
        worker_latencies, worker_delivered, worker_least = results.get(timeout=timeout_s + 60)
        latencies.extend(worker_latencies)
        delivered += worker_delivered
        least = min(least, worker_least)
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    summary = summarize("watch", latencies, put_errors, elapsed,
                        {"watchers": args.watchers, "puts": args.total, "clients": args.clients, "processes": processes})
    summary["delivered_events"] = delivered
    summary["every_watcher_got_every_event"] = least == args.total
    summary["put_throughput_per_s"] = round(len(put_latencies) / elapsed, 1) if elapsed else 0.0
    summary["note"] = f"latency = put sent -> event read, sampled on {SAMPLED_WATCHERS_PER_PROCESS} watchers per process"
    return summary


# ---------------------------------------------------------------------------- lease expiry


def run_lease_expiry(args) -> dict:
    """Grant --leases leases of --ttl seconds with one key each, let them all
    expire at once, and measure the latency of other clients' puts meanwhile."""
    endpoints = args.endpoints.split(",")
    transport = new_transport(args, endpoints)
    try:
        far = time.monotonic() + 600
        _, errors, grants = closed_loop([transport], len(endpoints), lambda n: m.LeaseGrantRequest(args.ttl),
                                        args.leases, 64, far, keep_replies=True)
        ids = [grant.id for grant in grants]
        granted_at = time.monotonic()
        closed_loop([transport], len(endpoints), lambda n: m.PutRequest(b"bench-lease/%x" % ids[n], b"v", lease=ids[n]),
                    len(ids), 64, far)
        gone_after = []

        def watch_count():
            with new_client(getattr(args, "security", None), endpoints, timeout=30) as client:
                while time.monotonic() < granted_at + args.ttl + 120:
                    if client.get(b"bench-lease/", prefix=True, count_only=True).count == 0:
                        gone_after.append(time.monotonic() - granted_at)
                        return
                    time.sleep(0.2)

        poller = threading.Thread(target=watch_count)
        poller.start()
        writer_start = time.monotonic()
        latencies, writer_errors, _ = closed_loop(
            [transport], len(endpoints), lambda n: m.PutRequest(b"bench-other/%d" % (n % 100), b"v" * 64),
            1 << 62, args.clients, granted_at + args.ttl + 10)
        poller.join()
    finally:
        transport.close()
    summary = summarize("lease-expiry", latencies, {**errors, **writer_errors}, time.monotonic() - writer_start,
                        {"leases": args.leases, "ttl": args.ttl, "clients": args.clients})
    summary["all_leases_revoked_after_s"] = round(gone_after[0], 2) if gone_after else None
    summary["note"] = "latency of other clients' puts while the leases expire"
    return summary


# ---------------------------------------------------------------------------- memory of a large keyspace


def resident_kib(pid: int) -> dict:
    """VmRSS and its parts (RssAnon: the heap; RssFile: mapped files, LMDB's
    pages among them, which the kernel may drop) in KiB, from /proc."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def actor_memory(root_pid: int) -> dict:
    """{"name (pid)": "RSS MiB (anon, file)"} for every process under root_pid."""
    found = {}
    for pid, comm in sorted(process_tree(root_pid).items()):
        kib = resident_kib(pid)
        found[f"{comm} ({pid})"] = (f"{kib.get('VmRSS', 0) / 1024:.1f} MiB (anon {kib.get('RssAnon', 0) / 1024:.1f}, "
                                    f"file {kib.get('RssFile', 0) / 1024:.1f}, peak {kib.get('VmHWM', 0) / 1024:.1f})")
    return found


def run_memory(args) -> dict:
    """Load --keys keys of --val-size bytes (txns of --txn-ops puts, --clients in
    flight), then report each process's resident memory: a member must stay
    bounded however large its keyspace, since LMDB pages are the kernel's cache."""
    if not args.root_pid:
        raise SystemExit("cairn bench memory: --root-pid PID (the `cairn cluster` or `cairn node` process) is required")
    endpoints = args.endpoints.split(",")
    before = actor_memory(args.root_pid)
    value = b"v" * args.val_size
    batches = (args.keys + args.txn_ops - 1) // args.txn_ops

    def txn(n: int):
        first = n * args.txn_ops
        keys = range(first, min(args.keys, first + args.txn_ops))
        return m.TxnRequest(success=tuple(m.PutRequest(b"mem/%09d" % k, value) for k in keys))

    transport = new_transport(args, endpoints)
    started = time.monotonic()
    try:
        latencies, errors, _ = closed_loop([transport], len(endpoints), txn, batches, args.clients, started + 3600)
    finally:
        transport.close()
    elapsed = time.monotonic() - started
    with new_client(getattr(args, "security", None), endpoints, timeout=30) as client:
        count = client.get(b"mem/", prefix=True, count_only=True).count
        db_size = client.status().db_size
    after = actor_memory(args.root_pid)
    summary = summarize("memory", latencies, errors, elapsed,
                        {"keys": args.keys, "val_size": args.val_size, "txn_ops": args.txn_ops, "clients": args.clients})
    summary["keys_stored"] = count
    summary["db_size_bytes"] = db_size
    summary["rss_before"] = before
    summary["rss_after"] = after
    summary["rss_mib_max_after"] = max((float(text.split()[0]) for text in after.values()), default=0.0)
    summary["note"] = "latency = one txn of txn_ops puts; RSS from /proc/<pid>/status (RssFile includes LMDB's mapped pages)"
    return summary


# ---------------------------------------------------------------------------- standard set


STANDARD = [
    ("sequential put", ["put", "--clients", "1", "--total", "2000", "--processes", "1"]),
    ("256 concurrent puts", ["put", "--clients", "256", "--total", "30000"]),
    ("256 concurrent linearizable gets", ["range", "bench-key", "--clients", "256", "--total", "30000", "--consistency", "l"]),
    ("256 concurrent serializable gets", ["range", "bench-key", "--clients", "256", "--total", "30000", "--consistency", "s"]),
    ("64 concurrent txn-puts of 4", ["txn-put", "--clients", "64", "--total", "5000", "--txn-ops", "4"]),
    ("lease keep-alives", ["lease-keepalive", "--clients", "64", "--total", "20000"]),
    ("watch fan-out: 1,000 watchers, 10,000 puts", ["watch", "--watchers", "1000", "--total", "10000", "--clients", "16"]),
    ("10,000 leases expiring at once", ["lease-expiry", "--leases", "10000", "--ttl", "5", "--clients", "16"]),
    # last: it leaves the cluster holding a million keys
    ("1,000,000 keys of 100 bytes: resident memory", ["memory", "--keys", "1000000", "--val-size", "100", "--clients", "16"]),
]


def run_standard(args) -> int:
    """A fresh local cluster from the config, in a temporary directory."""
    import subprocess

    import yaml

    from cairn import Client
    from cairn.config import load

    config = load(args.config)
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as directory:
        with open(args.config) as handle:
            document = yaml.safe_load(handle)
        document.setdefault("member", {})["data_dir"] = os.path.join(directory, "{name}")
        document["member"]["log_level"] = "warning"
        path = os.path.join(directory, "bench.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(document, handle)
        cluster = subprocess.Popen([sys.executable, "-m", "cairn.node", "cluster", "--config", path],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        endpoints = ",".join(config.client_endpoints())
        try:
            with Client(endpoints.split(","), timeout=30) as client:
                client.put(b"bench-key", b"v" * 256)
            figures = []
            for name, argv in STANDARD:
                if argv[0] == "memory":
                    argv = [*argv, "--root-pid", str(cluster.pid)]
                sub = build_parser().parse_args(["--endpoints", endpoints, *argv])
                summary = run_one(sub)
                summary["name"] = name
                figures.append(summary)
                print(f"== {name}\n{render(summary)}", flush=True)
        finally:
            os.killpg(cluster.pid, 15)
            cluster.wait(timeout=30)
    report = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "figures": figures,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"figures written to {args.output}")
    return 0


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="cairn bench", description="load generator for cairn")
    parser.add_argument("--endpoints", default=DEFAULT_ENDPOINTS)
    security_flags(parser)  # cairnctl's CURVE flags
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--clients", type=int, default=1, help="requests in flight in total")
    common.add_argument("--conns", type=int, default=1, help="connections per worker process")
    common.add_argument("--processes", type=int, default=min(4, os.cpu_count() or 1), help="load generator processes")
    common.add_argument("--total", type=int, default=10000)
    common.add_argument("--duration", type=float, default=0, help="seconds; overrides --total")
    common.add_argument("--key-size", type=int, default=8)
    common.add_argument("--val-size", type=int, default=8)
    common.add_argument("--key-space-size", type=int, default=1)
    common.add_argument("--sequential-keys", action="store_true")
    common.add_argument("--json", action="store_true", help="print the summary as JSON")
    common.add_argument("--protocol", default="cairn", choices=["cairn", "etcd-grpc"],
                        help="cairn's wire, or etcd's gRPC API (put and range; endpoints host:port) for the same load on etcd")
    commands.add_parser("put", parents=[common])
    range_ = commands.add_parser("range", parents=[common])
    range_.add_argument("key")
    range_.add_argument("end", nargs="?")
    range_.add_argument("--consistency", default="l", choices=["l", "s"])
    txn = commands.add_parser("txn-put", parents=[common])
    txn.add_argument("--txn-ops", type=int, default=1)
    watch = commands.add_parser("watch", parents=[common], help="fan-out: watchers on one prefix, then a burst of puts")
    watch.add_argument("--watchers", type=int, default=100)
    memory = commands.add_parser("memory", parents=[common], help="load many keys, report every process's resident memory")
    memory.add_argument("--keys", type=int, default=1000000)
    memory.add_argument("--txn-ops", type=int, default=128)
    memory.add_argument("--root-pid", type=int, default=0, help="pid of `cairn cluster` (or a node): its process tree is measured")
    expiry = commands.add_parser("lease-expiry", parents=[common], help="many leases expiring at once vs other writers")
    expiry.add_argument("--leases", type=int, default=10000)
    expiry.add_argument("--ttl", type=int, default=5)
    keepalive = commands.add_parser("lease-keepalive", parents=[common])
    keepalive.add_argument("--leases", type=int, default=16, help="leases granted and kept alive")
    standard = commands.add_parser("standard", help="the standard set against a fresh local cluster")
    standard.add_argument("--config", default="configs/local-3node.yaml")
    standard.add_argument("--output", default="bench-results/latest.json")
    from cairn.bench_codec import add_codec_parser
    from cairn.bench_compare import add_compare_parser

    add_compare_parser(commands)
    add_codec_parser(commands)
    return parser


def run_one(args) -> dict:
    if args.command == "watch":
        return run_watch(args)
    if args.command == "lease-expiry":
        return run_lease_expiry(args)
    if args.command == "memory":
        return run_memory(args)
    if args.command == "lease-keepalive":
        with new_client(getattr(args, "security", None), args.endpoints.split(",")) as client:
            args.lease_ids = [client.lease_grant(3600).id for _ in range(args.leases)]
    return run_benchmark(args)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "standard":
        return run_standard(args)
    if args.command == "compare":
        from cairn.bench_compare import run_compare

        return run_compare(args)
    if args.command == "codec":
        from cairn.bench_codec import run_codec

        return run_codec(args)
    try:
        endpoints, args.security = security_options(args, args.endpoints.split(","), DEFAULT_ENDPOINTS)
    except UsageError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    args.endpoints = ",".join(endpoints)
    summary = run_one(args)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
