"""Lock and Election services (etcd's v3lock and v3election), run by a member.

Theory of operation
-------------------
Like etcd's server, a member serves these by running the client-side recipes
(cairn/concurrency.py) against itself: a Client connected to its own frontend,
so every step goes through the Raft log like any client's request, and the
lease-alive re-check before a lock is reported (the gap Jepsen found) is the
same. The caller's lease stands in for a session: the caller keeps it alive.

A request that waits (Lock, Campaign) occupies a worker thread while it waits,
so there is a bounded pool (ServiceLimits.max_workers); past that, requests
queue. A wait is bounded too (wait_limit_s): then the queued key is removed and the
caller gets Timeout, so a caller that gave up cannot be handed a lock later.
Results come back through `reply(identity, frame)`, called on a worker thread.
Every request submitted is answered exactly once: by its worker, or by
`stop` at shutdown (queued and waiting requests alike get Stopping, and a
worker that finishes later finds its request already answered). At stop the
sessions' `done` is set, so a waiter gives up within the recipes' poll
interval and removes its queued key; the workers are daemon threads, so one
stuck on a member that is going away cannot hold the process.
"""

from __future__ import annotations

import queue
import threading
import time

from cairn.client import Client
from cairn.concurrency import WAIT_POLL_S, Election, Lock
from transport import codec
from transport.errors import CairnError, TimeoutError_
from transport.limits import holds, limit, limits, positive
from transport.messages import (
    CampaignRequest,
    CampaignResponse,
    LeaderKey,
    LeaderRequest,
    LeaderResponse,
    LockRequest,
    LockResponse,
    ProclaimRequest,
    ProclaimResponse,
    ResignRequest,
    ResignResponse,
    UnlockRequest,
    UnlockResponse,
)

SERVICE_REQUESTS = (LockRequest, UnlockRequest, CampaignRequest, ProclaimRequest, LeaderRequest, ResignRequest)


@limits(
    positive("max_workers"),
    holds(lambda l: l.call_timeout_s < l.wait_limit_s, "one step of a wait is shorter than the wait"),
    holds(lambda l: l.wait_limit_s < Client.SERVICE_WAIT_S, "the caller hears the member's Timeout"),
    holds(lambda l: l.stop_wait_s > WAIT_POLL_S, "a waiter sees the stop within one poll"),
)
class ServiceLimits:
    """The Lock and Election services' bounds, each with its reason."""

    max_workers: int = limit(
        64,
        "Worker threads, each holding one waiting Lock or Campaign: bounds the threads (and client requests in "
        "flight) a burst of waiters can cost.")
    wait_limit_s: float = limit(
        60.0,
        "How long a Lock or Campaign may wait for its turn before the caller gets Timeout; the client library allows "
        "a little more (Client.SERVICE_WAIT_S), so the member's answer arrives first.")
    call_timeout_s: float = limit(
        10.0,
        "Each request the recipes make to this member's frontend: longer than the frontend's request_timeout_ms (7 s "
        "by default), so its answer comes first.")
    stop_wait_s: float = limit(
        1.0,
        "How long stop() lets waiters remove their queued keys before it goes on.")


class LeaseSession:
    """A session over a lease that the caller keeps alive."""

    def __init__(self, client: Client, lease: int, done: threading.Event):
        self.client = client
        self.lease = lease
        # set only when the service stops; the lease's expiry shows as our key's disappearance
        self.done = done


class LockService:
    limits = ServiceLimits()

    def __init__(self, endpoint: str, reply, security: dict | None = None, token: str | None = None):
        # security: the member's CURVE client options (Actor.client_security).
        # token: the member's internal token (actors/auth_door.py): with auth
        # enabled the services run as the member; the frontend checked the
        # caller's permission on the lock's or election's keys already.
        self.client = Client([endpoint], timeout=self.limits.call_timeout_s, token=token, **(security or {}))
        self.reply = reply
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.workers: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.unanswered: set[tuple[bytes, int]] = set()  # (identity, request id) submitted, not yet answered

    def submit(self, identity: bytes, request_id: int, request) -> None:
        with self.lock:
            self.unanswered.add((identity, request_id))
            if len(self.workers) < min(len(self.unanswered), self.limits.max_workers):
                worker = threading.Thread(target=self._work, name=f"lock-service-{len(self.workers)}", daemon=True)
                worker.start()
                self.workers.append(worker)
        self.requests.put((identity, request_id, request))

    def _work(self) -> None:
        while True:
            item = self.requests.get()
            if item is None or self.stopping.is_set():
                return
            self._run(*item)

    def _answer(self, identity: bytes, request_id: int, response) -> None:
        with self.lock:
            if (identity, request_id) not in self.unanswered:
                return  # answered by stop() already
            self.unanswered.discard((identity, request_id))
        self.reply(identity, codec.encode(response, request_id))

    def stop(self, error: CairnError) -> int:
        """Answer every request not answered yet with error, and let the
        waiters give up (removing their queued keys); how many were answered."""
        self.stopping.set()
        with self.lock:
            pending, self.unanswered = list(self.unanswered), set()
        for identity, request_id in pending:
            self.reply(identity, codec.encode(error.to_response(), request_id))
        for _ in self.workers:
            self.requests.put(None)
        deadline = time.monotonic() + self.limits.stop_wait_s
        for worker in self.workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        return len(pending)

    def _run(self, identity: bytes, request_id: int, request) -> None:
        try:
            response = self.serve(request)
        except CairnError as error:
            response = error.to_response()
        except TimeoutError:
            response = TimeoutError_(f"etcdserver: not acquired within {self.limits.wait_limit_s:.0f}s").to_response()
        except Exception as error:  # a worker must answer whatever happens, or its caller waits for ever
            response = CairnError(f"cairn: the lock service failed ({type(error).__name__})").to_response()
        self._answer(identity, request_id, response)

    def serve(self, request):
        client = self.client
        if isinstance(request, LockRequest):
            lock = Lock(LeaseSession(client, request.lease, self.stopping), request.name)
            lock.acquire(timeout=self.limits.wait_limit_s)
            return LockResponse(client.get(lock.key).header, lock.key, lock.revision)
        if isinstance(request, UnlockRequest):
            return UnlockResponse(client.delete(request.key).header)
        if isinstance(request, CampaignRequest):
            election = Election(LeaseSession(client, request.lease, self.stopping), request.name)
            election.campaign(request.value, timeout=self.limits.wait_limit_s)
            header = client.get(election.key).header
            return CampaignResponse(header, LeaderKey(request.name, election.key, election.revision, request.lease))
        if isinstance(request, LeaderRequest):
            response = client.get(request.name.rstrip(b"/") + b"/", prefix=True, sort_target="create",
                                  sort_order="ascend", limit=1)
            return LeaderResponse(response.header, response.kvs[0] if response.kvs else None)
        election = self._held(request.leader)
        if isinstance(request, ProclaimRequest):
            election.proclaim(request.value)
            return ProclaimResponse(client.get(election.key).header)
        assert isinstance(request, ResignRequest), request
        election.resign()
        return ResignResponse(client.get(request.leader.key).header)

    def _held(self, leader: LeaderKey) -> Election:
        election = Election(LeaseSession(self.client, leader.lease, self.stopping), leader.name)
        election.key, election.revision = leader.key, leader.rev
        return election

    def close(self) -> None:
        self.stopping.set()
        self.client.close()
