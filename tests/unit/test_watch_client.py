"""The client's Watch without threads or sockets: a fake transport records what
is sent, the test plays the member, and the manager's steps run by hand."""

from __future__ import annotations

import itertools
from concurrent.futures import Future

import pytest

from cairn.requests import watch_request
from cairn.watch import ACK_EVERY_RESPONSES, Watch, is_progress_notify
from transport import codec
from transport import messages as m
from transport.errors import Unavailable

HEADER = m.ResponseHeader(1, 2, 10, 3)


def header(revision: int) -> m.ResponseHeader:
    return m.ResponseHeader(1, 2, revision, 3)


def put(revision: int, key: bytes = b"k") -> m.Event:
    return m.Event(m.EVENT_PUT, m.KeyValue(key, 1, revision, 1, b"v"))


class FakeTransport:
    def __init__(self, endpoints=3):
        self.endpoints = [f"tcp://127.0.0.1:{2379 + i}" for i in range(endpoints)]
        self.ids = itertools.count(100)
        self.streams = {}
        self.sent = []  # (endpoint, request id, message)
        self.fail_sends_to: set[int] = set()

    def next_request_id(self):
        return next(self.ids)

    def subscribe(self, request_id, callback):
        self.streams[request_id] = callback

    def unsubscribe(self, request_id):
        self.streams.pop(request_id, None)

    def send(self, endpoint, frame, request_id):
        self.sent.append((endpoint, *codec.decode(frame)))
        future = Future()
        if endpoint in self.fail_sends_to:
            future.set_exception(Unavailable("down"))
        else:
            future.set_result(None)
        return future

    submit = send

    def deliver(self, request_id, message):
        """The member answers: through the codec, as the I/O thread would."""
        self.streams[request_id](codec.decode(codec.encode(message, request_id))[1])

    def creates(self):
        return [(endpoint, rid, msg) for endpoint, rid, msg in self.sent if isinstance(msg, m.WatchCreateRequest)]


class FakeManager:
    def __init__(self, transport):
        self.transport = transport
        self.cancel_wait_s = 2.0
        self.orphans, self.acks, self.removed = [], [], []

    def adopt_orphan(self, endpoint, request_id, watch_id):
        self.orphans.append((endpoint, request_id, watch_id))

    def note_abandoned(self, watch, endpoint, request_id, watch_id, reason, same_endpoint):
        watch.resumes += 1
        self.adopt_orphan(endpoint, request_id, watch_id)

    def ack_soon(self, endpoint):
        self.acks.append(endpoint)

    def remove(self, watch):
        self.removed.append(watch)

    remove_soon = remove


@pytest.fixture
def transport():
    return FakeTransport()


def open_watch(transport, **options):
    request = watch_request(options.pop("key", b"k"), None, False, options.pop("start_revision", 0), False, False, (),
                           False, 0)
    watch = Watch(FakeManager(transport), request, 0)
    watch._step(0.0)
    endpoint, request_id, create = transport.creates()[-1]
    return watch, request_id, create


def test_created_sets_the_start_and_events_flow_with_fragments_reassembled(transport):
    watch, rid, create = open_watch(transport)
    assert create.start_revision == 0
    assert create.grouped  # the library splits WatchResponses (cairn/transport_thread.py)
    transport.deliver(rid, m.WatchResponse(header(10), 0, created=True))
    assert watch.active and watch.covered == 10 and watch.created_header.revision == 10
    transport.deliver(rid, m.WatchResponse(header(11), 0, fragment=True, events=(put(11, b"a"),)))
    assert watch.get(timeout=0) is None  # half a revision is not a response
    transport.deliver(rid, m.WatchResponse(header(12), 0, events=(put(11, b"b"), put(12))))
    response = watch.get(timeout=0)
    assert [e.kv.key for e in response.events] == [b"a", b"b", b"k"] and not response.fragment
    assert watch.covered == 12


