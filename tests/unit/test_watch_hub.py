"""The watch hub's rules, deterministically: no sockets, no LMDB, no clock.

A fake history stands in for the store (it keeps Reader.events_since's
contract: whole revisions, the next revision to read, CompactedError), time is
a number the test moves, and the test plays the clients: it takes the hub's
frames, decodes them with the ordinary codec and acknowledges what it consumed.
"""

from __future__ import annotations

import dataclasses

import pytest

from actors.watch_hub.hub import continuous
from actors.watch_hub import (
    INVALID_WATCH_ID,
    REASON_COMPACTED,
    REASON_DUPLICATE_ID,
    REASON_EMPTY_RANGE,
    REASON_UNKNOWN,
    Hub,
    HubLimits,
)
from store.keys import bounds, contains
from transport import codec
from transport.errors import CompactedError
from transport.messages import (
    EVENT_DELETE,
    EVENT_PUT,
    WATCH_FILTER_NODELETE,
    WATCH_FILTER_NOPUT,
    Event,
    KeyValue,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchKeepAlive,
    WatchResponse,
    WatchResponses,
)

A, B = b"client-a", b"client-b"


class History:
    """The store's history, as the apply actor would have written it."""

    def __init__(self):
        self.events: list[Event] = []
        self.revision = 1  # etcd's first revision holds nothing
        self.compact_revision = 0
        self.latest: dict[bytes, KeyValue] = {}

    def txn(self, *operations) -> list[Event]:
        """One revision: operations are (key, value) puts or (key, None) deletes."""
        self.revision += 1
        made = []
        for key, value in operations:
            previous = self.latest.get(key)
            if value is None:
                kv = KeyValue(key, 0, self.revision, 0, b"")
                self.latest.pop(key, None)
                event = Event(EVENT_DELETE, kv, previous)
            else:
                create = previous.create_revision if previous else self.revision
                kv = KeyValue(key, create, self.revision, (previous.version if previous else 0) + 1, value)
                self.latest[key] = kv
                event = Event(EVENT_PUT, kv, previous)
            made.append(event)
        self.events.extend(made)
        return made

    def put(self, key: bytes, value: bytes = b"v") -> list[Event]:
        return self.txn((key, value))

    def delete(self, key: bytes) -> list[Event]:
        return self.txn((key, None))

    def read(self, start_revision, key, range_end, max_events, prev_kv):
        if self.compact_revision and start_revision < self.compact_revision:
            raise CompactedError(compact_revision=self.compact_revision)
        start, end = bounds(key, range_end)
        found, pending, pending_revision = [], [], 0
        for event in self.events:
            revision = event.kv.mod_revision
            if revision < start_revision:
                continue
            if revision != pending_revision:
                if found and len(found) + len(pending) > max_events:
                    return found, pending_revision
                found.extend(pending)
                pending = []
                if len(found) >= max_events:
                    return found, revision
                pending_revision = revision
            if contains(start, end, event.kv.key):
                pending.append(event if prev_kv else Event(event.type, event.kv))
        if found and len(found) + len(pending) > max_events:
            return found, pending_revision
        found.extend(pending)
        return found, max(start_revision, self.revision + 1)


