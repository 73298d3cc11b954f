"""Corruption checks (etcd's corrupt checker): part of the frontend actor.

Theory of operation
-------------------
A check compares members' HashKV (store/maintenance.py: hash_kv, the MVCC
history up to a revision, the same on every member that applied the same
entries) at one common revision R: the checking member asks its own frontend
for HashKV at its latest revision R, then every peer's frontend for HashKV at R,
as a client would (cairn.client.Client, one call per member, on a worker
thread, so the frontend's loop never waits for a peer). A peer that has not
applied R yet (FutureRevision) is asked again for a short while; one that has
compacted past R, answers with another compact revision, or does not answer is
left out of this round.

The hash most members gave is the reference (a tie goes to the checking
member's own hash); every member whose hash differs raises etcd's CORRUPT
alarm, proposed through the Raft log as AlarmRequest(ACTIVATE, member,
CORRUPT) like apply's NOSPACE, so every member agrees. While it is raised the
state machine refuses KV and lease writes and the frontend refuses reads with
"etcdserver: corrupt cluster" (gRPC DATA_LOSS), as etcd's corrupt applier,
until `cairnctl alarm disarm`.

When: the leader every `corruption_check_interval_s` (0 = never; etcd's
--experimental-corrupt-check-time), and every member once after it starts and
knows a leader (`initial_corruption_check`; etcd's
--experimental-initial-corrupt-check, which refuses to start instead). At most
one check runs at a time per member; the frontend only starts it from its
timer and reads its outcome from a queue, so no check is on the request path.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

from actors.member_specs import member_spec
from transport import codec
from transport.entries import make_payload
from transport.errors import CairnError, FutureRevisionError
from transport.limits import limit, limits
from transport.messages import ALARM_ACTIVATE, ALARM_CORRUPT, ROLE_LEADER, AlarmRequest, HashKVRequest, ProposeBatch


@limits()
class CorruptionLimits:
    catch_up_s: float = limit(
        3.0,
        "A peer behind the common revision is asked again for this long: longer than a follower normally lags, short "
        "enough to bound a check.")
    call_timeout_s: float = limit(
        5.0,
        "Each HashKV call: a member that does not answer in this time is left out.")
    initial_delay_s: float = limit(
        1.0,
        "The initial check waits this long after start-up for the member to catch up with its leader before hashing "
        "its own history.")


@dataclass(frozen=True, slots=True)
class CheckResult:
    revision: int
    hashes: dict  # member id -> hash, of the members compared
    skipped: dict  # member id -> why it was left out
    corrupt: tuple  # member ids whose hash differs from the reference


def judge(own_id: int, hashes: dict) -> tuple:
    """Member ids whose hash differs from the reference: the hash most members
    gave, a tie going to own_id's."""
    if len(hashes) < 2:
        return ()
    counts = Counter(hashes.values())
    best = max(counts.values())
    leaders = [h for h, n in counts.items() if n == best]
    reference = hashes.get(own_id) if hashes.get(own_id) in leaders else leaders[0]
    return tuple(sorted(member for member, h in hashes.items() if h != reference))


