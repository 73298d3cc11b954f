"""The call planner (cairn/calls.py) without sockets: a fake transport answers
each submission as the test scripts it, and every case runs under both drivers
(the blocking client's and the asyncio client's), which must agree."""

from __future__ import annotations

import asyncio
import itertools
import threading
from concurrent.futures import Future

import pytest

from cairn.calls import CallPlanner, run_async, run_blocking
from transport import codec
from transport import messages as m
from transport.errors import (ConnectionLostError, IndeterminateError, InvalidArgumentError, NoLeaderError,
                              RequestTooLargeError, TimeoutError_, Unavailable)

HEADER = m.ResponseHeader(1, 2, 10, 3)
NO_ANSWER = object()  # the frame is sent and never answered


class FakeTransport:
    def __init__(self, *script, endpoints=3):
        self.endpoints = [f"tcp://127.0.0.1:{2379 + i}" for i in range(endpoints)]
        self.ids = itertools.count(100)
        self.script = list(script)  # one outcome a submission: a reply, a CairnError or NO_ANSWER
        self.submitted = []  # (endpoint index, request id, message)
        self.forgotten = []
        self.was_sent = True  # what forget says of a request given up on
        self.futures = []  # every submission's Future
        self.may_go_elsewhere = []  # every submission's flag

    def next_request_id(self):
        return next(self.ids)

    def submit(self, endpoint, frame, request_id, may_go_elsewhere=True):
        self.submitted.append((endpoint, *codec.decode(frame)))
        self.may_go_elsewhere.append(may_go_elsewhere)
        future = Future()
        self.futures.append(future)
        outcome = self.script.pop(0)
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        elif outcome is not NO_ANSWER:
            future.set_result(outcome)
        return future

    def forget(self, request_id):
        self.forgotten.append(request_id)
        return self.was_sent

    def add_endpoint(self, address):
        self.endpoints.append(address)
        return len(self.endpoints) - 1


def run_blocking_driver(plan):
    return run_blocking(plan)


def run_async_driver(plan):
    return asyncio.run(run_async(plan))


@pytest.fixture(params=[run_blocking_driver, run_async_driver], ids=["blocking", "asyncio"])
def run(request):
    return request.param


def planner(transport, timeout=2.0, max_send_bytes=1 << 20):
    return CallPlanner(transport, timeout, max_send_bytes)


def test_a_reply_is_returned_from_the_preferred_endpoint(run):
    transport = FakeTransport(m.PutResponse(HEADER))
    assert run(planner(transport).call(m.PutRequest(b"k", b"v"), write=True)) == m.PutResponse(HEADER)
    assert [(endpoint, type(message)) for endpoint, _, message in transport.submitted] == [(0, m.PutRequest)]


def test_a_write_that_never_left_moves_to_the_next_endpoint_which_is_preferred_from_then_on(run):
    transport = FakeTransport(Unavailable("down", endpoint="tcp://127.0.0.1:2379"), m.PutResponse(HEADER),
                              m.PutResponse(HEADER))
    calls = planner(transport)
    run(calls.call(m.PutRequest(b"k", b"v"), write=True))
    run(calls.call(m.PutRequest(b"k", b"w"), write=True))
    assert [endpoint for endpoint, _, _ in transport.submitted] == [0, 1, 1]
    assert transport.submitted[0][1] == transport.submitted[1][1]  # never sent: the same id may go again
    assert calls.preferred() == 1


def test_a_refusal_before_the_raft_log_is_retried_elsewhere_under_a_new_id(run):
    transport = FakeTransport(m.ErrorResponse("NoLeader", "etcdserver: no leader"), m.PutResponse(HEADER))
    run(planner(transport).call(m.PutRequest(b"k", b"v"), write=True))
    (first, first_id, _), (second, second_id, _) = transport.submitted
    assert (first, second) == (0, 1) and first_id != second_id


def test_when_time_runs_out_the_error_that_explains_it_is_raised(run):
    transport = FakeTransport(*[m.ErrorResponse("NoLeader", "etcdserver: no leader")] * 200)
    with pytest.raises(NoLeaderError):
        run(planner(transport, timeout=0.3).call(m.RangeRequest(b"k"), write=False))


