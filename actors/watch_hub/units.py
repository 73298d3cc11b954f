"""Units: what a watcher sends, built from whole revisions (pure data, no hub state).

Responses. Each watcher has a buffer of units waiting to be sent. A unit is
one response, or the fragments of one revision too large for one response
(`fragment` watches only), and always holds whole revisions: all events of a
revision travel in one response (or one fragment series), in revision order. A
unit's header revision is the revision the watch is complete up to once the
unit is delivered, so a client resumes exactly after it. Units are merged up to
MAX_RESPONSE_BYTES while they wait.

Sharing. A live batch's units are built once per selector, and the very same
Unit objects go into the buffer of every watcher that takes the whole batch
(fanout.py): such a unit is `shared` and never changed after. A merge into a
shared tail builds a new unit that one watcher owns (copy on write), so no
watcher's backlog reaches another's buffer, and a watcher that keeps up costs
a reference per batch instead of a copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transport.watch_wire import FRAME_OVERHEAD_BYTES, EncodedEvent

if TYPE_CHECKING:
    from actors.watch_hub.watchers import Selector, Watcher


class Unit:
    """What one watcher sends as one response (or one revision's fragments):
    whole revisions in (first, end]; header_revision goes in the header."""

    __slots__ = ("frames", "first", "end", "header_revision", "fragmented", "events", "bytes", "progress", "shared")

    def __init__(self, frames: list[list[EncodedEvent]], first: int, end: int, size: int,
                 fragmented: bool = False, progress: bool = False, header_revision: int | None = None):
        self.frames = frames
        self.first = first
        self.end = end
        self.header_revision = end if header_revision is None else header_revision
        self.fragmented = fragmented
        self.progress = progress
        self.events = sum(len(frame) for frame in frames)
        self.bytes = size
        self.shared = False  # in several watchers' buffers: never to be changed

    def starting_at(self, first: int) -> "Unit":
        """This unit for a watcher whose coverage starts elsewhere (first is
        what a requeue rewinds to): itself if that is already its first, else
        a copy."""
        if first == self.first:
            return self
        unit = self._copy()
        unit.first = first
        return unit

    def merged(self, unit: Unit, max_bytes: int) -> Unit | None:
        """This unit with the next one taken in, if both are plain responses
        that together fit max_bytes (waiting units are merged so a backlog goes
        out in few frames); None if they cannot be. A shared unit is left as
        it is: the merge is a copy the caller owns."""
        if (self.fragmented or unit.fragmented or self.progress or unit.progress
                or self.bytes + unit.bytes - FRAME_OVERHEAD_BYTES > max_bytes):
            return None
        target = self._copy() if self.shared else self
        target.frames[0].extend(unit.frames[0])
        target.events += unit.events
        target.bytes += unit.bytes - FRAME_OVERHEAD_BYTES
        target.end = target.header_revision = unit.end
        return target

    def _copy(self) -> "Unit":
        """An unshared copy, its frames' lists its own."""
        unit = Unit.__new__(Unit)
        unit.frames = [list(frame) for frame in self.frames]
        unit.first, unit.end, unit.header_revision = self.first, self.end, self.header_revision
        unit.fragmented, unit.progress, unit.events, unit.bytes = self.fragmented, self.progress, self.events, self.bytes
        unit.shared = False
        return unit


def build_units(form: Watcher | Selector, events: list[EncodedEvent], first: int, end: int, limit: int) -> list[Unit]:
    """Whole revisions packed into responses of at most `limit` bytes of events
    (HubLimits.max_response_bytes); a revision larger than that is split into fragments if the watch asked
    for them, else sent alone. The last unit's coverage ends at `end`.
    Only the watch's prev_kv and fragment matter, so a Selector will do."""
    with_prev = form.prev_kv
    units: list[Unit] = []
    frame: list[EncodedEvent] = []
    frame_bytes = 0

    def close_frame():
        nonlocal frame, frame_bytes
        if frame:
            units.append(Unit([frame], 0, frame[-1].revision, frame_bytes + FRAME_OVERHEAD_BYTES))
            frame, frame_bytes = [], 0

    for group in _revision_groups(events):
        sizes = [len(event.encoded(with_prev)) for event in group]
        group_bytes = sum(sizes)
        if frame and frame_bytes + group_bytes > limit:
            close_frame()
        if group_bytes > limit and form.fragment:
            close_frame()
            units.append(_fragmented_unit(group, sizes, limit))
        else:
            frame.extend(group)
            frame_bytes += group_bytes
    close_frame()
    for unit in units:
        unit.first = first
        first = unit.end + 1
    if units:
        units[-1].end = units[-1].header_revision = max(end, units[-1].end)
    return units


def _revision_groups(events: list[EncodedEvent]):
    """Consecutive events of the same revision, as lists."""
    group: list[EncodedEvent] = []
    for event in events:
        if group and event.revision != group[-1].revision:
            yield group
            group = []
        group.append(event)
    if group:
        yield group


def _fragmented_unit(group: list[EncodedEvent], sizes: list[int], limit: int) -> Unit:
    """One revision split into frames of at most `limit` bytes of events (a
    frame holds at least one event, however large)."""
    frames: list[list[EncodedEvent]] = [[]]
    frame_bytes = 0
    for event, size in zip(group, sizes):
        if frames[-1] and frame_bytes + size > limit:
            frames.append([])
            frame_bytes = 0
        frames[-1].append(event)
        frame_bytes += size
    total = sum(sizes) + FRAME_OVERHEAD_BYTES * len(frames)
    return Unit(frames, 0, group[-1].revision, total, fragmented=True)
