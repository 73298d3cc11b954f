"""Watch response frames built from events encoded once.

Theory of operation
-------------------
One applied event usually matches many watchers. Encoding the event for each
of them would cost the hub CPU in proportion to watchers x events, so each
event is turned into CBOR once (twice at most: with and without prev_kv, each
on first use) and a response frame is *spliced* from those bytes: a CBOR array
is a header byte giving its length followed by its items' encodings, so the
frame of codec.encode(WatchResponse(...), request_id) can be written as the
envelope's and the body's headers and scalars, then the events' bytes as they
are. The result is byte-for-byte what codec.encode would produce (a unit test
holds us to it), so the client decodes it with the ordinary codec.

Many watchers of one connection are usually due the same response (same
events, same header): a WatchResponses frame carries it once with their
request and watch ids, so it is built, relayed and decoded once
(grouped_frame over events_body).

Pure: no sockets, no clock.
"""

from __future__ import annotations

import cbor2

from transport import codec
from transport.messages import EVENT_DELETE, PROTOCOL_VERSION, Event, ResponseHeader, WatchResponse, WatchResponses

# Envelope [version, request_id, body] and body [tag, 8 fields] are fixed-length arrays.
_ENVELOPE_START = b"\x83" + cbor2.dumps(PROTOCOL_VERSION)
_BODY_START = bytes([0x80 | 9]) + cbor2.dumps(WatchResponse.__name__)
# WatchResponses' body: [tag, request_ids, watch_ids, response body].
_GROUP_START = bytes([0x80 | 4]) + cbor2.dumps(WatchResponses.__name__)
# The id a grouped response's body carries (the client puts each watch's own).
GROUPED_WATCH_ID = -1
_FALSE, _TRUE = cbor2.dumps(False), cbor2.dumps(True)
_EMPTY_STRING = cbor2.dumps("")
_ZERO = cbor2.dumps(0)
# A frame's bytes besides its events (header, ids, flags): generous, for sizing only.
FRAME_OVERHEAD_BYTES = 96


def array_header(length: int) -> bytes:
    """The CBOR head of an array of `length` items (major type 4, shortest form,
    as cbor2 writes it)."""
    assert length >= 0
    if length < 24:
        return bytes([0x80 | length])
    if length < 1 << 8:
        return b"\x98" + length.to_bytes(1, "big")
    if length < 1 << 16:
        return b"\x99" + length.to_bytes(2, "big")
    if length < 1 << 32:
        return b"\x9a" + length.to_bytes(4, "big")
    return b"\x9b" + length.to_bytes(8, "big")


def header_bytes(header: ResponseHeader) -> bytes:
    return cbor2.dumps(codec.to_wire(header))


def response_frame(
    request_id: int,
    header: bytes,
    watch_id: int,
    events: list[bytes],
    fragment: bool = False,
    created: bool = False,
    canceled: bool = False,
    compact_revision: int = 0,
    cancel_reason: str = "",
) -> bytes:
    """codec.encode(WatchResponse(...), request_id), with `header` from
    header_bytes and each event already encoded (EncodedEvent.encoded)."""
    return b"".join((
        _ENVELOPE_START,
        cbor2.dumps(request_id),
        _BODY_START,
        header,
        cbor2.dumps(watch_id),
        _TRUE if created else _FALSE,
        _TRUE if canceled else _FALSE,
        cbor2.dumps(compact_revision),
        cbor2.dumps(cancel_reason) if cancel_reason else _EMPTY_STRING,
        _TRUE if fragment else _FALSE,
        array_header(len(events)),
        *events,
    ))


def events_body(header: bytes, events: list[bytes]) -> bytes:
    """The body of a WatchResponses' response (watch id -1, no flags): built
    once, then sent to every watch of the group."""
    return b"".join((
        _BODY_START, header, cbor2.dumps(GROUPED_WATCH_ID), _FALSE, _FALSE, _ZERO, _EMPTY_STRING, _FALSE,
        array_header(len(events)), *events,
    ))


def grouped_frame(request_ids: list[int], watch_ids: list[int], body: bytes) -> bytes:
    """codec.encode(WatchResponses(request_ids, watch_ids, response),
    request_ids[0]), with `body` from events_body."""
    return b"".join((
        _ENVELOPE_START,
        cbor2.dumps(request_ids[0]),
        _GROUP_START,
        cbor2.dumps(request_ids),
        cbor2.dumps(watch_ids),
        body,
    ))


class EncodedEvent:
    """One event and its CBOR encodings, made on first use and then shared by
    every watcher the event matches."""

    __slots__ = ("event", "revision", "key", "is_delete", "_plain", "_with_prev")

    def __init__(self, event: Event):
        self.event = event
        self.revision = event.kv.mod_revision
        self.key = event.kv.key
        self.is_delete = event.type == EVENT_DELETE
        self._plain: bytes | None = None
        self._with_prev: bytes | None = None

    def encoded(self, with_prev: bool) -> bytes:
        """The event's body; prev_kv is kept only when the watch asked for it."""
        event = self.event
        if with_prev and event.prev_kv is not None:
            if self._with_prev is None:
                self._with_prev = cbor2.dumps(codec.to_wire(event))
            return self._with_prev
        if self._plain is None:
            plain = event if event.prev_kv is None else Event(event.type, event.kv)
            self._plain = cbor2.dumps(codec.to_wire(plain))
        return self._plain