class Clients:
    """Plays the client side: collects each watch's responses, reassembles
    fragments, and acknowledges as the client library does."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.responses: dict[tuple[bytes, int], list[WatchResponse]] = {}
        self.frames: dict[tuple[bytes, int], list[WatchResponse]] = {}
        self.partial: dict[tuple[bytes, int], list[Event]] = {}
        self.other: list[tuple[bytes, int, object]] = []
        self.wire_frames = 0  # frames the hub sent, a WatchResponses counting once

    def pump(self, read=None, turns: int = 100) -> None:
        """Run the shell's turn (catch up, then send everything) until quiet."""
        for _ in range(turns):
            if read is not None and self.hub.has_catch_up():
                self.hub.catch_up(read)
            out = self.hub.take_output(1 << 20)
            if out is None and not (read is not None and self.hub.has_catch_up()):
                return
            if out is None:
                continue
            for identity, frame in zip(out.identities, out.frames):
                request_id, message = codec.decode(frame)
                self.wire_frames += 1
                if isinstance(message, WatchResponses):  # as the client's transport splits it
                    assert message.response.watch_id == -1 and not message.response.fragment
                    for request_id, watch_id in zip(message.request_ids, message.watch_ids):
                        self.receive(identity, request_id, dataclasses.replace(message.response, watch_id=watch_id))
                    continue
                self.receive(identity, request_id, message)
        raise AssertionError("hub never went quiet")

    def receive(self, identity, request_id, message) -> None:
        key = (identity, request_id)
        if not isinstance(message, WatchResponse):
            self.other.append((identity, request_id, message))
            return
        self.frames.setdefault(key, []).append(message)
        if message.fragment:
            self.partial.setdefault(key, []).extend(message.events)
            return
        events = tuple(self.partial.pop(key, [])) + message.events
        whole = WatchResponse(message.header, message.watch_id, message.created, message.canceled,
                              message.compact_revision, message.cancel_reason, False, events)
        self.responses.setdefault(key, []).append(whole)

    def of(self, identity, request_id) -> list[WatchResponse]:
        return self.responses.get((identity, request_id), [])

    def events(self, identity, request_id) -> list[Event]:
        return [event for response in self.of(identity, request_id) for event in response.events]

    def revisions(self, identity, request_id) -> list[int]:
        return [event.kv.mod_revision for event in self.events(identity, request_id)]

    def ack(self, identity, request_id, watch_id, now: float = 0.0) -> None:
        """Everything received has been consumed: return the credit."""
        consumed = sum(1 for r in self.of(identity, request_id) if not r.created and not r.canceled)
        self.hub.keepalive(identity, 999, WatchKeepAlive(2000, (watch_id,), (request_id,), (consumed,)), now)


def created(clients, identity, request_id) -> WatchResponse:
    first = clients.of(identity, request_id)[0]
    assert first.created and not first.canceled, first
    return first


@pytest.fixture
def history():
    return History()


def make_hub(history, **limits) -> Hub:
    return Hub(cluster_id=7, member_id=9, revision=history.revision, now=0.0, limits=HubLimits(**limits))


def live(hub, history, events) -> None:
    hub.on_events(history.revision, tuple(events))


# --------------------------------------------------------------------------- matching


def test_created_comes_first_and_key_range_and_from_key_watches_match(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"foo"), history.revision, 0.0)
    hub.create(A, 2, WatchCreateRequest(b"a", b"c"), history.revision, 0.0)
    hub.create(A, 3, WatchCreateRequest(b"b", b"\0"), history.revision, 0.0)
    clients.pump()
    ids = [created(clients, A, request_id).watch_id for request_id in (1, 2, 3)]
    assert ids == [0, 1, 2]  # etcd's server-assigned ids
    for key in (b"foo", b"apple", b"b", b"c", b"zz", b"fo"):
        live(hub, history, history.put(key))
    clients.pump()
    keys = {rid: [e.kv.key for e in clients.events(A, rid)] for rid in (1, 2, 3)}
    assert keys == {1: [b"foo"], 2: [b"apple", b"b"], 3: [b"foo", b"b", b"c", b"zz", b"fo"]}


def test_empty_key_means_the_smallest_key_and_whole_keyspace_watch(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"\0", b"\0"), history.revision, 0.0)
    clients.pump()
    live(hub, history, history.put(b"\x00x") + history.put(b"\xff"))
    clients.pump()
    assert [e.kv.key for e in clients.events(A, 1)] == [b"\x00x", b"\xff"]


def test_filters_drop_puts_or_deletes(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", filters=(WATCH_FILTER_NOPUT,)), history.revision, 0.0)
    hub.create(A, 2, WatchCreateRequest(b"k", filters=(WATCH_FILTER_NODELETE,)), history.revision, 0.0)
    live(hub, history, history.put(b"k"))
    live(hub, history, history.delete(b"k"))
    clients.pump()
    assert [e.type for e in clients.events(A, 1)] == [EVENT_DELETE]
    assert [e.type for e in clients.events(A, 2)] == [EVENT_PUT]


def test_prev_kv_only_for_watches_that_ask(history):
    history.put(b"k", b"one")
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", prev_kv=True), history.revision, 0.0)
    hub.create(A, 2, WatchCreateRequest(b"k"), history.revision, 0.0)
    live(hub, history, history.put(b"k", b"two"))
    live(hub, history, history.delete(b"k"))
    clients.pump()
    with_prev = clients.events(A, 1)
    assert [e.prev_kv.value for e in with_prev] == [b"one", b"two"]
    assert with_prev[1].type == EVENT_DELETE and with_prev[1].kv.version == 0
    assert [e.prev_kv for e in clients.events(A, 2)] == [None, None]


# --------------------------------------------------------------------------- responses


def test_one_revision_travels_whole_and_header_says_how_far_the_watch_is_complete(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"a", b"z"), history.revision, 0.0)
    batch = history.txn((b"a1", b"x"), (b"a2", b"y"), (b"a3", b"z")) + history.put(b"zz") + history.put(b"b")
    live(hub, history, batch)
    clients.pump()
    responses = [r for r in clients.of(A, 1) if not r.created]
    assert len(responses) == 1  # revisions of one batch share a response
    assert [e.kv.key for e in responses[0].events] == [b"a1", b"a2", b"a3", b"b"]
    assert responses[0].header.revision == history.revision  # complete up to the batch, including the unmatched zz


