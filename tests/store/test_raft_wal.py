"""The Raft log's write-ahead log (store/raftlog.py, store/wal_format.py) on a
real directory with real fsyncs: what a restart reads back after saves,
conflicts, compaction, rollover, torn writes and damage, and the move from the
LMDB log that came before it."""

from __future__ import annotations

import os
import shutil

import pytest

from store import raftlog
from store.environment import open_raft_log, wal_path
from store.raftlog import RaftLogFailed, RaftLogStore, check_segments, segment_name
from store.raftlog_lmdb import legacy_path
from store.wal_format import FRAME_HEADER_BYTES, CorruptLog, LogState, ReadyRecord, encode, frame, scan
from tests.wal_files import flip_bit, frame_offsets, write_legacy_raft_log
from transport.raft_messages import ENTRY_CONF_CHANGE, Entry, HardState, SnapshotMeta


def entries(first: int, last: int, term: int = 1, size: int = 20) -> tuple[Entry, ...]:
    return tuple(Entry(i, term, b"%d:" % i + b"v" * size) for i in range(first, last + 1))


def reopened(directory) -> RaftLogStore:
    store = RaftLogStore(str(directory))
    store.close()
    return store


def files(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".wal"))


@pytest.fixture
def small_segments(monkeypatch):
    """Segments of 1 KiB, so a few saves roll over."""
    monkeypatch.setattr(raftlog, "SEGMENT_BYTES_MAX", 1024)


def test_a_restart_reads_back_what_was_saved(tmp_path):
    store = RaftLogStore(str(tmp_path))
    conf = Entry(4, 2, b"conf", ENTRY_CONF_CHANGE)
    store.save(HardState(1, 1, 0), entries(1, 3))
    store.save(HardState(2, 2, 3), (conf,) + entries(5, 6, term=2))
    store.save(None, entries(7, 7, term=2))
    store.save(HardState(2, 2, 6), ())
    assert store.entries(2, 5) == entries(2, 3) + (conf,)
    assert store.entries(0, 100) == entries(1, 3) + (conf,) + entries(5, 7, term=2)
    assert store.term(4) == 2 and store.term(1) == 1
    with pytest.raises(KeyError):
        store.term(8)
    expected = store.load()
    store.close()
    assert reopened(tmp_path).load() == expected == (HardState(2, 2, 6), None, entries(1, 3) + (conf,) + entries(5, 7, term=2))
    assert files(tmp_path) == [segment_name(1)]


def test_an_empty_save_writes_nothing(tmp_path):
    store = RaftLogStore(str(tmp_path))
    store.save(None, ())
    store.close()
    assert files(tmp_path) == []
    assert reopened(tmp_path).load() == (HardState(), None, ())


def test_conflicting_entries_replace_the_stored_ones_from_their_index(tmp_path):
    """§5.3: an entry that conflicts with a new one is deleted with all that follow."""
    store = RaftLogStore(str(tmp_path))
    store.save(HardState(1, 1, 0), entries(1, 10))
    store.save(HardState(2, 3, 4), entries(6, 8, term=2))
    want = entries(1, 5) + entries(6, 8, term=2)
    assert store.load()[2] == want and store.entries(8, 11) == want[-1:]
    store.save(None, entries(9, 9, term=2))
    store.save(HardState(3, 2, 4), entries(3, 3, term=3))  # below the first conflict
    store.close()
    assert reopened(tmp_path).load() == (HardState(3, 2, 4), None, entries(1, 2) + entries(3, 3, term=3))


def test_a_snapshot_installed_from_the_leader_replaces_the_whole_log(tmp_path, small_segments):
    store = RaftLogStore(str(tmp_path))
    for first in range(1, 100, 10):
        store.save(HardState(1, 1, first), entries(first, first + 9))
    assert len(files(tmp_path)) > 2
    snapshot = SnapshotMeta(50, 3, (1, 2, 3), (4,))  # below our last index: our tail was stale too
    store.save(HardState(3, 0, 50), (), snapshot)
    assert files(tmp_path) == [segment_name(store.seq)], "every earlier segment is dead"
    store.save(None, entries(51, 52, term=3))
    store.close()
    assert reopened(tmp_path).load() == (HardState(3, 0, 50), snapshot, entries(51, 52, term=3))


