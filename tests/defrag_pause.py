"""How long a member's reads and writes pause while it defragments a large
keyspace (issue 17: "a pause no longer than a bounded time that the note
measures for a 1 GiB database"). Not a test: it takes minutes and a few GiB of
disk, so it is run by hand and its figure goes into docs/PERFORMANCE.md:

    .venv/bin/python -m tests.defrag_pause --keys 1000000 --val-size 1024

It starts a one-member cluster on free loopback ports in a temporary directory,
fills it (txns of --txn-ops puts, cairn bench's closed loop), then defragments
it while two threads loop over the member, one doing serializable gets and one
doing puts, and reports the longest gap between two answers each saw, the
defragment's own time and the file's size. The cluster and its data dir are
removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time

from cairn import Client
from cairn.bench import closed_loop
from cairn.transport_thread import TransportThread
from tests.harness import Cluster
from transport import messages as m


class Prober(threading.Thread):
    """Loops over one request and records the longest gap between answers."""

    def __init__(self, endpoint: str, name: str, call):
        super().__init__(name=name, daemon=True)
        self.endpoint, self.call = endpoint, call
        self.stop = threading.Event()
        self.gap_s_max = 0.0
        self.gap_at = ("", "")  # wall-clock start and end of the longest gap
        self.count = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with Client([self.endpoint], timeout=120) as client:
            last, last_wall = time.monotonic(), time.time()
            while not self.stop.is_set():
                try:
                    self.call(client, self.count)
                except Exception as error:  # recorded: the report says what failed
                    self.errors.append(f"{type(error).__name__}: {error}")
                now, wall = time.monotonic(), time.time()
                if now - last > self.gap_s_max:
                    self.gap_s_max, self.gap_at = now - last, (_clock(last_wall), _clock(wall))
                last, last_wall = now, wall
                self.count += 1


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(wall)) + f"{wall % 1:.3f}"[1:]


def fill(endpoint: str, keys: int, val_size: int, txn_ops: int, clients: int) -> float:
    value = b"v" * val_size

    def txn(n: int):
        first = n * txn_ops
        return m.TxnRequest(success=tuple(m.PutRequest(b"big/%09d" % k, value)
                                          for k in range(first, min(keys, first + txn_ops))))

    transport = TransportThread([endpoint], 30.0, 64 << 20)
    started = time.monotonic()
    try:
        _, errors, _ = closed_loop([transport], 1, txn, (keys + txn_ops - 1) // txn_ops, clients, started + 3600)
    finally:
        transport.close()
    if errors:  # a txn refused under load (a busy shared machine) leaves a few keys out; the count says
        print(f"fill: txns refused: {errors}", file=sys.stderr)
    return time.monotonic() - started


def measure(directory: str, args) -> dict:
    with Cluster(directory, members=1, limits={"quota_backend_bytes": 8 << 30}) as cluster:
        endpoint = cluster.endpoints[0]
        fill_s = fill(endpoint, args.keys, args.val_size, args.txn_ops, args.clients)
        with Client([endpoint], timeout=600) as client:
            before = client.status()
            stored = client.get(b"big/", prefix=True, count_only=True).count
            probers = [Prober(endpoint, "reader", lambda c, n: c.get(b"big/%09d" % (n % args.keys), serializable=True)),
                       Prober(endpoint, "writer", lambda c, n: c.put(b"probe/%d" % (n % 100), b"x"))]
            for prober in probers:
                prober.start()
            time.sleep(2.0)  # the probers' gap before the defragment, for comparison
            baseline = {p.name: p.gap_s_max for p in probers}
            started = time.monotonic()
            client.defragment(timeout=600)
            defrag_s = time.monotonic() - started
            time.sleep(2.0)
            for prober in probers:
                prober.stop.set()
                prober.join(130)
            after = client.status()
        member = cluster.members["n1"]
        pause_ms = [record.get("pause_ms") for record in member.log_records("apply")
                    if record.get("event") == "defragmented"]
        # when each actor heard of the defragment (the logs' UTC clock), to place the gaps
        timeline = sorted((record["ts"][11:23], actor, record["event"],
                           {k: v for k, v in record.items() if k.endswith("_ms")})
                          for actor in ("frontend", "apply", "watch", "lease") for record in member.log_records(actor)
                          if "defrag" in record.get("event", "") or "keyspace" in record.get("event", ""))
    return {
        "keys": args.keys, "keys_stored": stored, "val_size": args.val_size, "fill_s": round(fill_s, 1),
        "db_size_before": before.db_size, "db_size_in_use_before": before.db_size_in_use,
        "db_size_after": after.db_size, "defragment_call_s": round(defrag_s, 2), "apply_pause_ms": pause_ms,
        "gap_s_max_before_defrag": {name: round(gap, 3) for name, gap in baseline.items()},
        "gap_s_max": {p.name: round(p.gap_s_max, 3) for p in probers},
        "gap_at_utc": {p.name: p.gap_at for p in probers}, "timeline_utc": timeline,
        "answers": {p.name: p.count for p in probers}, "errors": {p.name: p.errors[:3] for p in probers},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--val-size", type=int, default=1024)
    parser.add_argument("--txn-ops", type=int, default=128)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--dir", default=None, help="parent of the temporary data dir (default: the system's)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="cairn-defrag-pause-", dir=args.dir)
    try:
        print(json.dumps(measure(directory, args), indent=2))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
