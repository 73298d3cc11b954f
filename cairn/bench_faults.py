"""The fault mix's pure parts: the seeded fault schedule, the record of each
operation the workers made, the linearizability checker over those records,
and where the time went around each fault. No I/O, no clock: the runner
(cairn/bench_fault_mix.py) hands times in.

Theory of operation
-------------------
Six workers each own one key (a single-writer register) and read any key.
A key's value is a sequence number, fixed-width decimal, so byte order is
number order. Every write of a key is a transaction guarded by the value:
"write" is `if value < new: put new` and "cas" is `if value == expected: put
new`, with `new` always higher than anything its worker wrote before. So a
key's value only ever grows, and a write that timed out and is applied late
(a request held in a SIGSTOPped member, say) cannot move it back: that keeps
the check below sound without having to search orders of events, and makes a
write safe to send again (the guard turns a repeat into a no-op whose failure
branch shows the value it finds).

For a value v of key K seen at some point within [invoked, returned] (a read,
a txn's failure branch, a successful cas's `expected`):
  v >= every value K is known to have had before `invoked` (acknowledged
       writes and values seen, both returned before `invoked`) — nothing
       acknowledged is lost, and no read goes back in time;
  v <= the highest value any write of K was invoked with before `returned`
       — no read sees the future.
Acknowledged writes must also agree with the guards: a "write" whose guard
failed on its first attempt found K at a value nobody could have written yet;
a cas that failed must have seen something other than `expected`.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

KILL, STOP, KILL_LEADER, KILL_ALL = "kill -9", "SIGSTOP", "kill leader", "kill -9 all"
FAULT_KINDS = (KILL, STOP, KILL_LEADER, KILL_ALL)
READ, WRITE, CAS = "read", "write", "cas"

# A fault's member stays down (or stopped) this long before it is restarted (or continued).
HOLD_S_MIN, HOLD_S_MAX = 0.5, 2.0
# Quiet time after a fault heals, before the next one: the cluster is meant to recover in it.
GAP_S_MIN, GAP_S_MAX = 2.0, 4.0
# The first fault waits this long (or a fifth of a short run): the run starts on a healthy cluster,
# and its rate before the first fault is the same clients' rate without faults.
FIRST_FAULT_S = 5.0
VALUE_DIGITS = 12


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float  # from the start of the run
    kind: str
    member: int  # kill -9 and SIGSTOP: the member's index; kill leader: used when no leader is found
    hold_s: float  # down or stopped this long


def fault_schedule(seed: int, duration_s: float, members: int = 3) -> list[Fault]:
    """The faults of a run, the same for every system given the same seed.
    Kinds come in shuffled rounds of all four, so every kind shows in ~20 s."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    kinds: list[str] = []
    at_s = min(FIRST_FAULT_S, duration_s / 5)
    while True:
        if not kinds:
            kinds = list(FAULT_KINDS)
            rng.shuffle(kinds)
        hold_s = round(rng.uniform(HOLD_S_MIN, HOLD_S_MAX), 3)
        if at_s + hold_s >= duration_s:
            return faults
        faults.append(Fault(round(at_s, 3), kinds.pop(), rng.randrange(members), hold_s))
        at_s += hold_s + rng.uniform(GAP_S_MIN, GAP_S_MAX)


def encode_value(sequence: int) -> bytes:
    return b"%0*d" % (VALUE_DIGITS, sequence)


def decode_value(value: bytes | None) -> int | None:
    """The sequence number a key holds; None if the key is missing, -1 if what
    it holds is not one of ours (either is a violation)."""
    if value is None:
        return None
    return int(value) if value.isdigit() and len(value) == VALUE_DIGITS else -1


@dataclass(frozen=True, slots=True)
class Operation:
    """One worker operation, over all its attempts. `invoked` is the first
    attempt's start, `returned` the last one's end; ok: it got a definite
    answer (it is acknowledged). value: a read's sequence, a write's or a cas's
    new one. succeeded: the txn's guard held. observed: the failure branch's
    read of the key. retried: an earlier attempt was sent with no answer, so it
    may have been applied."""

    worker: int
    kind: str
    key: int
    invoked: float
    returned: float
    ok: bool
    value: int | None = None
    expected: int | None = None
    succeeded: bool | None = None
    observed: int | None = None
    retried: bool = False
    error: str = ""


def write_acknowledged(op: Operation) -> bool:
    """The op's write is known to be applied: its guard held, or a repeat found
    the key at exactly its value (an earlier attempt of it was applied)."""
    if not op.ok or op.kind not in (WRITE, CAS):
        return False
    return bool(op.succeeded) or (op.retried and op.observed == op.value)


def observations(op: Operation) -> list[int | None]:
    """The values of op.key the op saw, each at some point within its interval."""
    if not op.ok:
        return []
    if op.kind == READ:
        return [op.value]
    if op.kind == CAS and op.succeeded:
        return [op.expected]
    if not op.succeeded and not write_acknowledged(op):
        return [op.observed]
    return []


def guard_violation(op: Operation) -> str:
    """What is wrong with an acknowledged write's answer by itself, or ''."""
    if not op.ok or op.succeeded or op.kind not in (WRITE, CAS) or write_acknowledged(op):
        return ""
    if op.kind == WRITE:
        return (f"worker {op.worker}: write of {op.value} to key {op.key} found it at {op.observed} "
                f"before any attempt of it could apply")
    if op.observed == op.expected:
        return f"worker {op.worker}: cas {op.expected}->{op.value} on key {op.key} failed though the key held {op.expected}"
    return ""