def test_compaction_deletes_whole_segments_below_it_and_records_the_new_start(tmp_path, small_segments):
    store = RaftLogStore(str(tmp_path))
    for first in range(1, 200, 10):
        store.save(HardState(1, 1, first + 9), entries(first, first + 9))
    before = store.segments()
    assert len(before) >= 5
    store.save_compaction(99, 1, (1, 2, 3), (7,))
    after = store.segments()
    assert after[-1] >= before[-1] and after[0] > before[0]
    assert files(tmp_path) == [segment_name(seq) for seq in after]
    # the first segment left holds a live entry (it may straddle 99); the one before it did not
    assert store.state.segment_last_index[after[0]] > 99
    assert store.entries(1, 101) == entries(100, 100)
    assert store.term(99) == 1
    expected = (HardState(1, 1, 200), SnapshotMeta(99, 1, (1, 2, 3), (7,)), entries(100, 200))
    assert store.load() == expected
    store.close()
    assert reopened(tmp_path).load() == expected


def test_a_compaction_that_frees_no_segment_still_moves_the_start(tmp_path):
    store = RaftLogStore(str(tmp_path))
    store.save(HardState(1, 1, 10), entries(1, 10))
    store.save_compaction(4, 1, (1,))
    assert files(tmp_path) == [segment_name(1)]
    store.close()
    assert reopened(tmp_path).load() == (HardState(1, 1, 10), SnapshotMeta(4, 1, (1,)), entries(5, 10))


def test_segments_roll_over_at_the_size_limit_and_each_starts_with_the_state_so_far(tmp_path, small_segments):
    store = RaftLogStore(str(tmp_path))
    for first in range(1, 300, 10):
        store.save(HardState(first, 1, first), entries(first, first + 9))
    names = files(tmp_path)
    assert names == [segment_name(seq) for seq in range(1, len(names) + 1)] and len(names) > 5
    for name in names[:-1]:  # a segment closes with the first frame that crosses the limit
        assert 1024 <= os.path.getsize(tmp_path / name) < 1024 + 400
    expected = store.load()
    store.close()
    assert reopened(tmp_path).load() == expected
    assert expected[2] == entries(1, 300)


def _state_before_and_after_last_save(directory, new_segment: bool):
    """Saves, then one last save; returns (path of the file it went to, where
    its frames ended before that save, where they end after, the log before
    it, the log after it)."""
    store = RaftLogStore(str(directory))
    for first in range(1, 30, 3):
        store.save(HardState(1, 1, first), entries(first, first + 2))
    store.save_compaction(5, 1, (1, 2, 3))
    end_before = 0 if new_segment else store.segment_bytes
    if new_segment:
        store.segment_bytes = raftlog.SEGMENT_BYTES_MAX  # the next save starts segment 2
    before = store.load()
    store.save(HardState(2, 2, 30), entries(31, 32, term=2) + (Entry(33, 2, b"conf", ENTRY_CONF_CHANGE),))
    after = store.load()
    path = os.path.join(str(directory), segment_name(store.seq))
    end_after = store.segment_bytes
    store.close()
    return path, end_before, end_after, before, after