def test_large_revisions_are_fragmented_only_for_fragment_watches(history):
    hub = make_hub(history, max_response_bytes=1000, buffer_bytes_max=100_000)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", b"l", fragment=True), history.revision, 0.0)
    hub.create(A, 2, WatchCreateRequest(b"k", b"l"), history.revision, 0.0)
    big = history.txn(*[(f"k{i}".encode(), b"x" * 300) for i in range(10)])
    small = history.put(b"k-small", b"s") + history.put(b"k-small2", b"s")
    live(hub, history, big + small)
    clients.pump()
    fragments = [f for f in clients.frames[(A, 1)] if not f.created]
    assert len(fragments) >= 4
    assert [f.fragment for f in fragments[:-2]] == [True] * (len(fragments) - 2)
    # the last fragment of the big revision closes it; the small revisions follow in their own response
    assert fragments[-2].fragment is False and fragments[-1].fragment is False
    assert all(len(codec.encode(f)) < 1000 + 200 for f in fragments)
    reassembled = [r for r in clients.of(A, 1) if not r.created]
    assert [len(r.events) for r in reassembled] == [10, 2]
    # without fragment, the big revision goes whole in one (oversized) response
    plain = [f for f in clients.frames[(A, 2)] if not f.created]
    assert [len(f.events) for f in plain] == [10, 2] and not any(f.fragment for f in plain)
    assert clients.events(A, 1) == clients.events(A, 2)


def test_responses_split_between_revisions_when_large(history):
    hub = make_hub(history, max_response_bytes=1000, buffer_bytes_max=100_000)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", b"l"), history.revision, 0.0)
    batch = []
    for i in range(12):
        batch += history.put(f"k{i}".encode(), b"x" * 200)
    live(hub, history, batch)
    clients.pump()
    responses = [r for r in clients.of(A, 1) if not r.created]
    assert len(responses) > 1
    assert clients.revisions(A, 1) == sorted(clients.revisions(A, 1)) and len(clients.events(A, 1)) == 12
    headers = [r.header.revision for r in responses]
    assert headers == sorted(headers) and headers[-1] == history.revision
    for response in responses:  # each header covers exactly its own events
        assert response.events[-1].kv.mod_revision <= response.header.revision


# --------------------------------------------------------------------------- history and the seam


def test_watch_from_a_past_revision_replays_history_then_continues_live_without_duplicates(history):
    for i in range(10):
        history.put(b"k", str(i).encode())
    hub = make_hub(history, catch_up_events=3)
    hub.revision = history.revision - 3  # the live stream lags the store: three batches still in flight
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", start_revision=4), history.revision, 0.0)
    clients.pump(read=history.read)
    for events in history.events[-3:]:  # the late live batches: already replayed
        hub.on_events(events.kv.mod_revision, (events,))
    live(hub, history, history.put(b"k", b"later"))
    clients.pump(read=history.read)
    assert clients.revisions(A, 1) == list(range(4, history.revision + 1))


def test_events_arriving_while_replay_is_in_progress_are_stitched_by_revision(history):
    for i in range(20):
        history.put(f"k{i}".encode())
    hub = make_hub(history, catch_up_events=4, catch_up_reads_per_turn=1)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", b"l", start_revision=2), history.revision, 0.0)
    for i in range(10):  # one bounded read per turn, with live writes in between
        hub.catch_up(history.read)
        live(hub, history, history.put(f"live{i}".encode()) + history.put(f"k-live{i}".encode()))
        clients.pump()
    clients.pump(read=history.read)
    expected = [e.kv.mod_revision for e in history.events if e.kv.key.startswith(b"k")]
    assert clients.revisions(A, 1) == expected


