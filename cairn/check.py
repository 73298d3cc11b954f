"""`cairnctl check perf` and `cairnctl check datascale`: etcdctl 3.4's checks,
so users can qualify their hardware with the commands they know.

check perf --load s|m|l|xl writes for 60 s at a fixed rate (the load's
writes/s, with that many clients in flight at most) keys of 256 bytes and
values of 1 KiB under a prefix that must be empty, deletes them, and passes if
the throughput reached 90% of the rate, the slowest write took at most 0.5 s
and the latencies' standard deviation is at most 0.1 s, printing etcdctl's
PASS/FAIL lines (exit 1 on FAIL). `--duration` (hidden; etcdctl has no such
flag) shortens the 60 s, for tests and quick looks.

check datascale --load s|m|l|xl writes the load's number of 1 KiB pairs with
its clients as fast as they go, and reports how much the first endpoint's
member grew in resident memory (the sum over its actors, from its metrics),
then deletes them. etcd's keys are 512 bytes and its values 512; cairn's keys
are at most 511 bytes (LMDB's key limit), so here a pair is a 256-byte key and
a 768-byte value: 1 KiB all the same. `--limit` (hidden) overrides the count.

Both offer etcdctl's --prefix, --auto-compact and --auto-defrag. The load runs
on the asyncio client (cairn.aio), so one process keeps hundreds of writes in
flight.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

from cairn import aio
from cairn.client import Client
from transport.errors import CairnError


@dataclass(frozen=True)
class PerfLoad:
    writes_per_s: int
    clients: int
    duration_s: int = 60


@dataclass(frozen=True)
class DatascaleLoad:
    pairs: int
    clients: int
    pair_bytes: int = 1024


PERF_LOADS = {"s": PerfLoad(150, 50), "m": PerfLoad(1000, 200), "l": PerfLoad(8000, 500), "xl": PerfLoad(15000, 1000)}
DATASCALE_LOADS = {"s": DatascaleLoad(10_000, 50), "m": DatascaleLoad(100_000, 200),
                   "l": DatascaleLoad(1_000_000, 500), "xl": DatascaleLoad(3_000_000, 1000)}
LOAD_ALIASES = {"s": "s", "small": "s", "m": "m", "medium": "m", "l": "l", "large": "l", "xl": "xl", "xLarge": "xl"}
PERF_PREFIX = "/etcdctl-check-perf/"
DATASCALE_PREFIX = "/etcdctl-check-datascale/"
PERF_KEY_BYTES, PERF_VALUE_BYTES = 256, 1024
DATASCALE_KEY_BYTES = 256
# etcdctl's pass marks
MIN_RATE_FRACTION = 0.9
SLOWEST_S_MAX = 0.5
STDDEV_S_MAX = 0.1
# How far behind its schedule the rate limiter may catch up (in one burst).
RATE_LAG_S = 0.1
# A report of the member's actors is at most this old (actors/metrics.py: REPORT_INTERVAL_S).
METRICS_FRESH_S = 1.2


class CheckFailed(Exception):
    """A check that cannot run (a used prefix, no memory figure): etcdctl's message."""


def load_name(name: str) -> str:
    if name not in LOAD_ALIASES:
        raise CheckFailed(f"unknown load option {name}")
    return LOAD_ALIASES[name]


def random_key(prefix: bytes, size: int) -> bytes:
    """etcdctl's: a random varint at the start of `size` zero bytes."""
    return prefix + os.urandom(8) + bytes(size - 8)


@dataclass
class Results:
    latencies: list
    errors: Counter
    elapsed_s: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def slowest(self) -> float:
        return max(self.latencies, default=0.0)

    @property
    def stddev(self) -> float:
        if not self.latencies:
            return 0.0
        mean = sum(self.latencies) / len(self.latencies)
        return math.sqrt(sum((x - mean) ** 2 for x in self.latencies) / len(self.latencies))


