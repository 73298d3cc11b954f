"""Definite answers, fast (issue 14, item 5): a write forwarded by a follower and
dropped on the way (by a leader handing over, by a deposed leader, or because
the leader is gone) is answered at once with a retryable error, so the client
retries it instead of waiting out its deadline for an IndeterminateError.

Writers go through one FOLLOWER's endpoint only, while leadership moves between
the other two members and then the leader is killed."""

from __future__ import annotations

import threading
import time

import pytest

from cairn import Client
from tests.harness import Cluster
from transport.errors import CairnError

WRITERS = 4
# Below the members' request_timeout_ms (7 s): a write left unanswered fails as
# IndeterminateError here, and the election after the kill fits well within it.
CLIENT_TIMEOUT_S = 6.0
# A write retried after a rejection waits a back-off (at most 1 s) and perhaps an
# election; one that waits out CLIENT_TIMEOUT_S was left without an answer.
FAST_S = 3.0
MAX_MOVES = 16


class Writers:
    """WRITERS threads putting distinct keys through one endpoint until stopped;
    each write's (key, value, seconds, error or None) is recorded."""

    def __init__(self, endpoint: str, name: str):
        self.endpoint = endpoint
        self.name = name.encode()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[bytes, bytes, float, CairnError | None]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(WRITERS)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT_S + 5)

    def _run(self, index: int) -> None:
        with Client([self.endpoint], timeout=CLIENT_TIMEOUT_S) as client:
            n = 0
            while not self.stopping.is_set():
                key, value = b"dropped/%s/w%d/%06d" % (self.name, index, n), b"v%d" % n
                n += 1
                started = time.monotonic()
                error = None
                try:
                    client.put(key, value)
                except CairnError as exc:
                    error = exc
                with self.lock:
                    self.results.append((key, value, time.monotonic() - started, error))

    def acknowledged(self) -> int:
        with self.lock:
            return sum(1 for *_, error in self.results if error is None)

    def wait_progress(self, count: int, timeout: float = 15.0) -> None:
        """Until `count` more writes than now were acknowledged."""
        target = self.acknowledged() + count
        deadline = time.monotonic() + timeout
        while self.acknowledged() < target:
            assert time.monotonic() < deadline, f"writes stalled at {self.acknowledged()} acknowledged"
            time.sleep(0.02)


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, members=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _dropped_reasons(member) -> set[str]:
    """Why the member's raft answered forwarded proposals as dropped, so far."""
    return {r["reason"] for r in member.log_records("raft") if r["event"] == "forwarded_proposals_dropped"}


def _rejections(member, codes=("NotLeader", "NoLeader")) -> list[dict]:
    return [r for r in member.log_records("frontend") if r["event"] == "proposals_rejected" and r.get("code") in codes]


def test_writes_through_a_follower_get_definite_answers_while_leadership_moves(cluster):
    leader = cluster.leader()
    follower, other = [m for m in cluster.members.values() if m is not leader]
    with Client([leader.endpoint], timeout=10.0) as admin, Writers(follower.endpoint, "moving") as moving:
        moving.wait_progress(20)
        # Leadership moves back and forth between the two members the writers do
        # not use: each handover drops what the old leader is sent meanwhile.
        # Whether a write lands in that short window is chance, so it moves
        # until one did (rarely more than four times), at most MAX_MOVES.
        current, target = leader, other
        for moves in range(1, MAX_MOVES + 1):
            admin.move_leader(target.spec.id)
            moving.wait_progress(20)
            current, target = target, current
            if moves >= 4 and _dropped_reasons(follower) >= {"rejected_by_peer"}:
                break
    # The leader dies, with no write in flight (whose outcome would be unknown,
    # and rightly reported so): what the follower forwards to it from now on
    # cannot even be sent, until the follower notices and a new leader is elected.
    current.kill9()
    with Writers(follower.endpoint, "after_kill") as after_kill:
        after_kill.wait_progress(20)

    results = moving.results + after_kill.results
    failed = [(key, seconds, error) for key, _, seconds, error in results if error is not None]
    assert not failed, failed
    assert max(seconds for _, _, seconds, _ in moving.results) < FAST_S
    # The retryable rejections were really exercised; and the dead leader was
    # noticed: the follower's raft forgot it when its connection dropped
    # (RaftCore.leader_unreachable, within a tick), or a forward to it could
    # not be sent (the dropped reason of the same name).
    reasons = _dropped_reasons(follower)
    assert "rejected_by_peer" in reasons, reasons
    forgotten = [r for r in follower.log_records("raft") if r["event"] == "leader_unreachable"]
    assert forgotten or "leader_unreachable" in reasons, reasons
    assert _rejections(follower)

    # Every acknowledged write is there.
    survivors = [m.endpoint for m in cluster.running()]
    with Client(survivors, timeout=10.0) as reader:
        stored = {kv.key: kv.value for kv in reader.get(b"dropped/", prefix=True).kvs}
    missing = [key for key, value, _, error in results if error is None and stored.get(key) != value]
    assert not missing, missing[:10]