def test_a_write_sent_without_an_answer_is_indeterminate(run):
    transport = FakeTransport(NO_ANSWER)
    with pytest.raises(IndeterminateError):
        run(planner(transport, timeout=0.2).call(m.PutRequest(b"k", b"v"), write=True))
    assert transport.forgotten == [transport.submitted[0][1]]


def test_a_read_without_an_answer_times_out_and_a_lost_write_is_never_retried(run):
    with pytest.raises(TimeoutError_):
        run(planner(FakeTransport(NO_ANSWER), timeout=0.2).call(m.RangeRequest(b"k"), write=False))
    transport = FakeTransport(ConnectionLostError("connection lost", endpoint="tcp://127.0.0.1:2379"))
    with pytest.raises(IndeterminateError):
        run(planner(transport).call(m.PutRequest(b"k", b"v"), write=True))
    assert len(transport.submitted) == 1


@pytest.mark.parametrize("was_sent", [True, False], ids=["sent", "never-sent"])
def test_an_endpoint_that_did_not_answer_in_time_is_not_preferred_by_the_next_call(run, was_sent):
    """A member killed or stopped: the call that found out fails (its time is
    spent), and the caller's next call starts with another member rather than
    waiting out the same one again."""
    transport = FakeTransport(NO_ANSWER, m.PutResponse(HEADER), NO_ANSWER)
    transport.was_sent = was_sent
    calls = planner(transport, timeout=0.2)
    with pytest.raises(IndeterminateError if was_sent else Unavailable):
        run(calls.call(m.PutRequest(b"k", b"v"), write=True))
    run(calls.call(m.PutRequest(b"k", b"w"), write=True))
    assert [endpoint for endpoint, _, _ in transport.submitted] == [0, 1] and calls.preferred() == 1
    with pytest.raises(IndeterminateError if was_sent else Unavailable):
        run(calls.call(m.PutRequest(b"k", b"x"), write=True, endpoint=transport.endpoints[1]))
    assert calls.preferred() == 1  # a call to one endpoint leaves the preference alone


def test_a_write_lost_with_its_connection_moves_the_next_call_on(run):
    transport = FakeTransport(ConnectionLostError("connection lost", endpoint="tcp://127.0.0.1:2379"), m.PutResponse(HEADER))
    calls = planner(transport)
    with pytest.raises(IndeterminateError):
        run(calls.call(m.PutRequest(b"k", b"v"), write=True))
    run(calls.call(m.PutRequest(b"k", b"w"), write=True))
    assert [endpoint for endpoint, _, _ in transport.submitted] == [0, 1]


def test_a_call_to_one_endpoint_is_not_retried_elsewhere(run):
    transport = FakeTransport(Unavailable("down"))
    calls = planner(transport)
    with pytest.raises(Unavailable):
        run(calls.call(m.StatusRequest(), write=False, endpoint=transport.endpoints[2]))
    assert [endpoint for endpoint, _, _ in transport.submitted] == [2] and calls.preferred() == 0
    with pytest.raises(ValueError):
        run(calls.call(m.StatusRequest(), write=False, endpoint="tcp://elsewhere:1"))
    with pytest.raises(RequestTooLargeError):
        run(planner(transport, max_send_bytes=100).call(m.PutRequest(b"k", b"v" * 200), write=True))


def test_a_value_outside_its_etcd_type_is_refused_unsent(run):
    transport = FakeTransport(m.PutResponse(HEADER))
    with pytest.raises(InvalidArgumentError, match="lease"):
        run(planner(transport).call(m.PutRequest(b"k", b"v", lease=1 << 63), write=True))
    assert transport.submitted == []


def test_sync_endpoints_adds_every_member_and_prefers_the_leader(run):
    members = tuple(m.Member(i + 1, f"n{i + 1}", (), (f"tcp://10.0.0.{i + 1}:2379",)) for i in range(3))
    status = m.StatusResponse(HEADER, "3.5.0", 0, leader=3, raft_index=1, raft_term=1, raft_applied_index=1)
    transport = FakeTransport(m.MemberListResponse(HEADER, members), status, endpoints=1)
    transport.endpoints = [members[0].client_urls[0]]
    calls = planner(transport)
    assert run(calls.sync_endpoints()) == [member.client_urls[0] for member in members]
    assert calls.preferred() == 2
    assert [type(message) for _, _, message in transport.submitted] == [m.MemberListRequest, m.StatusRequest]


