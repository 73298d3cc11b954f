"""The Raft log's write-ahead file format: frames, records and replay (pure, no I/O).

Theory of operation
-------------------
The log is a directory of segment files (store/raftlog.py names, writes and
deletes them). A segment is a sequence of frames:

    magic u32 | payload bytes u32 | crc32(payload) u32 | crc32(the 12 bytes before) u32 | payload

all big-endian. The header's own checksum lets a damaged length be told from a
damaged payload, so a flipped bit can never make a frame look like it runs off
the end of the file (which would pass for a torn write). The payload is one
CBOR record:

    [HEADER, version, segment seq, hard state, snapshot|None, last index, last term]
        the first frame of every segment: the state the segments before it left,
        so the segments before it can be deleted without losing it, and so a
        frame lost from the end of the segment before it is noticed
    [READY, hard state|None, snapshot|None, first index, [entry, ...]]
        one `save` (one Raft Ready), written with one write and one fdatasync
    [COMPACT, snapshot]
        the log now begins after snapshot.index (§7 log compaction)

Replaying a directory's records in order rebuilds (hard state, snapshot,
entries) -- the live store applies each record it writes with the same code,
so what it holds is what a restart will read:

* a READY's entries replace every held entry from its first index on (§5.3
  conflict truncation): appending is the only write, and the latest record for
  an index wins;
* a READY's snapshot is one installed from the leader: it replaces the whole log;
* a COMPACT drops the entries at or below its index.

Compaction deletes whole segments from the front: segment k may go when no
entry written in it or in any segment before it is above the compaction point
(`LogState.segment_last_index`, lowered to 0 by an installed snapshot, which
makes everything before it dead). Replaying from segment k+1's HEADER then
gives the same state: the entries the deleted segments held are all at or
below a COMPACT that follows. Until that COMPACT is replayed the held entries
may start above the snapshot's index; `LogState.finish` refuses a log where
that gap remains (a segment lost).

Segments are preallocated: zeros from the end of a segment's last frame to the
end of its file are its clean end. Frames lost from the end of a closed
segment would pass for such zeros, but then the next segment's HEADER (hard
state, snapshot, last index and term) disagrees with the replay: CorruptLog.

A torn write (a crash in the middle of the last write) can only damage the last
frame of the last segment, since every write ends in an fdatasync before the
next begins. `scan` treats a bad frame in the last segment as a torn tail when
nothing valid follows it (`tail_problem`); a bad frame anywhere else, or one
followed by a valid frame, is corruption of acknowledged data: CorruptLog.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import cbor2

from transport.raft_messages import ENTRY_NORMAL, Entry, HardState, SnapshotMeta

FORMAT_VERSION = 1
MAGIC = 0xC41F_A77E
_MAGIC_BYTES = MAGIC.to_bytes(4, "big")
_FRAME_START = struct.Struct(">III")  # magic, payload bytes, payload crc
_CRC = struct.Struct(">I")
FRAME_HEADER_BYTES = _FRAME_START.size + _CRC.size

HEADER, READY, COMPACT = 1, 2, 3


class CorruptLog(Exception):
    """Acknowledged Raft log data is damaged or missing: the member must not start
    on it (it would forget entries it promised a quorum it holds)."""


# -- frames -------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    start = _FRAME_START.pack(MAGIC, len(payload), zlib.crc32(payload))
    return start + _CRC.pack(zlib.crc32(start)) + payload


def _frame_at(data, offset: int) -> tuple[int, str | None]:
    """(payload bytes, problem) of the frame at offset; problem None = valid."""
    if len(data) - offset < FRAME_HEADER_BYTES:
        return 0, "partial frame header"
    magic, length, payload_crc = _FRAME_START.unpack_from(data, offset)
    (header_crc,) = _CRC.unpack_from(data, offset + _FRAME_START.size)
    if magic != MAGIC or zlib.crc32(data[offset : offset + _FRAME_START.size]) != header_crc:
        return 0, "bad frame header"
    start = offset + FRAME_HEADER_BYTES
    if start + length > len(data):
        return length, "frame runs past the end of the file"
    if zlib.crc32(data[start : start + length]) != payload_crc:
        return length, "payload checksum mismatch"
    return length, None


def _valid_frame_after(data, offset: int) -> int:
    """Offset of the first valid frame starting after offset, or -1."""
    position = data.find(_MAGIC_BYTES, offset + 1)
    while position >= 0:
        if _frame_at(data, position)[1] is None:
            return position
        position = data.find(_MAGIC_BYTES, position + 1)
    return -1


def tail_problem(data, offset: int, length: int, problem: str) -> str | None:
    """Whether the bad frame at offset (its header's length if the header was
    valid) can be the torn last write: None if so, else why it is corruption.
    A torn write leaves nothing after it but zeros (space the file grew by);
    where the header itself is damaged its length is unknown, so it is torn
    only if no valid frame starts anywhere after it."""
    if problem == "frame runs past the end of the file":
        return None
    if problem == "payload checksum mismatch":
        end = offset + FRAME_HEADER_BYTES + length
        if data.count(0, end) == len(data) - end:
            return None
        return f"{problem}, and data follows the frame"
    following = _valid_frame_after(data, offset)
    if following < 0:
        return None
    return f"{problem}, and a valid frame follows at offset {following}"


@dataclass(frozen=True, slots=True)
class Scan:
    payloads: list[bytes]
    end: int  # where the valid frames end: the torn tail or the preallocated zeros (if any) start here
    torn: str | None  # what was wrong with the torn tail; None if there is none


def scan(data, last_segment: bool, name: str) -> Scan:
    """The frames of one segment's bytes. Raises CorruptLog on a bad frame that
    cannot be a torn tail (any bad frame outside the last segment)."""
    payloads, offset = [], 0
    while offset < len(data):
        length, problem = _frame_at(data, offset)
        if problem is None:
            start = offset + FRAME_HEADER_BYTES
            payloads.append(bytes(data[start : start + length]))
            offset = start + length
            continue
        if data.count(0, offset) == len(data) - offset:
            return Scan(payloads, offset, None)  # the preallocated space after the last frame
        if not last_segment:
            raise CorruptLog(f"{name}: {problem} at offset {offset}, in a segment that is not the last")
        why_not_torn = tail_problem(data, offset, length, problem)
        if why_not_torn is not None:
            raise CorruptLog(f"{name}: {why_not_torn} at offset {offset}")
        return Scan(payloads, offset, problem)
    return Scan(payloads, offset, None)


# -- records ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    seq: int
    hard_state: HardState
    snapshot: SnapshotMeta | None
    last_index: int
    last_term: int


@dataclass(frozen=True, slots=True)
class ReadyRecord:
    hard_state: HardState | None
    snapshot: SnapshotMeta | None  # installed from the leader: replaces the whole log
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Compact:
    snapshot: SnapshotMeta


def encode(record) -> bytes:
    if type(record) is ReadyRecord:
        entries = record.entries
        return cbor2.dumps([
            READY,
            _hard_state_record(record.hard_state),
            _snapshot_record(record.snapshot),
            entries[0].index if entries else 0,
            [entry_record(e) for e in entries],
        ])
    if type(record) is Compact:
        return cbor2.dumps([COMPACT, _snapshot_record(record.snapshot)])
    assert type(record) is Header, record
    return cbor2.dumps([HEADER, FORMAT_VERSION, record.seq, _hard_state_record(record.hard_state),
                        _snapshot_record(record.snapshot), record.last_index, record.last_term])


def decode(payload: bytes, name: str):
    """A record from a frame's payload (its checksum already held: a payload that
    still does not decode was written by something else, or a newer version)."""
    try:
        fields = cbor2.loads(payload)
        kind = fields[0]
        if kind == READY:
            _, hard_state, snapshot, first, entries = fields
            return ReadyRecord(
                _hard_state_from(hard_state), _snapshot_from(snapshot),
                tuple(entry_from_record(first + i, e) for i, e in enumerate(entries)),
            )
        if kind == COMPACT:
            return Compact(_snapshot_from(fields[1]))
        if kind == HEADER:
            version = fields[1]
            if version != FORMAT_VERSION:
                raise CorruptLog(f"{name}: log format version {version}; this cairn reads version {FORMAT_VERSION}")
            _, _, seq, hard_state, snapshot, last_index, last_term = fields
            return Header(seq, _hard_state_from(hard_state), _snapshot_from(snapshot), last_index, last_term)
    except CorruptLog:
        raise
    except Exception as error:  # a checksummed payload that is no record of ours
        raise CorruptLog(f"{name}: undecodable record ({type(error).__name__}: {error})") from None
    raise CorruptLog(f"{name}: unknown record kind {kind!r}")


def entry_record(e: Entry) -> list:
    return [e.term, e.data] if e.kind == ENTRY_NORMAL else [e.term, e.data, e.kind]


def entry_from_record(index: int, record: list) -> Entry:
    if len(record) == 2:
        return Entry(index, record[0], record[1])
    term, data, kind = record
    return Entry(index, term, data, kind)


def snapshot_record(snapshot: SnapshotMeta) -> list:
    record = [snapshot.index, snapshot.term, list(snapshot.voters)]
    if snapshot.learners:
        record.append(list(snapshot.learners))
    return record


def snapshot_from_record(record: list) -> SnapshotMeta:
    learners = tuple(record[3]) if len(record) > 3 else ()
    return SnapshotMeta(record[0], record[1], tuple(record[2]), learners)


def _snapshot_record(snapshot: SnapshotMeta | None):
    return None if snapshot is None else snapshot_record(snapshot)


def _snapshot_from(record) -> SnapshotMeta | None:
    return None if record is None else snapshot_from_record(record)


def _hard_state_record(hard_state: HardState | None):
    return None if hard_state is None else [hard_state.term, hard_state.vote, hard_state.commit]


def _hard_state_from(record) -> HardState | None:
    return None if record is None else HardState(*record)


# -- replay -------------------------------------------------------------------


@dataclass(slots=True)
class LogState:
    """What the records replayed so far say: the log a restart loads."""

    hard_state: HardState = HardState()
    snapshot: SnapshotMeta | None = None
    entries: list[Entry] = field(default_factory=list)
    # segment seq -> the highest index of an entry written in it that may still be
    # live (0: none); what decides which segments compaction may delete
    segment_last_index: dict[int, int] = field(default_factory=dict)

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot is not None else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    @property
    def last_term(self) -> int:
        if self.entries:
            return self.entries[-1].term
        return self.snapshot.term if self.snapshot is not None else 0

    def header(self) -> Header:
        """The HEADER a new segment starts with."""
        return Header(max(self.segment_last_index, default=0) + 1, self.hard_state, self.snapshot,
                      self.last_index, self.last_term)

    def apply(self, record, seq: int, name: str = "") -> None:
        if type(record) is ReadyRecord:
            self._apply_ready(record, seq, name)
        elif type(record) is Compact:
            self._compact(record.snapshot)
        else:
            self._apply_header(record, seq, name)

    def _apply_header(self, header: Header, seq: int, name: str) -> None:
        if header.seq != seq:
            raise CorruptLog(f"{name}: its header says it is segment {header.seq}")
        first = not self.segment_last_index
        self.segment_last_index[seq] = 0
        if first:
            self.hard_state, self.snapshot = header.hard_state, header.snapshot
        elif (header.hard_state, header.snapshot, header.last_index, header.last_term) != (
                self.hard_state, self.snapshot, self.last_index, self.last_term):
            raise CorruptLog(f"{name}: its header disagrees with the segments before it (frames lost from their end?)")

    def _apply_ready(self, record: ReadyRecord, seq: int, name: str) -> None:
        if record.snapshot is not None:
            self.snapshot = record.snapshot
            self.entries.clear()
            for known in self.segment_last_index:  # everything written before is dead
                self.segment_last_index[known] = 0
        if record.entries:
            first = record.entries[0].index
            entries = self.entries
            if entries and first > entries[-1].index + 1:
                raise CorruptLog(f"{name}: entries from {first} do not follow the log's last index {entries[-1].index}")
            keep = first - entries[0].index if entries else 0
            if keep <= 0:
                entries.clear()
            else:
                del entries[keep:]
            entries.extend(record.entries)
            last = record.entries[-1].index
            if last > self.segment_last_index.get(seq, 0):
                self.segment_last_index[seq] = last
        if record.hard_state is not None:
            self.hard_state = record.hard_state

    def _compact(self, snapshot: SnapshotMeta) -> None:
        self.snapshot = snapshot
        entries = self.entries
        if entries and entries[0].index <= snapshot.index:
            del entries[: snapshot.index - entries[0].index + 1]

    def finish(self, name: str) -> None:
        """After the last record: the entries must follow the snapshot."""
        if self.entries and self.entries[0].index != self.snapshot_index + 1:
            raise CorruptLog(
                f"{name}: the log's entries start at {self.entries[0].index} but its snapshot ends at "
                f"{self.snapshot_index} (a segment is missing)"
            )

    def obsolete_segments(self) -> list[int]:
        """The segments compaction may delete: the longest run from the first,
        never the last (the one being written), of segments whose entries, and
        every earlier segment's, are all at or below the snapshot."""
        seqs = sorted(self.segment_last_index)
        obsolete = []
        for seq in seqs[:-1]:
            if self.segment_last_index[seq] > self.snapshot_index:
                break
            obsolete.append(seq)
        return obsolete

    def forget_segments(self, seqs) -> None:
        for seq in seqs:
            del self.segment_last_index[seq]
