"""The Raft log and hard state as an append-only write-ahead log, written by the
raft actor only (as etcd's WAL: the durability of a member's promises).

Layout: <data_dir>/wal/<segment seq, 16 hex digits>.wal, segments of checksummed
frames holding HEADER, READY and COMPACT records (store/wal_format.py: the
format and the replay rules, with no I/O).

Write path: `save` (one Raft Ready: hard state, entries, an installed snapshot)
appends one READY frame with one os.pwrite and makes it durable with ONE
os.fdatasync, and no directory sync. Conflicting entries (§5.3) are not
overwritten in place: the record is appended, and the latest record for an
index wins on replay. Starting a segment (rollover at SEGMENT_BYTES_MAX, or the
first write) preallocates it (posix_fallocate to SEGMENT_BYTES_MAX, as etcd's
WAL does), writes its HEADER and the READY in the same write, then also syncs
the directory once so the new file's name survives a crash. Preallocated, the
file does not grow with each write, so fdatasync need not commit a new file
size to the filesystem's journal (0.1-0.3 ms of each sync on the project's
disk, docs/PERFORMANCE.md); the zeros after the last frame of the last segment
are its clean end.

Compaction (`save_compaction`, or a Ready's installed snapshot) appends a
record of the new start, syncs it, then deletes the whole segments it made
dead from the front (LogState.obsolete_segments). Deletion needs no directory
sync: a deleted segment that comes back after a crash replays to the same log.

Open: read the segments in order, verify every frame and replay the records.
A torn tail of the last segment (a crash in the middle of its last write, which
was never acknowledged) is cut off and described in `repairs` for the caller
to log; any other damage raises CorruptLog and the member does not start.

Memory: the store keeps the live entries in a list (for `entries`, a follower
catching up or apply re-reading) -- the very Entry objects the raft core
holds in its own in-memory log, so the cost of the store's copy is one pointer
(8 bytes) per entry.
"""

from __future__ import annotations

import os

from store.wal_format import (
    Compact,
    CorruptLog,
    Header,
    LogState,
    ReadyRecord,
    decode,
    encode,
    frame,
    scan,
)
from transport.raft_messages import Entry, HardState, SnapshotMeta

# A segment is closed once it holds this many bytes (the frame that crosses it
# included). Compaction deletes whole segments, so a restart reads and decodes
# up to one segment of dead entries besides the live log (by default 10,000
# entries, ~3 MiB at a few hundred bytes each): 4 MiB keeps that about equal
# to the live log, while new files -- each costing one directory sync -- stay
# rare (one per 4 MiB written: seconds apart at full write load).
SEGMENT_BYTES_MAX = 4 * 1024 * 1024
SEGMENT_SUFFIX = ".wal"


class RaftLogFailed(Exception):
    """A write or sync of the log failed earlier: what the file holds after that
    point is unknown (a failed fsync may have dropped dirty pages), so the store
    refuses further writes; the actor restarts and reopens it from disk."""


def segment_name(seq: int) -> str:
    return f"{seq:016x}{SEGMENT_SUFFIX}"


def segment_seqs(directory: str) -> list[int]:
    """The segments in a log directory, in order; a gap between them is damage."""
    seqs = []
    for name in os.listdir(directory):
        stem, suffix = name[: -len(SEGMENT_SUFFIX)], name[-len(SEGMENT_SUFFIX):]
        if suffix == SEGMENT_SUFFIX and len(stem) == 16:
            try:
                seqs.append(int(stem, 16))
            except ValueError:
                continue
    seqs.sort()
    for before, after in zip(seqs, seqs[1:]):
        if after != before + 1:
            raise CorruptLog(f"{directory}: segments {before} and {after} are not consecutive (segments are missing)")
    return seqs


