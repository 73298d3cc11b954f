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

The layout is the codec's, read from the message dataclasses: a body is
[tag, field, ...] in dataclasses.fields order (codec.to_wire), so each body's
array length, field order and defaulted fields' encodings are derived once
from WatchResponse and WatchResponses, not written down here. The field a
splice exists for (a response's events, a group's response) must be the
class's last, which is checked when this module loads.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import dataclasses

import cbor2

from transport import codec
from transport.messages import EVENT_DELETE, PROTOCOL_VERSION, Event, ResponseHeader, WatchResponse, WatchResponses

# The id a grouped response's body carries (the client puts each watch's own).
GROUPED_WATCH_ID = -1
_TRUE = cbor2.dumps(True)
_GROUPED_WATCH_ID = cbor2.dumps(GROUPED_WATCH_ID)
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


# codec.encode's envelope: [version, request_id, body].
_ENVELOPE_START = array_header(3) + cbor2.dumps(PROTOCOL_VERSION)


class _Body:
    """A message body as codec.to_wire lays it out, [tag, field, ...] in
    dataclasses.fields order, up to its last field. `parts` is the head (the
    array's length and the tag), then each field's encoding: a defaulted
    field's default, None for a required one. A frame copies it, sets the
    fields it gives at their `index`, and writes the last field's bytes after
    it: the one the splice is for (a response's events, a group's response)."""

    __slots__ = ("parts", "index")

    def __init__(self, cls: type, last: str):
        fields = dataclasses.fields(cls)
        assert fields[-1].name == last, f"{cls.__name__}.{last} must be the last field to be spliced after the others"
        head = array_header(1 + len(fields)) + cbor2.dumps(cls.__name__)
        self.parts = (head, *(None if f.default is dataclasses.MISSING else cbor2.dumps(codec.to_wire(f.default))
                              for f in fields[:-1]))
        self.index = {f.name: position for position, f in enumerate(fields[:-1], start=1)}


_RESPONSE = _Body(WatchResponse, "events")
_HEADER, _WATCH_ID, _FRAGMENT = (_RESPONSE.index[name] for name in ("header", "watch_id", "fragment"))
_GROUP = _Body(WatchResponses, "response")
_REQUEST_IDS, _WATCH_IDS = (_GROUP.index[name] for name in ("request_ids", "watch_ids"))


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
    body = _response_start(header, cbor2.dumps(watch_id))
    if fragment:
        body[_FRAGMENT] = _TRUE
    if created or canceled or compact_revision or cancel_reason:  # a control response: rare here
        control = {"created": created, "canceled": canceled, "compact_revision": compact_revision, "cancel_reason": cancel_reason}
        for name, value in control.items():
            body[_RESPONSE.index[name]] = cbor2.dumps(value)
    return b"".join((_ENVELOPE_START, cbor2.dumps(request_id), *body, array_header(len(events)), *events))


def events_body(header: bytes, events: list[bytes]) -> bytes:
    """The body of a WatchResponses' response (watch id -1, no flags): built
    once, then sent to every watch of the group."""
    return b"".join((*_response_start(header, _GROUPED_WATCH_ID), array_header(len(events)), *events))


def _response_start(header: bytes, watch_id: bytes) -> list[bytes]:
    """A WatchResponse body up to its events, every flag at its default."""
    body = list(_RESPONSE.parts)
    body[_HEADER] = header
    body[_WATCH_ID] = watch_id
    return body


def grouped_frame(request_ids: list[int], watch_ids: list[int], body: bytes) -> bytes:
    """codec.encode(WatchResponses(request_ids, watch_ids, response),
    request_ids[0]), with `body` from events_body."""
    group = list(_GROUP.parts)
    group[_REQUEST_IDS] = cbor2.dumps(request_ids)
    group[_WATCH_IDS] = cbor2.dumps(watch_ids)
    return b"".join((_ENVELOPE_START, cbor2.dumps(request_ids[0]), *group, body))


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