class Progress:
    """etcdctl's progress bar, on a terminal only (stderr)."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.shown = sys.stderr.isatty()

    def advance(self, count: int = 1) -> None:
        self.done = min(self.total, self.done + count)
        if self.shown:
            width = 40
            filled = int(width * self.done / max(1, self.total))
            print(f"\r {self.done} / {self.total} B{'o' * filled}{' ' * (width - filled)}m! "
                  f"{100 * self.done / max(1, self.total):.2f}% {time.monotonic() - self.started:.0f}s",
                  end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.shown:
            print(file=sys.stderr, flush=True)


async def _put_loop(client, keys, value: bytes, clients: int, interval_s: float, deadline: float,
                    progress: Progress | None) -> Results:
    """Put each key of `keys` with at most `clients` in flight, at most one
    every interval_s (0: as fast as they go), until the keys or the deadline end."""
    slots = asyncio.Semaphore(clients)
    latencies, errors = [], Counter()
    pending: set = set()

    async def put(key: bytes) -> None:
        started = time.monotonic()
        try:
            await client.put(key, value)
            latencies.append(time.monotonic() - started)
        except CairnError as error:
            errors[str(error)] += 1
        finally:
            slots.release()
            if progress is not None and interval_s == 0:
                progress.advance()

    started = next_at = time.monotonic()
    for key in keys:
        now = time.monotonic()
        if now >= deadline:
            break
        if next_at > now:
            await asyncio.sleep(next_at - now)
        # Keep to the schedule rather than to the last sleep (asyncio's sleeps
        # overshoot by about a millisecond, which at 150 writes/s alone cost
        # 15%), but never catch up on more than RATE_LAG_S of falling behind.
        next_at = max(next_at + interval_s, time.monotonic() - RATE_LAG_S)
        await slots.acquire()
        task = asyncio.create_task(put(key))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    return Results(latencies, errors, time.monotonic() - started)


def _keys(prefix: bytes, size: int, count: int | None = None):
    produced = 0
    while count is None or produced < count:
        produced += 1
        yield random_key(prefix, size)


def _prefix_must_be_empty(client: Client, prefix: str) -> None:
    if client.get(prefix, prefix=True, limit=1, keys_only=True).kvs:
        raise CheckFailed(f'prefix "{prefix}" has keys. Delete with etcdctl del --prefix {prefix} first')


def _clean_up(client: Client, prefix: str, auto_compact: bool, auto_defrag: bool) -> None:
    revision = client.delete(prefix, prefix=True, timeout=30).header.revision
    if auto_compact:
        client.compact(revision, physical=True)
        print(f"compacted revision {revision}")
    if auto_defrag:
        for endpoint in client.endpoints:
            client.defragment(endpoint=endpoint, timeout=max(client.timeout, 60.0))
            print(f"Finished defragmenting etcd member[{endpoint}]")


def _error_lines(errors: Counter) -> list[str]:
    return ["FAIL: too many errors"] + [f"FAIL: ERROR({error}) -> {count}" for error, count in errors.items()]


def check_perf(client: Client, security: dict, load: str, prefix: str = PERF_PREFIX, duration_s: float | None = None,
               auto_compact: bool = False, auto_defrag: bool = False) -> bool:
    """Run the check, print etcdctl's lines; True if it passed."""
    spec = PERF_LOADS[load_name(load)]
    duration = spec.duration_s if duration_s is None else duration_s
    _prefix_must_be_empty(client, prefix)
    progress = Progress(math.ceil(duration))

    async def run() -> Results:
        async with aio.Client(client.endpoints, timeout=client.timeout, **security) as load_client:
            ticker = asyncio.create_task(_tick(progress, duration))
            try:
                return await _put_loop(load_client, _keys(prefix.encode(), PERF_KEY_BYTES), bytes(PERF_VALUE_BYTES),
                                       spec.clients, 1 / spec.writes_per_s, time.monotonic() + duration, None)
            finally:
                ticker.cancel()

    results = asyncio.run(run())
    progress.finish()
    _clean_up(client, prefix, auto_compact, auto_defrag)
    passed = not results.errors
    lines = [] if passed else _error_lines(results.errors)
    if results.rate / spec.writes_per_s <= MIN_RATE_FRACTION:
        lines.append(f"FAIL: Throughput too low: {int(results.rate) + 1} writes/s")
        passed = False
    else:
        lines.append(f"PASS: Throughput is {int(results.rate) + 1} writes/s")
    if results.slowest > SLOWEST_S_MAX:
        lines.append(f"Slowest request took too long: {results.slowest:f}s")
        passed = False
    else:
        lines.append(f"PASS: Slowest request took {results.slowest:f}s")
    if results.stddev > STDDEV_S_MAX:
        lines.append(f"Stddev too high: {results.stddev:f}s")
        passed = False
    else:
        lines.append(f"PASS: Stddev is {results.stddev:f}s")
    lines.append("PASS" if passed else "FAIL")
    print("\n".join(lines))
    return passed


async def _tick(progress: Progress, duration: float) -> None:
    for _ in range(math.ceil(duration)):
        await asyncio.sleep(1)
        progress.advance()


def member_memory_bytes(client: Client, endpoint: str) -> int:
    """The member's resident memory: its actors' own reports, summed."""
    response = client.metrics(endpoint=endpoint)
    return sum(sample.value for report in response.reports for sample in report.samples
               if sample.name == "cairn_actor_resident_memory_bytes")


def check_datascale(client: Client, security: dict, load: str, prefix: str = DATASCALE_PREFIX,
                    pairs: int | None = None, auto_compact: bool = False, auto_defrag: bool = False) -> bool:
    spec = DATASCALE_LOADS[load_name(load)]
    count = spec.pairs if pairs is None else pairs
    endpoint = client.endpoints[0]  # as etcdctl: the first endpoint's member is measured
    _prefix_must_be_empty(client, prefix)
    before = member_memory_bytes(client, endpoint)
    if not before:
        print("FAIL: Could not read process_resident_memory_bytes before the put operations.")
        return False
    print(f"Start data scale check for work load [{count} key-value pairs, {spec.pair_bytes} bytes per key-value, "
          f"{spec.clients} concurrent clients].", flush=True)
    progress = Progress(count)

    async def run() -> Results:
        async with aio.Client(client.endpoints, timeout=client.timeout, **security) as load_client:
            return await _put_loop(load_client, _keys(prefix.encode(), DATASCALE_KEY_BYTES, count),
                                   bytes(spec.pair_bytes - DATASCALE_KEY_BYTES), spec.clients, 0, math.inf, progress)

    results = asyncio.run(run())
    progress.finish()
    time.sleep(METRICS_FRESH_S)  # every actor has reported since the last put
    after = member_memory_bytes(client, endpoint)
    _clean_up(client, prefix, auto_compact, auto_defrag)
    if not after:
        print("FAIL: Could not read process_resident_memory_bytes after the put operations.")
        return False
    if results.errors:
        print("\n".join(_error_lines(results.errors)))
        return False
    print(f"PASS: Approximate system memory used : {(after - before) / (1024 * 1024):.2f} MB.")
    return True
