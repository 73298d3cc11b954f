"""How a client's calls go through the cluster, written once for both clients.

A call is a *plan*: a generator that hands frames to the transport thread
(which never blocks the caller) and yields what it must wait for, a Wait (a
reply Future, for at most some seconds) or a Pause (a back-off). It never
waits itself, so the same plan serves the blocking client, which runs it with
run_blocking, and the asyncio client, which awaits run_async(plan). The
failover rules (cairn.retry), the endpoint a call prefers and endpoint
discovery (sync_endpoints) therefore exist once, in CallPlanner; a method that
makes several calls is a plan of plans (`yield from planner.call(...)`).

The rules, as cairn/client.py's docstring states them: a request that never
left this process or that a member refused before its Raft log is retried on
the next endpoint with back-off; a read that timed out is retried on the next
endpoint; a write sent without an answer raises IndeterminateError. A call
that fails because its endpoint did not answer leaves the next call
preferring another endpoint (cairn.retry's move_on).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Generator

from cairn import retry
from transport import messages as m
from transport.codec import encode, encode_checked
from transport.errors import AuthNotEnabledError, CairnError, InvalidAuthTokenError, PermissionDeniedError, RequestTooLargeError, TimeoutError_


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait until `future` is done or `seconds` have passed. The plan then reads
    the future; one not done, or cancelled, had no answer in time."""

    future: futures.Future
    seconds: float


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


Plan = Generator["Wait | Pause", None, Any]


class _Steps:
    """A plan's instructions to iterate over; `result` is what it returned."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.result = None

    def __iter__(self):
        self.result = yield from self.plan


def run_blocking(plan: Plan):
    """Run a plan on this thread; its result, or what it raises."""
    steps = _Steps(plan)
    for instruction in steps:
        if type(instruction) is Pause:
            time.sleep(instruction.seconds)
        else:
            _wait(instruction.future, instruction.seconds)
    return steps.result


def _wait(future: futures.Future, seconds: float) -> None:
    """Block until future is done or seconds have passed. On the future's own
    condition: concurrent.futures.wait makes and installs a waiter (an Event
    and its locks) on every call, a cost each blocking call paid."""
    try:
        future.exception(seconds)
    except (futures.TimeoutError, futures.CancelledError):
        pass  # the plan sees no answer


async def run_async(plan: Plan):
    """Run a plan on the running event loop, which never blocks: waiting for a
    reply is waiting for the transport's Future to call back."""
    steps = _Steps(plan)
    for instruction in steps:
        if type(instruction) is Pause:
            await asyncio.sleep(instruction.seconds)
        else:
            await _wait_async(instruction.future, instruction.seconds)
    return steps.result


async def _wait_async(future: futures.Future, seconds: float) -> None:
    """Until future is done or seconds have passed, on the running loop. A
    waiter of our own and one timer: asyncio.wait_for(asyncio.wrap_future(...))
    made two futures, their chained callbacks and a timeout handle per call.
    When the awaiting task is cancelled, so is the future (as wrap_future did)."""
    if future.done():
        return
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def on_done(_):  # on the transport's I/O thread
        if not loop.is_closed():
            loop.call_soon_threadsafe(_end_wait, waiter)

    timer = loop.call_later(seconds, _end_wait, waiter)
    future.add_done_callback(on_done)
    try:
        await waiter
    except asyncio.CancelledError:
        future.cancel()
        raise
    finally:
        timer.cancel()