@pytest.mark.parametrize("new_segment", [False, True], ids=["in_a_segment", "starting_a_segment"])
@pytest.mark.parametrize("torn", ["truncated", "zeroed"])
def test_a_torn_last_write_is_cut_off_at_every_byte_offset(tmp_path, new_segment, torn):
    """A crash during the last write leaves any prefix of it, and after it
    nothing (the file was cut short) or zeros (the preallocated space, or pages
    that never reached the disk): the log loads without it (it was never
    acknowledged), says so, and takes new writes."""
    path, end_before, end_after, before, after = _state_before_and_after_last_save(tmp_path / "log", new_segment)
    assert os.path.getsize(path) == raftlog.SEGMENT_BYTES_MAX, "preallocated"
    assert reopened(tmp_path / "log").load() == after
    clean_cut = frame_offsets(path)[1] if new_segment else end_before  # after a whole frame: nothing to repair
    for cut in range(end_before, end_after):
        shutil.rmtree(tmp_path / "torn", ignore_errors=True)
        shutil.copytree(tmp_path / "log", tmp_path / "torn")
        torn_path = tmp_path / "torn" / os.path.basename(path)
        with open(torn_path, "r+b") as handle:
            if torn == "truncated":
                handle.truncate(cut)
            else:
                handle.seek(cut)
                handle.write(b"\0" * (end_after - cut))
        # the supervisor's check (frames only) repairs it before the raft actor opens the log
        repairs = check_segments(str(tmp_path / "torn"))
        assert len(repairs) == (0 if cut == clean_cut else 1), (cut, repairs)
        store = RaftLogStore(str(tmp_path / "torn"))
        assert store.load() == before and store.repairs == [], cut
        store.save(HardState(3, 3, 30), entries(31, 31, term=3))
        store.close()
        again = reopened(tmp_path / "torn")
        assert again.repairs == [] and again.load() == (HardState(3, 3, 30), before[1], before[2] + entries(31, 31, term=3))


def _write_log(directory, monkeypatch=None) -> list[str]:
    store = RaftLogStore(str(directory))
    for first in range(1, 150, 3):
        store.save(HardState(1, 1, first), entries(first, first + 2))
    store.close()
    return files(directory)


@pytest.mark.parametrize("where", ["payload", "length", "magic"])
def test_damage_before_the_last_frame_refuses_to_open(tmp_path, where):
    """A damaged frame followed by good ones is not a torn write: acknowledged
    entries would be lost, so the log refuses to open and changes nothing."""
    [name] = _write_log(tmp_path)
    path = tmp_path / name
    middle = frame_offsets(path)[5]
    flip_bit(path, middle + {"payload": FRAME_HEADER_BYTES + 3, "length": 6, "magic": 1}[where])
    damaged = path.read_bytes()
    with pytest.raises(CorruptLog, match=f"{name}.*offset {middle}"):
        RaftLogStore(str(tmp_path))
    with pytest.raises(CorruptLog, match=f"{name}.*offset {middle}"):
        check_segments(str(tmp_path))
    assert path.read_bytes() == damaged


def test_damage_in_a_segment_before_the_last_refuses_to_open(tmp_path, small_segments):
    names = _write_log(tmp_path)
    assert len(names) > 2
    path = tmp_path / names[1]
    last_frame = frame_offsets(path)[-2]
    flip_bit(path, last_frame + FRAME_HEADER_BYTES + 1)  # its last frame: torn-looking, but synced before segment 3 began
    with pytest.raises(CorruptLog, match="not the last"):
        RaftLogStore(str(tmp_path))
    with open(path, "r+b") as handle:  # cut short instead
        handle.truncate(last_frame + 3)
    with pytest.raises(CorruptLog, match="not the last"):
        RaftLogStore(str(tmp_path))
    with open(path, "r+b") as handle:  # zeros instead, as preallocated space looks
        handle.truncate(last_frame)
        handle.truncate(last_frame + 4096)
    with pytest.raises(CorruptLog, match="header disagrees with the segments before it"):
        RaftLogStore(str(tmp_path))


def test_a_missing_segment_refuses_to_open(tmp_path, small_segments):
    names = _write_log(tmp_path)
    os.unlink(tmp_path / names[2])
    with pytest.raises(CorruptLog, match="not consecutive"):
        RaftLogStore(str(tmp_path))


def test_a_lost_segment_before_a_compaction_point_is_noticed(tmp_path, small_segments):
    """If the first segments vanish without the COMPACT that made them dead,
    the entries would start after a gap: refused."""
    names = _write_log(tmp_path)
    for name in names[:2]:
        os.unlink(tmp_path / name)
    with pytest.raises(CorruptLog, match="a segment is missing"):
        RaftLogStore(str(tmp_path))


def test_a_write_that_failed_stops_further_writes(tmp_path):
    store = RaftLogStore(str(tmp_path))
    store.save(HardState(1, 1, 0), entries(1, 2))
    os.close(store.fd)  # the next write fails with EBADF, a real OS error
    with pytest.raises(OSError):
        store.save(None, entries(3, 3))
    with pytest.raises(RaftLogFailed):
        store.save(None, entries(3, 3))
    assert store.load()[2] == entries(1, 2)
    store.fd = -1
    assert reopened(tmp_path).load()[2] == entries(1, 2)