def test_future_start_revision_waits_for_it(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", start_revision=history.revision + 3), history.revision, 0.0)
    for _ in range(4):
        live(hub, history, history.put(b"k"))
    clients.pump(read=history.read)
    assert clients.revisions(A, 1) == [history.revision - 1, history.revision]


def test_watch_from_now_starts_after_the_store_revision_even_if_live_lags(history):
    history.put(b"k")
    hub = make_hub(history)
    hub.revision = history.revision - 1  # the put's AppliedEvents is still in the inbox
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    hub.on_events(history.revision, tuple(history.events[-1:]))  # happened before the watch
    live(hub, history, history.put(b"k"))
    clients.pump()
    assert created(clients, A, 1).header.revision == history.revision - 1
    assert clients.revisions(A, 1) == [history.revision]


def test_compacted_start_revision_gets_compact_revision_and_canceled(history):
    for _ in range(6):
        history.put(b"k")
    history.compact_revision = 5
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", start_revision=2), history.revision, 0.0)
    clients.pump(read=history.read)
    first, last = clients.of(A, 1)
    assert first.created
    assert last.canceled and last.compact_revision == 5 and last.cancel_reason == REASON_COMPACTED
    assert hub.watcher_count == 0
    hub.create(A, 2, WatchCreateRequest(b"k", start_revision=5), history.revision, 0.0)  # at the compact revision: served
    clients.pump(read=history.read)
    assert clients.revisions(A, 2) == [5, 6, 7]


def test_a_hole_in_the_live_stream_is_filled_from_the_store(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    live(hub, history, history.put(b"k"))
    history.put(b"k")  # this batch's AppliedEvents was lost on a full queue
    history.put(b"k")
    live(hub, history, history.put(b"k"))
    clients.pump(read=history.read)
    assert clients.revisions(A, 1) == [2, 3, 4, 5]


def test_a_lost_last_batch_is_found_by_the_store_revision_check(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    history.put(b"k")  # lost, and nothing follows it
    hub.note_store_revision(history.revision)
    clients.pump(read=history.read)
    assert clients.revisions(A, 1) == [2]
    live(hub, history, history.events[-1:])  # arrives after all: a duplicate
    live(hub, history, history.put(b"k"))
    clients.pump(read=history.read)
    assert clients.revisions(A, 1) == [2, 3]


def test_elided_batches_move_the_revision_of_a_hub_without_watchers(history):
    hub = make_hub(history)
    history.put(b"k")
    hub.on_events(history.revision, (), elided=True)
    assert hub.revision == history.revision
    assert hub.notes == []  # no gap to speak of: nobody needed those events


def test_a_watcher_created_while_apply_still_elides_reads_the_store(history):
    """apply learns of the first watcher a little after the hub has it: the
    batches it elides meanwhile are read from the store, then live events follow."""
    hub = make_hub(history)
    clients = Clients(hub)
    history.put(b"k")
    hub.on_events(history.revision, (), elided=True)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)  # from now: 3 on
    hub.create(A, 2, WatchCreateRequest(b"k", start_revision=2), history.revision, 0.0)  # from the past
    history.put(b"k")
    history.put(b"k")
    hub.on_events(history.revision, (), elided=True)  # 3 and 4, elided
    live(hub, history, history.put(b"k"))  # apply heard of the watchers: 5 arrives live
    clients.pump(read=history.read)
    assert clients.revisions(A, 1) == [3, 4, 5]
    assert clients.revisions(A, 2) == [2, 3, 4, 5]
    live(hub, history, history.put(b"k"))
    clients.pump(read=history.read)
    assert clients.revisions(A, 1) == [3, 4, 5, 6]


# --------------------------------------------------------------------------- slow watchers


def test_slow_watcher_spills_to_the_store_and_rejoins_while_a_fast_one_keeps_up(history):
    hub = make_hub(history, window_responses=4, buffer_events_max=20, buffer_bytes_max=1 << 20, catch_up_events=8)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)  # never acks until the end
    hub.create(B, 1, WatchCreateRequest(b"k"), history.revision, 0.0)  # acks everything at once
    clients.pump()
    slow_id, fast_id = created(clients, A, 1).watch_id, created(clients, B, 1).watch_id
    peak = 0
    for i in range(100):
        live(hub, history, history.put(b"k", str(i).encode()))
        clients.pump(read=history.read)
        clients.ack(B, 1, fast_id)
        peak = max(peak, max(w.buffer_events for c in hub.connections.values() for w in c.watchers.values()))
    assert clients.revisions(B, 1) == list(range(2, 102))  # the fast one got everything, as it happened
    assert len(clients.events(A, 1)) == 4  # the slow one got its window, no more
    assert peak <= 20 and hub.peak_buffer_events <= 20
    assert any(event == "watcher_unsynced" and fields["reason"] == "buffer_full" for event, fields in hub.notes)
    for _ in range(60):  # the slow one starts consuming: catch-up from the store, then live again
        clients.ack(A, 1, slow_id)
        clients.pump(read=history.read)
    assert clients.revisions(A, 1) == list(range(2, 102))
    live(hub, history, history.put(b"k", b"after"))
    clients.ack(A, 1, slow_id)
    clients.pump(read=history.read)
    assert clients.revisions(A, 1)[-1] == history.revision
    watcher = hub.connections[A].watchers[slow_id]
    assert watcher.synced
    assert any(event == "watcher_synced" for event, _ in hub.notes)


def test_window_bounds_unacknowledged_responses(history):
    hub = make_hub(history, window_responses=4)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    clients.pump()
    for _ in range(10):
        live(hub, history, history.put(b"k"))
        clients.pump()
    assert len([r for r in clients.of(A, 1) if not r.created]) == 4
    clients.ack(A, 1, 0)
    clients.pump()
    # the six waiting revisions went out merged into one response
    assert [r.header.revision for r in clients.of(A, 1)[5:]] == [history.revision]
    assert clients.revisions(A, 1) == list(range(2, 12))


def test_full_queue_to_frontend_requeues_in_order(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    live(hub, history, history.put(b"k"))
    out = hub.take_output(1 << 20)
    hub.requeue(out)
    live(hub, history, history.put(b"k"))
    clients.pump()
    assert clients.of(A, 1)[0].created
    assert clients.revisions(A, 1) == [2, 3]


def test_total_buffer_limit_spills_the_largest_backlog(history):
    hub = make_hub(history, window_responses=4, total_buffer_bytes_max=3000, buffer_bytes_max=1 << 20)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    clients.pump()
    for _ in range(30):
        live(hub, history, history.put(b"k", b"x" * 100))
        clients.pump()
        assert hub.buffered_bytes <= 3000
    assert any(fields.get("reason") == "total_buffer_full" for _, fields in hub.notes)


# --------------------------------------------------------------------------- requests


def test_cancel_answers_under_the_create_request_id_and_stops_events(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    clients.pump()
    hub.cancel(A, WatchCancelRequest(0), 0.0)
    hub.cancel(A, WatchCancelRequest(42), 0.0)  # unknown: no answer, as etcd
    live(hub, history, history.put(b"k"))
    clients.pump()
    assert [(r.created, r.canceled, r.watch_id) for r in clients.of(A, 1)] == [(True, False, 0), (False, True, 0)]
    assert hub.watcher_count == 0 and clients.other == []


def test_client_chosen_ids_and_duplicates_are_refused_as_etcd_does(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", watch_id=1), history.revision, 0.0)
    hub.create(A, 2, WatchCreateRequest(b"k", watch_id=1), history.revision, 0.0)
    hub.create(B, 3, WatchCreateRequest(b"k", watch_id=1), history.revision, 0.0)  # another connection: fine
    hub.create(A, 4, WatchCreateRequest(b"k"), history.revision, 0.0)
    hub.create(A, 5, WatchCreateRequest(b"k"), history.revision, 0.0)
    hub.create(A, 6, WatchCreateRequest(b"k", b"a"), history.revision, 0.0)
    clients.pump()
    assert created(clients, A, 1).watch_id == 1
    refused = clients.of(A, 2)[0]
    assert refused.created and refused.canceled and refused.watch_id == INVALID_WATCH_ID
    assert refused.cancel_reason == REASON_DUPLICATE_ID
    assert created(clients, B, 3).watch_id == 1
    assert [created(clients, A, rid).watch_id for rid in (4, 5)] == [0, 2]  # auto ids skip 1, in use
    assert clients.of(A, 6)[0].cancel_reason == REASON_EMPTY_RANGE


def test_progress_request_answers_every_watch_of_the_connection(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"x"), history.revision, 0.0)
    hub.create(A, 2, WatchCreateRequest(b"y"), history.revision, 0.0)
    hub.create(B, 3, WatchCreateRequest(b"z"), history.revision, 0.0)
    live(hub, history, history.put(b"other"))
    clients.pump()
    hub.request_progress(A, history.revision, 0.0)
    clients.pump()
    for rid in (1, 2):
        progress = clients.of(A, rid)[-1]
        assert not progress.created and progress.events == () and progress.header.revision == history.revision
    assert len(clients.of(B, 3)) == 1


def test_progress_waits_for_the_live_stream_to_reach_the_store_revision(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"x"), history.revision, 0.0)
    clients.pump()
    history.put(b"x")  # acknowledged to the writer; its AppliedEvents not here yet
    hub.request_progress(A, history.revision, 0.0)
    clients.pump()
    assert len(clients.of(A, 1)) == 1
    live(hub, history, history.events[-1:])
    clients.pump()
    event, progress = clients.of(A, 1)[1:]
    assert event.events[0].kv.mod_revision == history.revision
    assert progress.events == () and progress.header.revision == history.revision


def test_progress_notify_only_for_idle_synced_watches(history):
    hub = make_hub(history, progress_notify_s=10.0)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"x", progress_notify=True), history.revision, 0.0)
    hub.create(A, 2, WatchCreateRequest(b"y", progress_notify=True), history.revision, 0.0)
    hub.create(A, 3, WatchCreateRequest(b"x"), history.revision, 0.0)
    live(hub, history, history.put(b"x"))
    clients.pump()
    hub.heard(A, 10.0)
    hub.tick(10.0)
    clients.pump()
    assert len(clients.of(A, 1)) == 2  # it had events in the interval: no notification
    assert clients.of(A, 2)[-1].events == () and clients.of(A, 2)[-1].header.revision == history.revision
    hub.heard(A, 20.0)
    hub.tick(20.0)
    clients.pump()
    assert clients.of(A, 1)[-1].events == () and len(clients.of(A, 2)) == 3
    assert len(clients.of(A, 3)) == 2


