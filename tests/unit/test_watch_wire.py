"""Spliced watch frames are byte-for-byte what the codec would encode."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.watch_wire import (
    GROUPED_WATCH_ID,
    EncodedEvent,
    _Body,
    array_header,
    events_body,
    grouped_frame,
    header_bytes,
    response_frame,
)
from transport import codec
from transport.messages import EVENT_DELETE, EVENT_PUT, Event, KeyValue, ResponseHeader, WatchResponse, WatchResponses

HEADER = ResponseHeader(12345678901234, 42, 7, 3)


@pytest.mark.parametrize("length", [0, 1, 23, 24, 255, 256, 65535, 65536, 1 << 20])
def test_array_header_is_cbor2s(length):
    assert array_header(length) == cbor2.dumps([None] * length)[: len(array_header(length))]
    assert cbor2.loads(array_header(length) + b"\xf6" * length) == [None] * length


def event(key=b"k", revision=5, value=b"v", prev=True, kind=EVENT_PUT):
    kv = KeyValue(key, 2, revision, 3 if kind == EVENT_PUT else 0, value if kind == EVENT_PUT else b"")
    previous = KeyValue(key, 2, revision - 1, 2, b"old") if prev else None
    return Event(kind, kv, previous)


@pytest.mark.parametrize("with_prev", [False, True])
@pytest.mark.parametrize("fragment", [False, True])
def test_event_frame_equals_codec_encode(with_prev, fragment):
    events = [event(), event(b"gone", 5, kind=EVENT_DELETE), event(b"new", 5, prev=False)]
    encoded = [EncodedEvent(e) for e in events]
    frame = response_frame(2**63 + 5, header_bytes(HEADER), 17, [e.encoded(with_prev) for e in encoded], fragment=fragment)
    expected_events = tuple(e if with_prev else Event(e.type, e.kv) for e in events)
    assert frame == codec.encode(WatchResponse(HEADER, 17, fragment=fragment, events=expected_events), 2**63 + 5)


def test_control_frames_equal_codec_encode():
    frame = response_frame(9, header_bytes(HEADER), -1, [], created=True, canceled=True, compact_revision=4,
                           cancel_reason="mvcc: duplicate watch ID provided on the WatchStream")
    assert frame == codec.encode(WatchResponse(HEADER, -1, created=True, canceled=True, compact_revision=4,
                                               cancel_reason="mvcc: duplicate watch ID provided on the WatchStream"), 9)


def test_each_encoding_is_made_once_and_shared():
    shared = EncodedEvent(event())
    assert shared.encoded(False) is shared.encoded(False)
    assert shared.encoded(True) is shared.encoded(True)
    assert shared.encoded(True) != shared.encoded(False)


@settings(max_examples=100, deadline=None)
@given(
    keys=st.lists(st.binary(max_size=40), min_size=0, max_size=30),
    value=st.binary(max_size=300),
    watch_id=st.integers(-1, 2**62),
    request_id=st.integers(0, 2**64 - 1),
    revision=st.integers(1, 2**62),
)
def test_any_frame_decodes_to_the_response(keys, value, watch_id, request_id, revision):
    events = [Event(EVENT_PUT, KeyValue(key, 1, revision, 1, value)) for key in keys]
    header = ResponseHeader(1, 2, revision, 9)
    frame = response_frame(request_id, header_bytes(header), watch_id, [EncodedEvent(e).encoded(False) for e in events])
    assert codec.decode(frame) == (request_id, WatchResponse(header, watch_id, events=tuple(events)))


@pytest.mark.parametrize("with_prev", [False, True])
@pytest.mark.parametrize("watches", [1, 2, 30])
def test_grouped_frame_equals_codec_encode(with_prev, watches):
    events = [event(), event(b"gone", 5, kind=EVENT_DELETE)]
    body = events_body(header_bytes(HEADER), [EncodedEvent(e).encoded(with_prev) for e in events])
    request_ids, watch_ids = [2**63 + n for n in range(watches)], [n * 1000 for n in range(watches)]
    expected_events = tuple(e if with_prev else Event(e.type, e.kv) for e in events)
    response = WatchResponse(HEADER, -1, events=expected_events)
    assert grouped_frame(request_ids, watch_ids, body) == codec.encode(
        WatchResponses(tuple(request_ids), tuple(watch_ids), response), request_ids[0])


@pytest.mark.parametrize("with_prev", [False, True])
@pytest.mark.parametrize("fragment", [False, True])
def test_frames_decode_to_what_codec_encode_gives(with_prev, fragment):
    """The client decodes a spliced frame with the ordinary codec into the very
    message codec.encode would have carried: events, prev_kv, fragment flag,
    and a WatchResponses group around the shared body."""
    events = [event(), event(b"gone", 5, kind=EVENT_DELETE), event(b"new", 5, prev=False)]
    encoded = [EncodedEvent(e).encoded(with_prev) for e in events]
    response = WatchResponse(HEADER, 17, fragment=fragment, events=tuple(e if with_prev else Event(e.type, e.kv) for e in events))
    frame = response_frame(3, header_bytes(HEADER), 17, encoded, fragment=fragment)
    assert codec.decode(frame) == codec.decode(codec.encode(response, 3)) == (3, response)
    assert any(e.prev_kv is not None for e in codec.decode(frame)[1].events) == with_prev

    group = WatchResponses((3, 4, 5), (17, 18, 0), dataclasses.replace(response, watch_id=GROUPED_WATCH_ID, fragment=False))
    frame = grouped_frame([3, 4, 5], [17, 18, 0], events_body(header_bytes(HEADER), encoded))
    assert codec.decode(frame) == codec.decode(codec.encode(group, 3)) == (3, group)


def test_a_body_is_laid_out_from_its_dataclass():
    """Field count, order and defaults come from dataclasses.fields: a class the
    encoder was never written for is laid out as codec.to_wire would."""

    @dataclasses.dataclass(frozen=True)
    class Probe:
        given: int
        text: str = "x"
        flag: bool = True
        last: tuple[int, ...] = ()

    body = _Body(Probe, "last")
    parts = list(body.parts)
    parts[body.index["given"]] = cbor2.dumps(5)
    assert b"".join(parts) + cbor2.dumps([1, 2]) == cbor2.dumps(["Probe", 5, "x", True, [1, 2]])