# -- migration from the LMDB log ----------------------------------------------


LEGACY = (
    HardState(4, 2, 12),
    SnapshotMeta(9, 3, (1, 2, 3), (5,)),
    (Entry(9, 3, b"compacted, left over"),) + entries(10, 11, term=3) + (Entry(12, 4, b"c", ENTRY_CONF_CHANGE),) + entries(13, 14, term=4),
)


def test_an_lmdb_raft_log_is_migrated_on_first_open(tmp_path):
    write_legacy_raft_log(tmp_path, *LEGACY)
    store = open_raft_log(str(tmp_path))
    hard_state, snapshot, loaded = LEGACY
    assert store.load() == (hard_state, snapshot, loaded[1:])
    assert "migrated" in store.repairs[0]
    assert not os.path.exists(legacy_path(str(tmp_path)))
    store.save(HardState(5, 2, 14), entries(15, 15, term=5))
    store.close()
    again = open_raft_log(str(tmp_path))
    assert again.repairs == [] and again.load() == (HardState(5, 2, 14), snapshot, loaded[1:] + entries(15, 15, term=5))
    again.close()


def test_a_migration_cut_short_by_a_crash_is_done_again(tmp_path):
    write_legacy_raft_log(tmp_path, *LEGACY)
    staging = wal_path(str(tmp_path)) + ".migrating"
    os.makedirs(staging)
    with open(os.path.join(staging, segment_name(1)), "wb") as handle:
        handle.write(b"half a segment")
    os.makedirs(wal_path(str(tmp_path)))  # an empty WAL dir
    store = open_raft_log(str(tmp_path))
    assert store.load() == (LEGACY[0], LEGACY[1], LEGACY[2][1:])
    store.close()
    assert not os.path.exists(staging) and not os.path.exists(legacy_path(str(tmp_path)))


def test_a_crash_after_the_migration_only_removes_the_lmdb_log(tmp_path):
    write_legacy_raft_log(tmp_path, *LEGACY)
    open_raft_log(str(tmp_path)).close()
    write_legacy_raft_log(tmp_path, HardState(1, 1, 1), None, entries(1, 1))  # as if the old log were still there
    store = open_raft_log(str(tmp_path))
    assert store.load() == (LEGACY[0], LEGACY[1], LEGACY[2][1:]) and "already migrated" in store.repairs[0]
    store.close()
    assert not os.path.exists(legacy_path(str(tmp_path)))


# -- the pure format ------------------------------------------------------------


def test_frames_round_trip_and_a_damaged_length_is_never_taken_for_a_torn_write():
    one, two = frame(encode(ReadyRecord(None, None, entries(1, 1)))), frame(b"x" * 100)
    found = scan(one + two, True, "s")
    assert found.payloads[1] == b"x" * 100 and found.end == len(one + two) and found.torn is None
    damaged = bytearray(one + two)
    damaged[len(one) + 5] ^= 0x7F  # the second frame's length now runs past the end
    found = scan(bytes(damaged), True, "s")  # it is the last frame: torn, as a cut write
    assert found.payloads == [one[FRAME_HEADER_BYTES:]] and found.torn == "bad frame header"
    damaged = bytearray(one + two)
    damaged[6] ^= 0x7F  # the first frame's length: a valid frame follows
    with pytest.raises(CorruptLog, match="valid frame follows at offset"):
        scan(bytes(damaged), True, "s")


def test_obsolete_segments_are_a_prefix_and_never_the_last():
    state = LogState(segment_last_index={1: 10, 2: 25, 3: 0, 4: 40, 5: 50})
    state.snapshot = SnapshotMeta(30, 1, (1,))
    assert state.obsolete_segments() == [1, 2, 3]
    state.snapshot = SnapshotMeta(60, 1, (1,))
    assert state.obsolete_segments() == [1, 2, 3, 4]
    state.snapshot = SnapshotMeta(5, 1, (1,))
    assert state.obsolete_segments() == []