def test_silent_connections_lose_their_watches_and_keepalives_keep_them(history):
    hub = make_hub(history, keepalive_interval_s=2.0)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    hub.create(B, 2, WatchCreateRequest(b"k"), history.revision, 0.0)
    for now in (1.0, 2.5, 4.0, 5.5, 7.0):
        hub.keepalive(B, 100, WatchKeepAlive(1000, (0,), (2,), (0,)), now)
        hub.tick(now)
    assert A not in hub.connections and B in hub.connections
    assert hub.watcher_count == 1
    assert any(event == "connection_expired" for event, _ in hub.notes)


def test_keepalive_is_answered_and_unknown_watches_are_reported(history):
    hub = make_hub(history)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k"), history.revision, 0.0)
    hub.keepalive(A, 50, WatchKeepAlive(2000, (0, 7), (1, 8), (0, 0)), 0.0)
    clients.pump()
    reply = clients.of(A, 50)[0]
    assert reply.watch_id == INVALID_WATCH_ID and not reply.canceled
    lost = clients.of(A, 8)[0]
    assert lost.canceled and lost.watch_id == 7 and lost.cancel_reason == REASON_UNKNOWN
    assert len(clients.of(A, 1)) == 1  # the known watch is untouched


# --------------------------------------------------------------------------- grouped responses


