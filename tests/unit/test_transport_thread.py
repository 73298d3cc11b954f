"""The client's I/O thread: closing while other threads submit raises nothing in
those threads, and every submitted Future ends, failed with Unavailable. (The race
this guards — a wake-up written after the I/O thread closed its fd — has a
window too small to hit on demand; the lock discipline in _wake is what fixes it.)"""

import concurrent.futures
import threading

import pytest
import zmq

from cairn.transport_thread import TransportThread
from tests.harness import free_ports
from transport import codec
from transport.errors import Unavailable
from transport.messages import RangeRequest


def test_close_while_threads_submit_raises_nothing_unexpected():
    for _ in range(20):
        transport = TransportThread([f"tcp://127.0.0.1:{free_ports(1)[0]}"], dial_timeout=5.0, max_receive_bytes=1 << 20)
        unexpected, futures = [], []
        start = threading.Event()

        def submit_many():
            start.wait()
            try:
                for _ in range(200):
                    request_id = transport.next_request_id()
                    futures.append(transport.submit(0, codec.encode(RangeRequest(b"k"), request_id), request_id))
            except Exception as error:  # the bug: ContextTerminated / ZMQError from a closed socket
                unexpected.append(error)

        threads = [threading.Thread(target=submit_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        start.set()
        transport.close()
        for thread in threads:
            thread.join()
        assert unexpected == []
        for future in futures:
            assert future.done()
            assert isinstance(future.exception(timeout=0), Unavailable)


def test_many_wake_ups_pending_do_not_fail_a_submission():
    """1,000 watches on one client submit acks faster than a busy I/O thread
    reads its wake-ups: many pending are one wake-up, not an error. The I/O
    thread is held on the client's lock while they pile up."""
    transport = TransportThread([f"tcp://127.0.0.1:{free_ports(1)[0]}"], dial_timeout=5.0, max_receive_bytes=1 << 20)
    try:
        with transport.lock:  # the I/O thread blocks here as soon as it has something to send
            transport.submissions.append((0, b"frame", 1, float("inf"), True))
            transport.pending[1] = None
            woken = [transport._wake() for _ in range(5000)]  # more than a pipe of ZeroMQ's default high-water marks
            transport.pending.pop(1)
        assert all(woken)
    finally:
        transport.close()


def test_a_grouped_watch_response_reaches_each_watch_as_its_own():
    """A WatchResponses frame from a real ROUTER: each subscribed watch gets the
    response under its own request id with its own watch id; an id nobody
    subscribes to (a canceled watch) is skipped."""
    import queue

    from transport.messages import ResponseHeader, WatchResponse, WatchResponses, WatchProgressRequest

    port = free_ports(1)[0]
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    transport = TransportThread([f"tcp://127.0.0.1:{port}"], dial_timeout=5.0, max_receive_bytes=1 << 20)
    try:
        received = queue.Queue()
        for request_id in (11, 12):
            transport.subscribe(request_id, lambda message, request_id=request_id: received.put((request_id, message)))
        transport.send(0, codec.encode(WatchProgressRequest(), 11), 11)
        assert router.poll(5000)
        identity, _ = router.recv_multipart()
        response = WatchResponse(ResponseHeader(1, 2, 3, 4), -1, events=())
        router.send_multipart([identity, codec.encode(WatchResponses((11, 99, 12), (0, 5, 1), response), 11)])
        got = sorted(received.get(timeout=5) for _ in range(2))
        assert got == [(11, WatchResponse(response.header, 0)), (12, WatchResponse(response.header, 1))]
        assert received.empty()
    finally:
        transport.close()
        router.close(linger=0)


def test_a_request_on_a_connection_that_drops_fails_at_once_with_connection_lost():
    """A member that dies after taking a request never answers it: the request
    fails when the connection drops, not at its deadline."""
    import time

    from transport.errors import ConnectionLostError

    port = free_ports(1)[0]
    context = zmq.Context()
    server = context.socket(zmq.ROUTER)
    server.bind(f"tcp://127.0.0.1:{port}")
    transport = TransportThread([f"tcp://127.0.0.1:{port}"], dial_timeout=5.0, max_receive_bytes=1 << 20)
    try:
        request_id = transport.next_request_id()
        future = transport.submit(0, codec.encode(RangeRequest(b"k"), request_id), request_id)
        assert server.poll(5000)  # the request arrived: it left the client
        server.recv_multipart()
        started = time.monotonic()
        server.close(linger=0)  # the member dies without answering
        error = future.exception(timeout=10)
        assert isinstance(error, ConnectionLostError)
        assert time.monotonic() - started < 5  # far sooner than any request timeout
        assert transport.forget(request_id) is False  # nothing left pending for it
    finally:
        transport.close()
        context.term()


def test_a_request_submitted_by_a_replys_callback_goes_out_without_a_wake_up():
    """A closed-loop caller (cairn bench) issues its next request from the
    reply's callback, on the I/O thread: the thread sends it before it polls
    again, rather than waking itself through its eventfd."""
    import zmq

    from transport.messages import RangeResponse, ResponseHeader

    port = free_ports(1)[0]
    context = zmq.Context()
    server = context.socket(zmq.ROUTER)
    server.bind(f"tcp://127.0.0.1:{port}")
    transport = TransportThread([f"tcp://127.0.0.1:{port}"], dial_timeout=5.0, max_receive_bytes=1 << 20)
    wakes = []
    wake = transport._wake
    transport._wake = lambda closing=False: wakes.append(threading.get_ident()) or wake(closing)
    chained = []

    def submit_next(future):
        request_id = transport.next_request_id()
        chained.append(transport.submit(0, codec.encode(RangeRequest(b"k"), request_id), request_id))

    try:
        request_id = transport.next_request_id()
        first = transport.submit(0, codec.encode(RangeRequest(b"k"), request_id), request_id)
        first.add_done_callback(submit_next)
        reply = RangeResponse(ResponseHeader(1, 2, 3, 4), ())
        for _ in range(2):  # the first request, then the one its callback submitted
            assert server.poll(5000)
            identity, frame = server.recv_multipart()
            server.send_multipart([identity, codec.encode(reply, codec.peek_request_id(frame))])
        assert first.result(timeout=5) == reply
        assert chained[0].result(timeout=5) == reply
        assert transport.thread_id not in wakes  # only the caller's own submit woke the thread
        assert len(wakes) == 1
    finally:
        transport.close()
        server.close(linger=0)


def test_a_request_to_an_endpoint_that_refuses_connections_fails_at_once_not_after_dial_timeout():
    """A killed member's port refuses connections: once the I/O thread has seen
    one refused, a request for it fails with Unavailable (never sent, so the
    caller may go to its other endpoint) well before dial_timeout, every time."""
    dead, other = free_ports(2)
    transport = TransportThread([f"tcp://127.0.0.1:{dead}", f"tcp://127.0.0.1:{other}"], dial_timeout=30.0,
                                max_receive_bytes=1 << 20)
    try:
        for _ in range(3):
            request_id = transport.next_request_id()
            future = transport.submit(0, codec.encode(RangeRequest(b"k"), request_id), request_id)
            assert isinstance(future.exception(timeout=10), Unavailable)
            assert transport.forget(request_id) is False
    finally:
        transport.close()


def test_a_client_of_one_endpoint_waits_for_its_connection_rather_than_failing_at_once():
    """Nowhere else to go: the request waits (up to dial_timeout) and leaves
    as soon as the member listens again."""
    port = free_ports(1)[0]
    transport = TransportThread([f"tcp://127.0.0.1:{port}"], dial_timeout=30.0, max_receive_bytes=1 << 20)
    try:
        request_id = transport.next_request_id()
        _assert_it_waits_and_then_arrives(transport.submit(0, codec.encode(RangeRequest(b"k"), request_id), request_id), port)
    finally:
        transport.close()


def _assert_it_waits_and_then_arrives(future, port: int) -> None:
    """The request is still waiting after 0.5 s of refused connections, and
    reaches the member once it listens on `port`."""
    with pytest.raises(concurrent.futures.TimeoutError):
        future.exception(timeout=0.5)  # refused all this while, and still waiting
    router = zmq.Context.instance().socket(zmq.ROUTER)
    try:
        router.bind(f"tcp://127.0.0.1:{port}")
        assert router.poll(10_000), "the waiting request never arrived"
    finally:
        router.close(linger=0)


def test_a_request_for_one_member_waits_for_its_connection_in_a_client_of_several():
    """A call for one member (`endpoint=`, may_go_elsewhere=False) has nowhere
    else to go either: after its member restarted, it waits for the client's
    reconnection instead of failing at once because the endpoint was down."""
    port, other = free_ports(2)
    transport = TransportThread([f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{other}"], dial_timeout=30.0,
                                max_receive_bytes=1 << 20)
    try:
        request_id = transport.next_request_id()
        refused = transport.submit(0, codec.encode(RangeRequest(b"k"), request_id), request_id)
        assert isinstance(refused.exception(timeout=10), Unavailable)  # the endpoint is known to be down
        request_id = transport.next_request_id()
        _assert_it_waits_and_then_arrives(
            transport.submit(0, codec.encode(RangeRequest(b"k"), request_id), request_id, may_go_elsewhere=False), port)
    finally:
        transport.close()


def test_a_frame_submitted_during_a_burst_of_replies_goes_before_the_rest_of_the_burst():
    """A watch's keep-alive returns the credit the member needs to send more:
    submitted while the I/O thread works through a burst of watch responses,
    it leaves before the next response is handled, not after the burst (it
    used to wait behind the whole burst, up to ~1 s in the fan-out bench)."""
    import zmq

    from transport.messages import ResponseHeader, WatchProgressRequest, WatchResponse

    port = free_ports(1)[0]
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    transport = TransportThread([f"tcp://127.0.0.1:{port}"], dial_timeout=5.0, max_receive_bytes=1 << 20)
    burst_sent = threading.Event()
    submitted = []  # the keep-alive's Future
    sent_before_next = []  # whether it had left when the next response was handled
    next_handled = threading.Event()

    def on_response(message) -> None:
        if not submitted:
            assert burst_sent.wait(5)  # the whole burst is on its way while this one is handled
            submitted.append(transport.send(0, codec.encode(WatchProgressRequest(), 12), 12))
        elif not sent_before_next:
            sent_before_next.append(submitted[0].done())
            next_handled.set()

    try:
        transport.subscribe(11, on_response)
        transport.send(0, codec.encode(WatchProgressRequest(), 11), 11)
        assert router.poll(5000)
        identity, _ = router.recv_multipart()
        response = codec.encode(WatchResponse(ResponseHeader(1, 2, 3, 4), 0), 11)
        for _ in range(200):
            router.send_multipart([identity, response])
        burst_sent.set()
        assert router.poll(5000)  # the keep-alive arrived
        assert codec.decode(router.recv_multipart()[1])[0] == 12
        assert next_handled.wait(5)
        assert sent_before_next == [True]
    finally:
        transport.close()
        router.close(linger=0)
        context.term()


def test_a_reply_after_the_timeout_is_dropped_and_the_next_call_gets_its_own():
    """A write sent and not answered in time is indeterminate; its reply, when
    it comes, goes nowhere, and the next call is answered with its own."""
    from cairn import Client
    from transport.errors import IndeterminateError
    from transport.messages import PutResponse, ResponseHeader, StatusResponse

    port = free_ports(1)[0]
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    client = Client([f"tcp://127.0.0.1:{port}"], timeout=0.3)
    header = ResponseHeader(1, 2, 3, 4)
    try:
        with pytest.raises(IndeterminateError):
            client.put(b"k", b"v")
        assert router.poll(5000)
        identity, late = router.recv_multipart()
        router.send_multipart([identity, codec.encode(PutResponse(header), codec.peek_request_id(late))])
        status = StatusResponse(header, "3.5", 1, 2, 3, 4, 5)
        caller = concurrent.futures.ThreadPoolExecutor(1)
        answer = caller.submit(client.status, timeout=10)
        assert router.poll(10_000)
        identity, frame = router.recv_multipart()
        router.send_multipart([identity, codec.encode(status, codec.peek_request_id(frame))])
        assert answer.result(timeout=10) == status
        caller.shutdown()
    finally:
        client.close()
        router.close(linger=0)
        context.term()


def test_close_ends_a_call_waiting_for_its_reply_with_unavailable():
    """close() fails every pending Future: a caller blocked on a reply that
    will never come gets a definite answer, Unavailable (nothing was applied
    that the caller does not know of: it was a read)."""
    from cairn import Client

    port = free_ports(1)[0]
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    client = Client([f"tcp://127.0.0.1:{port}"], timeout=1.0)
    caller = concurrent.futures.ThreadPoolExecutor(1)
    try:
        call = caller.submit(client.get, b"k")
        assert router.poll(5000)  # the request left: the caller waits for its reply
        client.close()
        assert isinstance(call.exception(timeout=10), Unavailable)
    finally:
        caller.shutdown()
        client.close()
        router.close(linger=0)
        context.term()