def test_a_reply_set_from_another_thread_ends_the_wait(run):
    """The transport resolves a Future on its I/O thread: the blocking wait
    (the Future's own condition) and the asyncio one (a call back onto the
    loop) both end with the reply, well inside the call's timeout."""
    transport = FakeTransport(NO_ANSWER)
    submit = transport.submit

    def submit_and_answer_later(endpoint, frame, request_id, may_go_elsewhere=True):
        future = submit(endpoint, frame, request_id)
        threading.Timer(0.05, future.set_result, (m.PutResponse(HEADER),)).start()
        return future

    transport.submit = submit_and_answer_later
    assert run(planner(transport, timeout=30).call(m.PutRequest(b"k", b"v"), write=True)) == m.PutResponse(HEADER)
    assert transport.forgotten == []


def test_a_reply_after_the_timeout_is_not_taken(run):
    transport = FakeTransport(NO_ANSWER)
    with pytest.raises(IndeterminateError):
        run(planner(transport, timeout=0.1).call(m.PutRequest(b"k", b"v"), write=True))
    assert transport.forgotten == [transport.submitted[0][1]]  # the transport drops its reply
    transport.futures[0].set_result(m.PutResponse(HEADER))  # comes late: no one waits, nothing breaks


def test_an_async_call_cancelled_by_its_caller_cancels_its_reply_future():
    transport = FakeTransport(NO_ANSWER)

    async def cancel_while_waiting():
        task = asyncio.ensure_future(run_async(planner(transport, timeout=30).call(m.RangeRequest(b"k"), write=False)))
        for _ in range(100):  # the plan submits at its first step
            if transport.futures:
                break
            await asyncio.sleep(0)
        assert transport.futures
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_waiting())
    assert transport.futures[0].cancelled()


def test_a_call_for_one_member_tells_the_transport_it_will_not_go_elsewhere(run):
    transport = FakeTransport(m.PutResponse(HEADER), m.PutResponse(HEADER))
    calls = planner(transport)
    run(calls.call(m.PutRequest(b"k", b"v"), write=True))
    run(calls.call(m.PutRequest(b"k", b"v"), write=True, endpoint=transport.endpoints[2]))
    assert transport.may_go_elsewhere == [True, False]
    assert [endpoint for endpoint, _, _ in transport.submitted] == [0, 2]


def test_follow_leader_looks_the_leader_up_after_a_reply_with_a_new_term_and_prefers_its_endpoint(run):
    members = tuple(m.Member(i + 1, f"n{i + 1}", (), (f"tcp://127.0.0.1:{2379 + i}",)) for i in range(3))
    status = m.StatusResponse(HEADER, "3.5.0", 0, leader=3, raft_index=1, raft_term=3, raft_applied_index=1)
    transport = FakeTransport(m.PutResponse(HEADER), status, m.MemberListResponse(HEADER, members),
                              m.PutResponse(m.ResponseHeader(1, 3, 11, 3)))
    calls = CallPlanner(transport, 2.0, 1 << 20, follow_leader=True)
    run(calls.call(m.PutRequest(b"k", b"v"), write=True))
    assert calls.leader_stale.is_set()  # term 3 is new to it
    calls.leader_stale.clear()
    assert run(calls.find_leader()) is True
    assert calls.preferred() == 2
    run(calls.call(m.PutRequest(b"k", b"v"), write=True))
    assert not calls.leader_stale.is_set()  # the same term: no new lookup
    assert [(endpoint, type(message)) for endpoint, _, message in transport.submitted] == [
        (0, m.PutRequest), (0, m.StatusRequest), (0, m.MemberListRequest), (2, m.PutRequest)]


def test_follow_leader_prefers_nothing_while_there_is_no_leader(run):
    status = m.StatusResponse(HEADER, "3.5.0", 0, leader=0, raft_index=1, raft_term=4, raft_applied_index=1)
    calls = CallPlanner(FakeTransport(status), 2.0, 1 << 20, follow_leader=True)
    assert run(calls.find_leader()) is False
    assert calls.preferred() == 0