def test_watches_of_one_connection_due_the_same_response_share_one_frame(history):
    hub = make_hub(history)
    clients = Clients(hub)
    for request_id in range(1, 51):
        hub.create(A, request_id, WatchCreateRequest(b"p/", b"p0", grouped=True), history.revision, 0.0)
    hub.create(B, 1, WatchCreateRequest(b"p/", b"p0", grouped=True), history.revision, 0.0)
    clients.pump()
    before = clients.wire_frames
    live(hub, history, history.put(b"p/1") + history.put(b"p/2"))
    clients.pump()
    assert clients.wire_frames - before == 2  # one per connection, not one per watch
    for identity, request_id in [(A, r) for r in range(1, 51)] + [(B, 1)]:
        watch_id = created(clients, identity, request_id).watch_id
        response = clients.of(identity, request_id)[1]
        assert response.watch_id == watch_id and response.header.revision == history.revision
        assert clients.revisions(identity, request_id) == [history.revision - 1, history.revision]


def test_a_later_unit_of_a_watch_never_joins_an_earlier_group(history):
    """X's progress notification and W's are alike, but W's comes after an
    event X has already had: W must get its event first."""
    hub = make_hub(history, window_responses=4)
    clients = Clients(hub)
    hub.create(A, 1, WatchCreateRequest(b"k", grouped=True), history.revision, 0.0)  # X
    hub.create(A, 2, WatchCreateRequest(b"k", grouped=True), history.revision, 0.0)  # W
    clients.pump()
    for _ in range(5):  # four fill both windows, the fifth waits in both buffers
        live(hub, history, history.put(b"k"))
        clients.pump()
    clients.ack(A, 1, 0)
    clients.pump()  # X gets the fifth; W's window is still closed
    hub.request_progress(A, history.revision, 0.0)
    clients.ack(A, 2, 1)  # W: the event, then the progress, in one take_output
    clients.pump()
    for request_id in (1, 2):
        last_two = clients.of(A, request_id)[-2:]
        assert [len(r.events) for r in last_two] == [1, 0], request_id
        assert last_two[1].header.revision == history.revision