def test_resume_starts_after_the_last_complete_response_on_the_next_endpoint(transport):
    watch, rid, _ = open_watch(transport)
    transport.deliver(rid, m.WatchResponse(header(10), 0, created=True))
    transport.deliver(rid, m.WatchResponse(header(13), 0, events=(put(12), put(13))))
    transport.deliver(rid, m.WatchResponse(header(14), 0, fragment=True, events=(put(14),)))  # lost with the member
    with watch._lock:
        watch._abandon("member not answering keep-alives")
    assert watch._manager.orphans == [(0, rid, 0)]  # canceled there, should the member still hold it
    watch._step(watch._resume_at)
    endpoint, new_rid, create = transport.creates()[-1]
    assert endpoint == 1 and create.start_revision == 14 and new_rid != rid
    watch._on_message(rid, m.WatchResponse(header(15), 0, events=(put(15),)))  # a late frame of the old one: ignored
    transport.deliver(new_rid, m.WatchResponse(header(20), 7, created=True))  # swallowed
    transport.deliver(new_rid, m.WatchResponse(header(15), 7, events=(put(14), put(15))))
    got = [watch.get(timeout=0) for _ in range(2)]
    assert [[e.kv.mod_revision for e in r.events] for r in got] == [[12, 13], [14, 15]]
    assert watch.get(timeout=0) is None and watch.resumes == 1 and watch.watch_id == 7


def test_a_watch_from_a_revision_resumes_from_it_before_any_event(transport):
    watch, rid, create = open_watch(transport, start_revision=5)
    assert create.start_revision == 5 and watch.covered == 4
    transport.deliver(rid, m.WatchResponse(header(30), 0, created=True))
    assert watch.covered == 4  # the created header is the store's revision, not this watch's progress
    with watch._lock:
        watch._abandon("gone")
    watch._step(watch._resume_at)
    assert transport.creates()[-1][2].start_revision == 5


def test_a_failed_send_moves_to_the_next_endpoint(transport):
    transport.fail_sends_to = {0}
    watch, rid, _ = open_watch(transport)
    watch._step(1.0)  # sees the failed send
    assert watch.request_id is None and watch.endpoint == 1
    watch._step(watch._resume_at)
    assert transport.creates()[-1][0] == 1


def test_unknown_watch_is_recreated_on_the_same_endpoint_without_cancelling_its_old_id(transport):
    watch, rid, _ = open_watch(transport)
    transport.deliver(rid, m.WatchResponse(header(10), 3, created=True))
    transport.deliver(rid, m.WatchResponse(header(11), 3, canceled=True, cancel_reason=m.WatchKeepAlive.UNKNOWN_WATCH))
    assert watch._manager.orphans == [(0, rid, None)]
    watch._step(watch._resume_at)
    assert transport.creates()[-1][0] == 0 and transport.creates()[-1][2].start_revision == 11
    assert watch.get(timeout=0) is None and not watch.ended


def test_credit_is_returned_every_few_responses(transport):
    watch, rid, _ = open_watch(transport)
    transport.deliver(rid, m.WatchResponse(header(10), 0, created=True))
    for revision in range(11, 11 + ACK_EVERY_RESPONSES):
        transport.deliver(rid, m.WatchResponse(header(revision), 0, events=(put(revision),)))
    for _ in range(ACK_EVERY_RESPONSES - 1):
        watch.get(timeout=0)
    assert watch._manager.acks == []
    watch.get(timeout=0)
    assert watch._manager.acks == [0]
    assert watch._keepalive_entry() == (0, rid, ACK_EVERY_RESPONSES)


def test_compaction_ends_the_stream_with_its_response(transport):
    watch, rid, _ = open_watch(transport, start_revision=2)
    transport.deliver(rid, m.WatchResponse(header(10), 0, created=True))
    transport.deliver(rid, m.WatchResponse(header(10), 0, canceled=True, compact_revision=6))
    last = watch.get(timeout=0)
    assert last.canceled and last.compact_revision == 6
    assert watch.get(timeout=0) is None and watch.ended and list(watch) == []


def test_retryable_errors_resume_and_others_end_the_stream(transport):
    watch, rid, _ = open_watch(transport)
    transport.deliver(rid, m.WatchResponse(header(10), 0, created=True))
    transport.deliver(rid, m.ErrorResponse("TooManyRequests", "etcdserver: too many requests"))
    assert watch.request_id is None and watch.resumes == 1
    watch._step(watch._resume_at)
    new_rid = transport.creates()[-1][1]
    transport.deliver(new_rid, m.WatchResponse(header(10), 0, created=True))
    transport.deliver(new_rid, m.ErrorResponse("MalformedRequest", "bad"))
    with pytest.raises(Exception, match="bad"):
        watch.get(timeout=0)