class CorruptionChecker:
    limits = CorruptionLimits()

    def __init__(self, frontend):
        self.front = frontend
        settings = frontend.settings
        self.interval_s = settings.corruption_check_interval_s
        self.initial_pending = settings.initial_corruption_check
        self.started_at = time.monotonic()
        self.last_check = time.monotonic()
        self.results: queue.Queue = queue.Queue()
        self.worker: threading.Thread | None = None
        self.checks = 0

    # ------------------------------------------------------------------ frontend's loop

    def on_timer(self, now: float) -> None:
        while True:
            try:
                outcome = self.results.get_nowait()
            except queue.Empty:
                break
            self._conclude(outcome)
        if self.worker is not None and self.worker.is_alive():
            return
        front = self.front
        if not front.raft.leader_id or front.raft.is_learner:
            return
        due = False
        if self.initial_pending and now - self.started_at >= self.limits.initial_delay_s:
            self.initial_pending = False
            due = True
        elif self.interval_s and front.raft.role == ROLE_LEADER and now - self.last_check >= self.interval_s:
            due = True
        if due:
            self.start()

    def start(self) -> None:
        front = self.front
        self.last_check = time.monotonic()
        targets = []
        for member in front.member_service.members():
            if member.is_learner or not member.client_urls:
                continue
            # a member added at run time: its record and key from the log's membership
            spec = member_spec(front.config, front.env, front.keyspace.meta_db, member.id)
            if front.config.security.curve and not (spec and spec.public_key):
                continue  # added without a public key: it cannot be reached in curve mode
            security = front.client_security(spec) if spec is not None else {}
            targets.append((member.id, member.client_urls[0], security))
        if not any(member_id == front.member.id for member_id, _, _ in targets):
            return  # a learner (or a member not yet in the records) compares nothing: its own hash fixes the revision
        self.worker = threading.Thread(target=self._run, args=(targets,), name="corruption-check", daemon=True)
        self.worker.start()

    def _conclude(self, outcome) -> None:
        front = self.front
        self.checks += 1
        if isinstance(outcome, str):
            front.log.warning("corruption_check_failed", error=outcome)
            return
        if not outcome.corrupt:
            front.log.info("corruption_check_passed", revision=outcome.revision, members=len(outcome.hashes),
                           skipped={f"{k:x}": v for k, v in outcome.skipped.items()} or None)
            return
        alarmed = {a.member_id for a in front.alarm_list().alarms if a.alarm == ALARM_CORRUPT}
        for member_id in outcome.corrupt:
            front.log.error("corruption_detected", member=f"{member_id:x}", revision=outcome.revision,
                            hashes={f"{k:x}": v for k, v in outcome.hashes.items()})
            if member_id in alarmed:
                continue
            request_id = int.from_bytes(os.urandom(8), "big") >> 1
            frame = codec.encode(AlarmRequest(ALARM_ACTIVATE, member_id, ALARM_CORRUPT), request_id)
            front.send(front.to_raft, ProposeBatch((request_id,), (make_payload(front.member.id, frame),)))

    # ------------------------------------------------------------------ worker thread

    def _run(self, targets) -> None:
        try:
            self.results.put(self.check(targets))
        except Exception as error:  # reported on the loop; the next round tries again
            self.results.put(f"{type(error).__name__}: {error}")

    def check(self, targets) -> CheckResult:
        from cairn.client import Client

        own_id = self.front.member.id
        hashes, skipped, compacts = {}, {}, {}
        ordered = sorted(targets, key=lambda t: t[0] != own_id)  # own first: it fixes the revision
        revision = 0
        for member_id, endpoint, security in ordered:
            with Client([endpoint], timeout=self.limits.call_timeout_s, **security) as client:
                deadline = time.monotonic() + self.limits.catch_up_s
                while True:
                    try:
                        response = client.call(HashKVRequest(revision), write=False, endpoint=endpoint)
                        break
                    except FutureRevisionError:
                        if time.monotonic() >= deadline:
                            skipped[member_id] = "behind"
                            response = None
                            break
                        time.sleep(0.1)
                    except CairnError as error:
                        skipped[member_id] = f"{error.code}: {error.message}"
                        response = None
                        break
            if response is None:
                if member_id == own_id:
                    raise RuntimeError(f"own HashKV failed: {skipped[member_id]}")
                continue
            if member_id == own_id:
                revision = response.hash_revision
                compacts[member_id] = response.compact_revision
            elif response.compact_revision != compacts[own_id]:
                skipped[member_id] = f"compact revision {response.compact_revision}"
                continue
            hashes[member_id] = response.hash
        return CheckResult(revision, hashes, skipped, judge(own_id, hashes))
