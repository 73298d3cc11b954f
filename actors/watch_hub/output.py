"""Output: the frames that leave the hub, in order, and the grouping of them.

Control responses (created, canceled, errors, keep-alive replies) wait in one
ordered queue and go first, so a watch's created response always precedes its
events. Then each ready watcher gives one unit in turn (credit.py), so no
watcher starves the others, until a message to the frontend is about full.
A message that could not be queued is given back whole (requeue) and goes out
again in the same order.

Grouping. When the shell takes output, watchers of one connection and
selector that are due the same unit (same header, the very same events) share
one WatchResponses frame, built once, relayed once by the frontend and decoded
once by the client library, which hands each watch the response as if it had
come alone (cairn/transport_thread.py). Only watches whose create said
grouped=True get them; fragments always go alone. Each watcher still takes its
own unit off its own buffer and spends its own credit, so ordering, credit and
the resume point are per watch as before; and a watcher's second unit in one
output never joins a group opened before its first (that group's frame would
overtake it).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from actors.watch_hub.credit import Credit
from actors.watch_hub.units import Unit
from actors.watch_hub.watchers import Watcher
from transport import codec
from transport.messages import ResponseHeader
from transport.watch_wire import events_body, grouped_frame, header_bytes, response_frame

Header = Callable[[int], ResponseHeader]


class Outgoing:
    """Frames taken from the hub for one message to the frontend; given back
    with Hub.requeue if the message could not be queued."""

    __slots__ = ("identities", "frames", "bytes", "control", "units")

    def __init__(self):
        self.identities: list[bytes] = []
        self.frames: list[bytes] = []
        self.bytes = 0
        self.control: list[tuple[bytes, bytes]] = []
        self.units: list[tuple[Watcher, Unit]] = []

    def add(self, identity: bytes, frame: bytes) -> None:
        self.identities.append(identity)
        self.frames.append(frame)
        self.bytes += len(frame)


class Output:
    """The control queue, and the taking of frames for the frontend."""

    def __init__(self, credit: Credit, header: Header):
        self.credit = credit
        self.header = header  # revision -> the ResponseHeader to send it in
        self.control: deque[tuple[bytes, bytes]] = deque()

    def send_control(self, identity: bytes, request_id: int, message) -> None:
        self.control.append((identity, codec.encode(message, request_id)))

    def has_output(self) -> bool:
        return bool(self.control or self.credit.ready)

    def take(self, max_bytes: int) -> Outgoing | None:
        """Frames for one message to the frontend (about max_bytes): control
        first, then one unit per ready watcher in turn, so no watcher starves
        the others."""
        out = Outgoing()
        while self.control and out.bytes < max_bytes:
            identity, frame = self.control.popleft()
            out.add(identity, frame)
            out.control.append((identity, frame))
        groups = _Groups(self.header)
        while out.bytes + groups.bytes < max_bytes:
            watcher = self.credit.next_ready()
            if watcher is None:
                break
            unit = self.credit.take(watcher)
            if watcher.grouped and not unit.fragmented:
                groups.add(watcher, unit)
            else:
                groups.flush(out)  # this watcher's earlier unit may be in a group: keep its order
                for frame in frames(watcher, unit, self.header):
                    out.add(watcher.connection.identity, frame)
            out.units.append((watcher, unit))
        groups.flush(out)
        return out if out.frames else None

    def requeue(self, out: Outgoing) -> None:
        """The message could not be queued: put everything back in order."""
        for item in reversed(out.control):
            self.control.appendleft(item)
        for watcher, unit in reversed(out.units):
            if not watcher.removed:
                self.credit.give_back(watcher, unit)


def frames(watcher: Watcher, unit: Unit, header: Header) -> list[bytes]:
    """The unit as the watcher's response (or fragments)."""
    head = header_bytes(header(unit.header_revision))
    last = len(unit.frames) - 1
    with_prev = watcher.prev_kv
    return [
        response_frame(watcher.request_id, head, watcher.watch_id, [event.encoded(with_prev) for event in events],
                       fragment=unit.fragmented and index < last)
        for index, events in enumerate(unit.frames)
    ]


class _Groups:
    """The units of one take_output that can share a frame: same connection,
    same selector (so the same encoding), same header and the very same
    events. A watcher joins a group only if it has no unit in the output yet
    (else a group opened earlier could overtake its earlier unit); a later
    unit of a watcher opens a group of its own, which comes after."""

    __slots__ = ("header", "groups", "by_unit", "watchers", "bytes")

    def __init__(self, header: Header):
        self.header = header
        self.groups: dict[tuple, list[tuple[Watcher, Unit]]] = {}
        # (connection, shared unit) -> its group: the same Unit object is the
        # same events from the same selector, found without building a key
        self.by_unit: dict[tuple[bytes, Unit], list[tuple[Watcher, Unit]]] = {}
        self.watchers: set[Watcher] = set()
        self.bytes = 0

    def add(self, watcher: Watcher, unit: Unit) -> None:
        watchers = self.watchers
        if unit.shared and watcher not in watchers:
            # the very unit another watcher of the connection took: the same
            # selector built it, so the same events in the same form
            members = self.by_unit.get((watcher.connection.identity, unit))
            if members is not None:
                members.append((watcher, unit))
                self.bytes += 24
                watchers.add(watcher)
                return
        events = unit.frames[0]
        key = (watcher.connection.identity, watcher.selector, unit.header_revision, len(events),
               id(events[0]) if events else 0, id(events[-1]) if events else 0)
        members = self.groups.get(key) if watcher not in watchers else None
        if members is not None and (members[0][1] is unit or members[0][1].frames[0] == events):  # identity: exact
            members.append((watcher, unit))
            self.bytes += 24
        else:
            if members is not None or key in self.groups:
                key = (key, len(self.groups))  # a group of its own, ordered after the rest
            self.groups[key] = members = [(watcher, unit)]
            self.bytes += unit.bytes
            if unit.shared and watcher not in watchers:
                self.by_unit.setdefault((watcher.connection.identity, unit), members)
        watchers.add(watcher)

    def flush(self, out: Outgoing) -> None:
        for members in self.groups.values():
            out.add(members[0][0].connection.identity, self._frame(members))
        self.groups.clear()
        self.by_unit.clear()
        self.watchers.clear()
        self.bytes = 0

    def _frame(self, members: list[tuple[Watcher, Unit]]) -> bytes:
        """One frame for watchers due the same unit: a plain response if alone."""
        watcher, unit = members[0]
        if len(members) == 1:
            return frames(watcher, unit, self.header)[0]
        events = [event.encoded(watcher.prev_kv) for event in unit.frames[0]]
        body = events_body(header_bytes(self.header(unit.header_revision)), events)
        return grouped_frame([w.request_id for w, _ in members], [w.watch_id for w, _ in members], body)
