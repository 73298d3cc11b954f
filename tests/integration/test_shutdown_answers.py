"""Issue 14: an actor that stops answers every request it still holds.

One test per actor kind that holds requests: the frontend (a write waiting
for its entry), the raft actor (proposals waiting for a leader), and the lease
actor (a Lock request waiting in the lock service). Each actor is stopped with
SIGTERM, as the supervisor stops it, and the client must get an answer at
once, never a silent wait for its deadline: Stopping (retryable) for what
never reached a log, Timeout (outcome unknown, never retried) for a write
that may have. The
supervisor restarts the actor afterwards, as it would after a crash.
"""

from __future__ import annotations

import os
import signal

import pytest
import zmq

from tests.harness import Cluster, wait_for
from transport import codec
from transport import messages as m

ANSWER_WITHIN_MS = 3000  # far below every deadline involved (request timeouts are 30 s here)


def actor_pid(member, actor: str) -> int:
    spawned = [r for r in member.log_records("supervisor") if r.get("event") == "actor_spawned" and r.get("actor_name") == actor]
    assert spawned, f"{actor} of {member.name} never spawned"
    return spawned[-1]["pid"]


class RawClient:
    """A DEALER that sends frames the way the client library does, so the test
    sees exactly which answer comes back and when."""

    def __init__(self, endpoint: str):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def send(self, message, request_id: int) -> None:
        self.socket.send(codec.encode(message, request_id))

    def answer(self, timeout_ms: int = ANSWER_WITHIN_MS):
        assert self.socket.poll(timeout_ms), "no answer"
        return codec.decode(self.socket.recv())

    def silent_for(self, timeout_ms: int) -> bool:
        return not self.socket.poll(timeout_ms)

    def close(self) -> None:
        self.context.destroy(linger=0)


@pytest.fixture
def slow_member(tmp_path):
    """One member whose requests would wait 30 s before timing out."""
    with Cluster(tmp_path, members=1, request_timeout_ms=30000) as cluster:
        cluster.wait_ready()
        yield cluster


def test_the_frontend_answers_what_it_holds_at_once_and_never_a_write_of_unknown_outcome_as_retryable(slow_member):
    member = slow_member.members["n1"]
    raft = actor_pid(member, "raft")
    client = RawClient(member.endpoint)
    os.kill(raft, signal.SIGSTOP)  # the write can go no further than the frontend
    try:
        client.send(m.PutRequest(b"stop/a", b"1"), 501)
        client.send(m.RangeRequest(b"stop/a"), 502)  # a linearizable read: waits for a read index
        assert client.silent_for(300)
        frontend = actor_pid(member, "frontend")
        os.kill(frontend, signal.SIGTERM)
        answers = dict(client.answer() for _ in range(2))
        # the read is retryable; the write was handed to raft, so its outcome is unknown
        assert answers[502] == m.ErrorResponse("Stopping", "etcdserver: server stopped")
        assert answers[501].code == "Timeout" and "outcome is unknown" in answers[501].message
    finally:
        os.kill(raft, signal.SIGCONT)
        client.close()
    wait_for(lambda: actor_pid(member, "frontend") != frontend, "the frontend's restart")
    slow_member.wait_ready()


def test_the_raft_actor_answers_proposals_waiting_for_a_leader_with_stopping(tmp_path):
    with Cluster(tmp_path, members=3, request_timeout_ms=30000, no_leader_wait_ms=30000) as cluster:
        # stop two members: the third has no leader, and holds proposals until one appears
        for name in ("n2", "n3"):
            cluster.members[name].stop()
        member = cluster.members["n1"]
        raft = actor_pid(member, "raft")
        wait_for(lambda: not member.status().leader, "n1 to lose its leader")
        client = RawClient(member.endpoint)
        try:
            client.send(m.PutRequest(b"stop/b", b"1"), 601)
            assert client.silent_for(300)
            os.kill(raft, signal.SIGTERM)
            request_id, answer = client.answer()
            assert (request_id, answer.code) == (601, "Stopping")
        finally:
            client.close()


def test_the_lease_actor_answers_a_lock_request_waiting_in_the_lock_service_with_stopping(slow_member):
    member = slow_member.members["n1"]
    with slow_member.client() as holder:
        lease = holder.lease_grant(60).id
        held = holder.lock(b"stop-lock", lease)
        waiter_lease = holder.lease_grant(60).id
        client = RawClient(member.endpoint)
        try:
            client.send(m.LockRequest(b"stop-lock", waiter_lease), 701)
            # the waiter's key shows up behind the holder's: its request is in the service
            wait_for(lambda: holder.get(b"stop-lock/", prefix=True).count == 2, "the waiter's queued key")
            assert client.silent_for(100)
            lease_actor = actor_pid(member, "lease")
            os.kill(lease_actor, signal.SIGTERM)
            request_id, answer = client.answer()
            assert (request_id, answer.code) == (701, "Stopping")
        finally:
            client.close()
        # the actor exits promptly (no worker left waiting on the lock) and is restarted
        wait_for(lambda: actor_pid(member, "lease") != lease_actor, "the lease actor's restart", timeout_s=5)
        holder.unlock(held.key)


def test_the_frontend_answers_passwords_still_being_hashed_with_stopping(slow_member):
    """A UserAdd's password is hashed (scrypt) on the frontend's worker thread
    before it is proposed; the ones still queued there when the frontend
    stops are answered Stopping, never left to their deadline."""
    member = slow_member.members["n1"]
    client = RawClient(member.endpoint)
    request_ids = range(801, 841)  # 40 hashes of ~50-100 ms each, one at a time
    try:
        for request_id in request_ids:
            client.send(m.AuthUserAddRequest(f"hashed-{request_id}", "a-password"), request_id)
        answers = dict([client.answer(10000)])  # the first hash is done: the frontend holds the rest
        frontend = actor_pid(member, "frontend")
        os.kill(frontend, signal.SIGTERM)
        while len(answers) < len(request_ids):
            request_id, answer = client.answer()
            answers[request_id] = answer
        codes = {request_id: getattr(answer, "code", "OK") for request_id, answer in answers.items()}
        assert set(codes) == set(request_ids)
        assert set(codes.values()) <= {"OK", "Timeout", "Stopping"}, codes
        assert "Stopping" in codes.values(), "every hash finished before the frontend stopped"
    finally:
        client.close()
    wait_for(lambda: actor_pid(member, "frontend") != frontend, "the frontend's restart")
    slow_member.wait_ready()