def test_progress_notify_helper():
    assert is_progress_notify(m.WatchResponse(HEADER, 1))
    assert not is_progress_notify(m.WatchResponse(HEADER, 1, created=True))
    assert not is_progress_notify(m.WatchResponse(HEADER, 1, events=(put(3),)))


def test_request_options():
    request = watch_request("a", None, True, 0, True, False, ("noput",), True, 4)
    assert (request.key, request.range_end, request.filters, request.prev_kv, request.fragment, request.watch_id) == (
        b"a", b"b", (m.WATCH_FILTER_NOPUT,), True, True, 4)
    assert watch_request(b"", None, True, 0, False, False, (), False, 0).range_end == b"\0"
    with pytest.raises(ValueError):
        watch_request(b"a", None, False, 0, False, False, ("nope",), False, 0)


# --------------------------------------------------------------------------- the response queue


def test_responses_queue_keeps_order_polls_and_times_out():
    from cairn.watch import _Responses

    queue = _Responses()
    assert queue.get(0) is None and not queue
    assert queue.get(0.01) is None  # a bounded wait with nothing to take
    woken = []
    queue.listener = lambda: woken.append(len(queue.items))
    for item in range(3):
        queue.put(item)
    assert woken == [1, 2, 3] and queue
    assert [queue.get(0), queue.get(None), queue.get(1.0)] == [0, 1, 2]


def test_responses_queue_wakes_every_blocked_waiter_with_its_item():
    """Two threads blocked in get() and two puts from a third: both get one,
    within a bounded wait (a lost wake-up would leave one waiting its timeout)."""
    import threading
    import time

    from cairn.watch import _Responses

    queue = _Responses()
    taken, started = [], threading.Barrier(3)

    def wait_for_one():
        started.wait(5)
        taken.append(queue.get(10.0))

    threads = [threading.Thread(target=wait_for_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait(5)
    deadline = time.monotonic() + 5
    while queue.waiters < 2:  # both are inside get(): the puts must wake them
        assert time.monotonic() < deadline, "the waiters never blocked"
        time.sleep(0.001)
    began = time.monotonic()
    queue.put("a")
    queue.put("b")
    for thread in threads:
        thread.join(10)
    assert sorted(taken) == ["a", "b"]
    assert time.monotonic() - began < 5


def test_an_unanswered_keepalive_means_a_dead_member_only_while_no_response_arrives_either():
    """A busy member's keep-alive reply waits behind the responses queued
    before it: those responses prove it alive."""
    from cairn.watch import KEEPALIVE_REPLY_TIMEOUT_S, WatchManager, _Link

    manager = WatchManager.__new__(WatchManager)  # no thread: only the rule is under test
    manager.transport = FakeTransport()
    link = _Link()
    link.outstanding.append((1, Future(), 0.0))
    link.heard_at = KEEPALIVE_REPLY_TIMEOUT_S - 0.5  # a response came in late
    assert not manager._link_dead(link, KEEPALIVE_REPLY_TIMEOUT_S + 1)
    assert manager._link_dead(link, 2 * KEEPALIVE_REPLY_TIMEOUT_S)
    silent = _Link()
    silent.outstanding.append((2, Future(), 0.0))
    assert manager._link_dead(silent, KEEPALIVE_REPLY_TIMEOUT_S + 1)


def test_a_response_counts_as_word_from_its_endpoint_once_and_a_moved_watch_starts_silent(transport):
    from cairn.watch import WatchManager

    watch, rid, _ = open_watch(transport)
    assert not WatchManager._heard_from([watch])  # nothing yet
    transport.deliver(rid, m.WatchResponse(header(10), 0, created=True))
    assert WatchManager._heard_from([watch])
    transport.deliver(rid, m.WatchResponse(header(11), 0, events=(put(11),)))
    assert WatchManager._heard_from([watch])
    assert not WatchManager._heard_from([watch])  # nothing new since the last look
    with watch._lock:
        watch._abandon("test")
    watch._step(watch._resume_at)  # re-created on the next endpoint
    assert watch.endpoint == 1 and not WatchManager._heard_from([watch])