def run_scenario(grouped: bool) -> dict:
    """Watches of every kind on two connections through slow acks, spills,
    catch-up reads and progress: the responses each watch receives."""
    history = History()
    history.put(b"a/0")
    hub = make_hub(history, window_responses=4, buffer_events_max=6, catch_up_events=3, max_response_bytes=400,
                   buffer_bytes_max=4000)
    clients = Clients(hub)
    kinds = [
        dict(key=b"a/", range_end=b"a0"), dict(key=b"a/", range_end=b"a0", prev_kv=True),
        dict(key=b"a/", range_end=b"a0", filters=(WATCH_FILTER_NODELETE,)), dict(key=b"a/1"),
        dict(key=b"a/", range_end=b"a0", fragment=True), dict(key=b"a/", range_end=b"a0", start_revision=1),
    ]
    watches = []
    for number in range(24):
        identity = (A, B)[number % 2]
        hub.create(identity, number + 1, WatchCreateRequest(**kinds[number % len(kinds)], grouped=grouped), history.revision, 0.0)
        watches.append((identity, number + 1))
    clients.pump(history.read)
    ids = {watch: created(clients, *watch).watch_id for watch in watches}
    for step in range(60):
        key = b"a/%d" % (step % 3)
        events = history.delete(key) if step % 7 == 3 else history.put(key, b"x" * (step % 5) * 40)
        if step % 11 != 5:  # now and then a batch is lost on the way: the store fills the gap
            live(hub, history, events)
        if step % 9 == 0:
            hub.request_progress(A, history.revision, 0.0)
        clients.pump(history.read)
        for index, watch in enumerate(watches):
            if (step + index) % (1 + index % 4) == 0:  # each watch acknowledges at its own pace
                clients.ack(*watch, ids[watch])
    hub.note_store_revision(history.revision)
    for _ in range(40):
        for watch in watches:
            clients.ack(*watch, ids[watch])
        clients.pump(history.read)
    return {watch: [dataclasses.replace(r, fragment=False) for r in clients.of(*watch)] for watch in watches}


def test_grouped_and_single_responses_are_the_same_responses():
    grouped, single = run_scenario(True), run_scenario(False)
    assert grouped == single
    assert all(len(responses) > 5 for responses in single.values())


# --------------------------------------------------------------------------- batches of one turn, shared units


def test_continuous_joins_only_batches_that_continue_each_other(history):
    first, second, third = history.put(b"k"), history.put(b"k"), history.put(b"k")
    r1, r2, r3 = (events[0].kv.mod_revision for events in (first, second, third))
    joined = continuous([(r1, tuple(first), False), (r2, tuple(second), False), (r2, (), False), (r3, tuple(third), False)])
    assert joined == [(r3, first + second + third, False)]
    # a hole, a duplicate and an elided batch each stay a batch of their own
    assert [len(events) for _, events, _ in continuous([(r1, tuple(first), False), (r3, tuple(third), False)])] == [1, 1]
    assert len(continuous([(r2, tuple(second), False), (r2, tuple(second), False)])) == 2
    assert len(continuous([(r1, tuple(first), False), (r2, (), True), (r3, tuple(third), False)])) == 3