def fsync_path(path: str) -> None:
    """fsync a file or directory by name (a directory: so a file created, renamed
    or deleted in it stays so after a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_segments(directory: str, repairs: list[str]):
    """Yield (seq, path, frame payloads, end of the last frame) of each segment in
    order, every frame's checksums verified; a torn tail of the last segment is
    cut off (and a last segment with no whole frame removed), each noted in
    repairs. Raises CorruptLog on any other damage."""
    seqs = segment_seqs(directory)
    for position, seq in enumerate(seqs):
        path = os.path.join(directory, segment_name(seq))
        with open(path, "rb") as handle:
            data = handle.read()
        last = position == len(seqs) - 1
        found = scan(data, last, path)
        if not found.payloads:
            if not last:
                raise CorruptLog(f"{path}: an empty segment that is not the last")
            repairs.append(f"{path}: removed a segment with no whole frame ({len(data)} bytes), "
                           "left by a crash as it was created")
            os.unlink(path)
            return
        if found.torn is not None:
            repairs.append(f"{path}: cut off a torn tail of {len(data) - found.end} bytes at offset {found.end} "
                           f"({found.torn}): the last write, cut short by a crash, never acknowledged")
            os.truncate(path, found.end)
            fsync_path(path)
        yield seq, path, found.payloads, found.end


def check_segments(directory: str) -> list[str]:
    """Verify every frame's checksums and repair a torn tail, without decoding
    the records (a fraction of the cost of opening the log): what was repaired."""
    repairs: list[str] = []
    if os.path.isdir(directory):
        for _ in read_segments(directory, repairs):
            pass
    return repairs


class RaftLogStore:
    def __init__(self, directory: str):
        self.directory = directory
        self.repairs: list[str] = []  # torn tails cut off at open, for the caller to log
        self.state = LogState()
        self.fd = -1
        self.seq = 0  # the segment being written
        self.segment_bytes = 0
        self.failure: BaseException | None = None
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._replay()

    # -- open ---------------------------------------------------------------

    def _replay(self) -> None:
        for seq, path, payloads, end in read_segments(self.directory, self.repairs):
            records = [decode(payload, path) for payload in payloads]
            if type(records[0]) is not Header:
                raise CorruptLog(f"{path}: the segment does not begin with its header")
            for record in records:
                self.state.apply(record, seq, path)
            self.seq, self.segment_bytes = seq, end
        self.state.finish(self.directory)
        if self.seq:
            self.fd = os.open(self._path(self.seq), os.O_WRONLY)

    def load(self) -> tuple[HardState, SnapshotMeta | None, tuple[Entry, ...]]:
        state = self.state
        return state.hard_state, state.snapshot, tuple(state.entries)

    # -- writes -------------------------------------------------------------

    def save(self, hard_state: HardState | None, entries, snapshot: SnapshotMeta | None = None) -> None:
        """Persist one Ready durably (one write, one fdatasync). entries[0].index
        replaces any stored entries from that index on (Raft §5.3 conflict
        truncation); a snapshot (installed from the leader) replaces the whole log."""
        if hard_state is None and not entries and snapshot is None:
            return
        self._append(ReadyRecord(hard_state, snapshot, tuple(entries)))
        if snapshot is not None:
            self._delete_obsolete_segments()

    def save_compaction(self, index: int, term: int, voters: tuple[int, ...], learners: tuple[int, ...] = ()) -> None:
        """Record that the log now begins after (index, term), with the configuration
        there, and delete the segments that hold only entries at or before it."""
        self._append(Compact(SnapshotMeta(index, term, tuple(voters), tuple(learners))))
        self._delete_obsolete_segments()

    def _append(self, record) -> None:
        if self.failure is not None:
            raise RaftLogFailed(f"{self.directory}: an earlier write failed ({self.failure})")
        data = frame(encode(record))
        try:
            if self.fd < 0 or self.segment_bytes >= SEGMENT_BYTES_MAX:
                self._start_segment(data)
            else:
                _write_all(self.fd, data, self.segment_bytes)
                os.fdatasync(self.fd)
                self.segment_bytes += len(data)
        except BaseException as error:
            self.failure = error
            raise
        self.state.apply(record, self.seq, self.directory)

    def _start_segment(self, data: bytes) -> None:
        """A new segment: its HEADER (the state so far) and the first record in
        one write, the file synced, then the directory, so the file survives."""
        header = self.state.header()
        path = self._path(header.seq)
        data = frame(encode(header)) + data
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, max(SEGMENT_BYTES_MAX, len(data)))
            _write_all(fd, data, 0)
            os.fdatasync(fd)
            fsync_path(self.directory)
        except BaseException:
            os.close(fd)
            raise
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.seq, self.segment_bytes = fd, header.seq, len(data)
        self.state.apply(header, header.seq, path)

    def _delete_obsolete_segments(self) -> None:
        obsolete = self.state.obsolete_segments()
        for seq in obsolete:
            os.unlink(self._path(seq))
        self.state.forget_segments(obsolete)

    # -- reads --------------------------------------------------------------

    def entries(self, low: int, high: int) -> tuple[Entry, ...]:
        """Stored entries with low <= index < high (fewer if compacted or missing)."""
        held = self.state.entries
        if not held:
            return ()
        first = held[0].index
        return tuple(held[max(low - first, 0) : max(high - first, 0)])

    def term(self, index: int) -> int:
        """The term of a stored entry, or of the snapshot when index is its index."""
        held = self.state.entries
        if held and held[0].index <= index <= held[-1].index:
            return held[index - held[0].index].term
        snapshot = self.state.snapshot
        if snapshot is not None and snapshot.index == index:
            return snapshot.term
        raise KeyError(f"no entry at index {index}")

    def segments(self) -> list[int]:
        """The segments the log is in now, oldest first."""
        return sorted(self.state.segment_last_index)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, segment_name(seq))


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