def _end_wait(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class CallPlanner:
    """A client's endpoints, the one its calls prefer, and the plans of its calls.

    transport: the client's TransportThread (its endpoint list is the client's,
    and grows with discovery); timeout: the default seconds a call may take;
    options: the frame options of every request (require_leader).

    Auth (etcd v3): with credentials (user, password) a call first
    authenticates with the member it is about to ask, unless it holds a token
    of that member already (tokens are per member, as etcd's simple tokens
    are), and sends the token in the frame's options; a call answered
    InvalidAuthToken (the token expired, or the member restarted)
    authenticates again and is sent again, once. Nothing reached a log, so
    this is safe for writes too. With a fixed `token` (a door passing its
    caller's on) that token is sent as it is."""

    def __init__(self, transport, timeout: float, max_send_bytes: int, options: dict | None = None,
                 credentials: tuple[str, str] | None = None, token: str | None = None, follow_leader: bool = False):
        self.transport = transport
        self.credentials = credentials
        self.fixed_token = token
        self.tokens: dict[int, str | None] = {}  # endpoint index -> token (None: auth is not enabled there)
        self.endpoints: list[str] = transport.endpoints
        self.timeout = timeout
        self.max_send_bytes = max_send_bytes
        self.options = options
        self._preferred = 0
        self._lock = threading.Lock()
        # follow_leader: a reply whose header shows a Raft term newer than any
        # seen so far sets leader_stale; whoever follows the leader (the
        # Client's thread) then runs find_leader.
        self.follow_leader = follow_leader
        self.leader_stale = threading.Event()
        self._term_seen = 0
        self._member_endpoints: dict[int, int] = {}  # member id -> index of its client URL in endpoints

    def preferred(self) -> int:
        """The index of the endpoint calls (and new watches) go to first."""
        return self._preferred

    def call(self, request, write: bool, timeout: float | None = None, endpoint: str | None = None,
             token: str | None = None, options: dict | None = None) -> Plan:
        """Send request and return its response, failing over between endpoints
        as cairn.retry decides. write=False marks a request safe to send again.
        With `endpoint`, only that member is asked, and an error is not retried
        elsewhere. `token`: an auth token for this call alone (a door's caller's);
        `options`: more frame options for this call alone."""
        call = self._start(request, write, timeout, endpoint)
        call.options = options
        authenticated_again = False
        while True:
            index, address, remaining = self._next_attempt(call)
            if token is None and self.credentials is not None and index not in self.tokens \
                    and not isinstance(request, m.AuthenticateRequest):
                try:
                    yield from self._authenticate(index, remaining)
                except CairnError as error:
                    auth_step = retry.after_error(error, call.fixed is None, False)
                    if auth_step.action == retry.RAISE:
                        raise  # AuthFailed (wrong user or password), or no member to ask
                    yield Pause(self._prepare_retry(call, auth_step, index))
                    continue
            frame = self._frame(call, index, token)
            future = self.transport.submit(index, frame, call.request_id, may_go_elsewhere=call.fixed is None)
            yield Wait(future, remaining)
            if not future.done() or future.cancelled():
                step = retry.after_timeout(write, self.transport.forget(call.request_id), address)
            else:
                try:
                    step = retry.after_reply(future.result(), write, address, call.fixed is None)
                except CairnError as error:
                    step = retry.after_error(error, call.fixed is None, write)
            if step.action == retry.RAISE and self._authenticate_again(step.value, index, token, authenticated_again):
                authenticated_again = True  # once: the member refused it before any log, so a write may go again
                self._new_request_id(call)
                continue
            if step.action == retry.RETURN:
                if self.follow_leader:
                    self._note_term(step.value)
                return step.value
            if step.action == retry.RAISE:
                if step.move_on and call.fixed is None:
                    self._move_on_from(index)
                raise step.value
            yield Pause(self._prepare_retry(call, step, index))

    def _authenticate_again(self, error, index: int, token: str | None, done_once: bool) -> bool:
        """Whether a refused call should authenticate again and be sent again:
        InvalidAuthToken (expired, or the member restarted), or PermissionDenied
        for a call sent without a token because auth was off when this client
        looked (it has been enabled since)."""
        if done_once or self.credentials is None or token is not None:
            return False
        stale = isinstance(error, InvalidAuthTokenError) or (
            isinstance(error, PermissionDeniedError) and index in self.tokens and self.tokens[index] is None)
        if stale:
            self.tokens.pop(index, None)
        return stale

    def _authenticate(self, index: int, timeout: float) -> Plan:
        """A token of endpoint `index` for this planner's credentials."""
        name, password = self.credentials
        try:
            response = yield from self.call(m.AuthenticateRequest(name, password), write=False, timeout=timeout,
                                            endpoint=self.endpoints[index])
        except AuthNotEnabledError:
            self.tokens[index] = None  # send without a token (a PermissionDenied then makes it try again)
            return None
        self.tokens[index] = response.token
        return response.token

    def authenticate(self, timeout: float | None = None) -> Plan:
        """Authenticate with the preferred endpoint now (a client's first call
        does it anyway); returns the token."""
        index = self._preferred
        return (yield from self._authenticate(index, self.timeout if timeout is None else timeout))

    def _frame(self, call: _Call, index: int, token: str | None) -> bytes:
        if token is None:
            token = self.fixed_token if self.fixed_token is not None else self.tokens.get(index)
        if token is None and not call.options:
            return call.frame
        return encode(call.request, call.request_id,
                      {**(self.options or {}), **(call.options or {}), **({"token": token} if token else {})})

    def options_for(self, index: int) -> dict | None:
        """The frame options for a request to endpoint `index` (the watches')."""
        token = self.fixed_token
        if token is None and self.credentials is not None:
            if index not in self.tokens:
                try:
                    run_blocking(self._authenticate(index, self.timeout))
                except CairnError:
                    return self.options
            token = self.tokens.get(index)
        if token is None:
            return self.options
        return {**(self.options or {}), "token": token}

    def sync_endpoints(self, timeout: float | None = None) -> Plan:
        """Discover every member's client URL (etcd clientv3's Sync) and prefer the
        leader's, so writes skip a forwarding hop. Returns the endpoints."""
        members = (yield from self.call(m.MemberListRequest(), write=False, timeout=timeout)).members
        for member in members:
            for url in member.client_urls:
                if url not in self.endpoints:
                    self.transport.add_endpoint(url)
        self._map_members(members)
        yield from self.find_leader(timeout)
        return list(self.endpoints)

    def _note_term(self, reply) -> None:
        header = getattr(reply, "header", None)
        if header is not None and header.raft_term > self._term_seen:
            self._term_seen = header.raft_term  # a new term may have a new leader
            self.leader_stale.set()

    def find_leader(self, timeout: float | None = None) -> Plan:
        """Prefer the leader's endpoint, when the leader's client URL is one of
        this client's endpoints, so writes and linearizable reads skip the
        forwarding hops a follower adds (raft to raft, and the commit back).
        Returns False while there is no leader to find (an election is on),
        else True. It adds no endpoint (sync_endpoints does)."""
        status = yield from self.call(m.StatusRequest(), write=False, timeout=timeout)
        if not status.leader:
            return False  # an election is on
        if status.leader not in self._member_endpoints:  # a member new to this client
            self._map_members((yield from self.call(m.MemberListRequest(), write=False, timeout=timeout)).members)
        index = self._member_endpoints.get(status.leader)
        if index is None:
            return True  # the leader's client URL is not one of ours: nothing to prefer
        with self._lock:
            self._preferred = index
        return True

    def _map_members(self, members) -> None:
        self._member_endpoints = {member.id: self.endpoints.index(member.client_urls[0]) for member in members
                                  if member.client_urls and member.client_urls[0] in self.endpoints}

    # ------------------------------------------------------------------ one call's attempts

    def _start(self, request, write: bool, timeout: float | None, endpoint: str | None) -> _Call:
        if endpoint is not None and endpoint not in self.endpoints:
            raise ValueError(f"unknown endpoint {endpoint}")
        call = _Call(request, write, time.monotonic() + (self.timeout if timeout is None else timeout),
                     self.endpoints.index(endpoint) if endpoint is not None else None)
        call.request_id = self.transport.next_request_id()
        # a value outside its etcd type (an int64 lease id ...) is refused here, unsent
        call.frame = encode_checked(request, call.request_id, self.options)
        if len(call.frame) > self.max_send_bytes:
            raise RequestTooLargeError(f"request is {len(call.frame)} bytes, more than max_send_bytes {self.max_send_bytes}")
        return call

    def _new_request_id(self, call: _Call) -> None:
        call.request_id = self.transport.next_request_id()
        call.frame = encode(call.request, call.request_id, self.options)

    def _next_attempt(self, call: _Call) -> tuple[int, str, float]:
        """(endpoint index, its address, seconds left); raises when time is up."""
        index = call.fixed if call.fixed is not None else self._preferred
        remaining = call.deadline - time.monotonic()
        if remaining <= 0:
            raise retry.out_of_time(call.last_error)
        return index, self.endpoints[index], remaining

    def _move_on_from(self, index: int) -> None:
        """Prefer the endpoint after `index`, unless another call has moved on already."""
        if len(self.endpoints) > 1:
            with self._lock:
                if self._preferred == index:
                    self._preferred = (index + 1) % len(self.endpoints)

    def _prepare_retry(self, call: _Call, step: retry.Step, index: int) -> float:
        """Record the failure, move to the next endpoint; the pause before retrying."""
        if not (isinstance(step.value, TimeoutError_) and call.last_error is not None):
            # an attempt cut short by the deadline says less than the error before it
            # (NoLeader, say), which is what the caller gets when time runs out
            call.last_error = step.value
        if call.fixed is None:
            self._move_on_from(index)
        if step.new_request_id:
            self._new_request_id(call)
        return call.backoff.next_pause(call.deadline - time.monotonic()) if step.backoff else 0.0


class _Call:
    """One request's progress through its attempts."""

    __slots__ = ("request", "write", "deadline", "fixed", "request_id", "frame", "last_error", "backoff", "options")

    def __init__(self, request, write: bool, deadline: float, fixed: int | None):
        self.request, self.write, self.deadline, self.fixed = request, write, deadline, fixed
        self.request_id, self.frame, self.last_error = 0, b"", None
        self.backoff = retry.Backoff()
        self.options = None


__all__ = ["CallPlanner", "Pause", "Plan", "Wait", "run_async", "run_blocking"]