def run_batches(joined: bool) -> dict:
    """Watches of several kinds fed the same live batches (with a lost one and
    a duplicate) one at a time, or as the shell's turns hand them in."""
    history = History()
    hub = make_hub(history, max_response_bytes=300)
    clients = Clients(hub)
    kinds = [dict(key=b"a/", range_end=b"a0"), dict(key=b"a/1"), dict(key=b"a/", range_end=b"\0", prev_kv=True),
             dict(key=b"a/", range_end=b"a0", filters=(WATCH_FILTER_NOPUT,)), dict(key=b"a/", range_end=b"a0", fragment=True)]
    for number, kind in enumerate(kinds, start=1):
        hub.create(A, number, WatchCreateRequest(**kind), history.revision, 0.0)
    clients.pump(history.read)
    ids = {number: created(clients, A, number).watch_id for number in range(1, len(kinds) + 1)}

    def pump_and_ack():
        clients.pump(history.read)
        for number, watch_id in ids.items():
            clients.ack(A, number, watch_id)

    turn = []
    for step in range(40):
        key = b"a/%d" % (step % 3)
        events = history.delete(key) if step % 5 == 2 else history.put(key, b"y" * (step % 4) * 60)
        if step % 13 != 6:  # a lost batch: a hole the store fills
            turn.append((history.revision, tuple(events), False))
        if step % 17 == 3:
            turn.append(turn[-1])  # a duplicate
        if step % 4 == 3:
            if joined:
                hub.on_event_batches(turn)
            else:
                for revision, batch, elided in turn:
                    hub.on_events(revision, batch, elided)
            turn = []
            pump_and_ack()
    hub.on_event_batches(turn)
    hub.note_store_revision(history.revision)
    for _ in range(3):
        pump_and_ack()
    watches = {number: (clients.events(A, number), clients.of(A, number)[-1].header.revision) for number in ids}
    return watches, clients.wire_frames


def test_batches_joined_in_one_turn_give_every_watch_the_same_events_in_fewer_frames():
    (joined, joined_frames), (one_by_one, frames) = run_batches(True), run_batches(False)
    assert joined == one_by_one
    assert all(events for events, _ in joined.values())
    assert joined_frames < frames


def test_a_merge_in_one_buffer_never_changes_another_watchers_units(history):
    """Both watchers of one selector hold the same unit of the first batch;
    the second batch merges into each buffer's tail: each must get each event
    once (a merge into the shared unit itself would give the second twice)."""
    hub = make_hub(history)
    clients = Clients(hub)
    for request_id in (1, 2):
        hub.create(A, request_id, WatchCreateRequest(b"p/", b"p0"), history.revision, 0.0)
    clients.pump()
    live(hub, history, history.put(b"p/1"))
    live(hub, history, history.put(b"p/2"))
    clients.pump()
    for request_id in (1, 2):
        assert clients.revisions(A, request_id) == [history.revision - 1, history.revision]
        assert len(clients.of(A, request_id)) == 2  # created, then one merged response


def test_watches_behind_at_the_same_revision_share_each_store_read(history):
    for number in range(30):
        history.put(b"s/%d" % (number % 4))
    reads = []

    def read(*args):
        reads.append(args[0])
        return history.read(*args)

    hub = make_hub(history, catch_up_events=10)
    hub.revision = history.revision
    clients = Clients(hub)
    for request_id in range(1, 41):
        hub.create(A, request_id, WatchCreateRequest(b"s/", b"s0", start_revision=2), history.revision, 0.0)
    hub.create(A, 99, WatchCreateRequest(b"s/", b"s0", start_revision=20), history.revision, 0.0)
    clients.pump(read)
    assert len(reads) == 3 + 2  # 30 revisions in reads of 10 for the forty, 12 for the other
    expected = list(range(2, history.revision + 1))
    for request_id in range(1, 41):
        assert clients.revisions(A, request_id) == expected
    assert clients.revisions(A, 99) == list(range(20, history.revision + 1))
