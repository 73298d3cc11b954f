"""Lock and Election services (etcd's v3lock and v3election), run by a member.

Theory of operation
-------------------
Like etcd's server, a member serves these by running the client-side recipes
(cairn/concurrency.py) against itself: a Client connected to its own frontend,
so every step goes through the Raft log like any client's request, and the
lease-alive re-check before a lock is reported (the gap Jepsen found) is the
same. The caller's lease stands in for a session: the caller keeps it alive.

A request that waits (Lock, Campaign) occupies a worker thread while it waits,
so there is a bounded pool (MAX_WORKERS); past that, requests queue in the pool.
A wait is bounded too (WAIT_LIMIT_S): then the queued key is removed and the
caller gets Timeout, so a caller that gave up cannot be handed a lock later.
Results come back through `reply(identity, frame)`, called on a worker thread.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from cairn.client import Client
from cairn.concurrency import Election, Lock
from transport import codec
from transport.errors import CairnError, TimeoutError_
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
MAX_WORKERS = 64
WAIT_LIMIT_S = 60.0
CALL_TIMEOUT_S = 10.0


class LeaseSession:
    """A session over a lease that the caller keeps alive."""

    def __init__(self, client: Client, lease: int):
        self.client = client
        self.lease = lease
        self.done = threading.Event()  # never set: expiry shows as our key's disappearance


class LockService:
    def __init__(self, endpoint: str, reply):
        self.client = Client([endpoint], timeout=CALL_TIMEOUT_S)
        self.reply = reply
        self.pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="lock-service")

    def submit(self, identity: bytes, request_id: int, request) -> None:
        self.pool.submit(self._run, identity, request_id, request)

    def _run(self, identity: bytes, request_id: int, request) -> None:
        try:
            response = self.serve(request)
        except CairnError as error:
            response = error.to_response()
        except TimeoutError:
            response = TimeoutError_(f"etcdserver: not acquired within {WAIT_LIMIT_S:.0f}s").to_response()
        self.reply(identity, codec.encode(response, request_id))

    def serve(self, request):
        client = self.client
        if isinstance(request, LockRequest):
            lock = Lock(LeaseSession(client, request.lease), request.name)
            lock.acquire(timeout=WAIT_LIMIT_S)
            return LockResponse(client.get(lock.key).header, lock.key, lock.revision)
        if isinstance(request, UnlockRequest):
            return UnlockResponse(client.delete(request.key).header)
        if isinstance(request, CampaignRequest):
            election = Election(LeaseSession(client, request.lease), request.name)
            election.campaign(request.value, timeout=WAIT_LIMIT_S)
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
        election = Election(LeaseSession(self.client, leader.lease), leader.name)
        election.key, election.revision = leader.key, leader.rev
        return election

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