@dataclass
class Verdict:
    acknowledged: int = 0
    values_checked: int = 0
    violations: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # final reads below an acknowledged write

    @property
    def linearizable(self) -> bool:
        return not self.violations and not self.lost


class _KeyTimeline:
    """One key's known lower bounds by time and writes' values by invocation time."""

    def __init__(self, ops: list[Operation], initial: int):
        known = sorted([(op.returned, op.value) for op in ops if write_acknowledged(op)]
                       + [(op.returned, v) for op in ops for v in observations(op) if v is not None])
        self.known_times = [t for t, _ in known]
        self.known_max = _running_max([v for _, v in known], initial)
        writes = sorted((op.invoked, op.value) for op in ops if op.kind in (WRITE, CAS))
        self.write_times = [t for t, _ in writes]
        self.write_max = _running_max([v for _, v in writes], initial)
        self.initial = initial

    def lowest(self, invoked: float) -> int:
        """The highest value the key is known to have had before `invoked`."""
        i = bisect.bisect_left(self.known_times, invoked)
        return self.known_max[i - 1] if i else self.initial

    def highest(self, returned: float) -> int:
        """The highest value any write of the key was invoked with by `returned`."""
        i = bisect.bisect_right(self.write_times, returned)
        return self.write_max[i - 1] if i else self.initial


def _running_max(values: list[int], initial: int) -> list[int]:
    out, best = [], initial
    for value in values:
        best = max(best, value)
        out.append(best)
    return out


def check_history(ops: list[Operation], finals: list[Operation], initial: int = 0) -> Verdict:
    """ops: every worker operation; finals: a read of each key after the run
    (its violations are the lost writes). Keys start at `initial`, written and
    acknowledged before any op."""
    verdict = Verdict(acknowledged=sum(op.ok for op in ops))
    by_key: dict[int, list[Operation]] = {}
    for op in ops + finals:
        by_key.setdefault(op.key, []).append(op)
    final_ids = {id(op) for op in finals}
    for key, key_ops in by_key.items():
        timeline = _KeyTimeline(key_ops, initial)
        for op in key_ops:
            problem = guard_violation(op)
            if problem:
                verdict.violations.append(problem)
            for value in observations(op):
                verdict.values_checked += 1
                problem = _bounds_violation(op, value, timeline)
                if problem:
                    (verdict.lost if id(op) in final_ids else verdict.violations).append(problem)
    return verdict


def _bounds_violation(op: Operation, value: int | None, timeline: _KeyTimeline) -> str:
    who = "final read" if op.worker < 0 else f"worker {op.worker}'s {op.kind}"
    if value is None:
        return f"{who} found key {op.key} missing"
    lowest, highest = timeline.lowest(op.invoked), timeline.highest(op.returned)
    if value < lowest:
        return f"{who} saw key {op.key} at {value}, below {lowest}, which it had before the {op.kind} began"
    if value > highest:
        return f"{who} saw key {op.key} at {value}, above {highest}, the highest write invoked before it returned"
    return ""


# ---------------------------------------------------------------------------- where the time went


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault as it was injected: when it began and when it was healed."""

    kind: str
    members: tuple[int, ...]
    began: float
    healed: float


def fault_windows(events: list[FaultEvent], ops: list[Operation], end: float, workers: int) -> list[dict]:
    """Per fault, over [its start, the next one's start): the longest time no
    operation was acknowledged (the cluster's outage), from the fault to the
    first acknowledgement of a write invoked after it, the stall of each worker (its longest
    time without an answer, summed), and the failed attempts."""
    acks = sorted(op.returned for op in ops if op.ok)
    writes = sorted((op.invoked, op.returned) for op in ops if write_acknowledged(op))
    rows = []
    for number, event in enumerate(events):
        until = events[number + 1].began if number + 1 < len(events) else end
        in_window = [t for t in acks if event.began <= t < until]
        first_write = min((returned for invoked, returned in writes if invoked >= event.began), default=None)
        stalled = 0.0
        for worker in range(workers):
            mine = [op.returned for op in ops if op.ok and op.worker == worker and event.began <= op.returned < until]
            stalled += _longest_gap(event.began, mine, until)
        rows.append({
            "kind": event.kind, "members": list(event.members), "at_s": event.began,
            "held_s": round(event.healed - event.began, 3),
            "no_ack_s": round(_longest_gap(event.began, in_window, until), 3),
            "to_first_write_s": round(first_write - event.began, 3) if first_write is not None else None,
            "worker_stall_s": round(stalled, 3),
            "acknowledged": len(in_window),
            "failed": sum(1 for op in ops if not op.ok and event.began <= op.returned < until),
        })
    return rows


def _longest_gap(start: float, times: list[float], end: float) -> float:
    points = [start, *times, end]
    return max(b - a for a, b in zip(points, points[1:]))


def summarize_windows(rows: list[dict]) -> dict:
    """Per fault kind: how many, and the mean of each time over them."""
    out = {}
    for kind in FAULT_KINDS:
        mine = [row for row in rows if row["kind"] == kind]
        if not mine:
            continue
        writes = [row["to_first_write_s"] for row in mine if row["to_first_write_s"] is not None]
        out[kind] = {
            "count": len(mine),
            "no_ack_s": round(sum(row["no_ack_s"] for row in mine) / len(mine), 3),
            "to_first_write_s": round(sum(writes) / len(writes), 3) if writes else None,
            "worker_stall_s": round(sum(row["worker_stall_s"] for row in mine) / len(mine), 3),
            "acknowledged": round(sum(row["acknowledged"] for row in mine) / len(mine)),
        }
    return out
