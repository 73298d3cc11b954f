"""The raft actor's byte bound on applied entries kept in memory (actors/raft/retention.py)."""

from actors.raft.retention import RetainedBytes, compaction_index
from transport.raft_messages import Entry


def entries(first: int, last: int, size: int):
    return tuple(Entry(index, 1, b"x" * size) for index in range(first, last + 1))


def test_under_the_limit_nothing_is_compacted():
    retained = RetainedBytes()
    retained.add(entries(1, 10, 100))
    assert retained.bytes == 1000
    assert retained.compact_point(1000, upto=10) == 0


def test_over_the_limit_compacts_down_to_half_of_it():
    retained = RetainedBytes()
    retained.add(entries(1, 10, 100))
    point = retained.compact_point(600, upto=10)
    assert point == 7  # entries 8..10 (300 bytes) stay: half of 600
    retained.drop_through(point)
    assert retained.bytes == 300
    assert retained.compact_point(600, upto=10) == 0


def test_never_compacts_past_what_apply_has_acknowledged():
    retained = RetainedBytes()
    retained.add(entries(1, 10, 100))
    assert retained.compact_point(200, upto=4) == 4


def test_entries_sent_again_are_counted_once():
    retained = RetainedBytes()
    retained.add(entries(1, 5, 10))
    retained.add(entries(3, 8, 10))  # apply restarted: 3..5 re-sent
    assert retained.bytes == 80
    retained.drop_through(8)
    assert retained.bytes == 0


def test_compaction_keeps_snapshot_entries_and_what_a_follower_catching_up_needs():
    assert compaction_index(durable=100, keep_entries=40, first_index=1, catch_up=None, by_bytes=0) == 60
    # a follower installing the snapshot at 30 goes on from 31: kept
    assert compaction_index(durable=100, keep_entries=40, first_index=1, catch_up=30, by_bytes=0) == 30
    # compactions come in steps of a quarter of keep_entries, not one per batch
    assert compaction_index(durable=100, keep_entries=40, first_index=25, catch_up=30, by_bytes=0) == 0
    assert compaction_index(durable=100, keep_entries=40, first_index=55, catch_up=None, by_bytes=0) == 0
    assert compaction_index(durable=30, keep_entries=40, first_index=1, catch_up=None, by_bytes=0) == 0
    # the bytes limit wins: memory is bounded first
    assert compaction_index(durable=100, keep_entries=40, first_index=1, catch_up=30, by_bytes=90) == 90


def test_the_byte_bound_never_compacts_past_the_durable_index():
    # apply acknowledged far more than it synced: the entries in between may
    # have to be applied again after an OS crash, so they stay
    assert compaction_index(durable=100, keep_entries=10000, first_index=1, catch_up=None, by_bytes=500) == 100
    assert compaction_index(durable=100, keep_entries=10000, first_index=1, catch_up=None, by_bytes=80) == 80
    assert compaction_index(durable=100, keep_entries=10000, first_index=101, catch_up=None, by_bytes=500) == 0


def test_what_followers_need_only_lowers_the_target():
    # The raft actor skips RaftCore.catch_up_index() (a walk over the followers)
    # on turns where, bytes aside, nothing would be compacted even without it.
    for durable in range(0, 40):
        for keep in (0, 1, 4, 8, 12):
            for first in range(0, 40):
                if compaction_index(durable, keep, first, None, 0):
                    continue
                for catch_up in range(0, 40):
                    assert compaction_index(durable, keep, first, catch_up, 0) == 0, (durable, keep, first, catch_up)
    # with the byte bound over, what followers need can matter: no skip then
    assert compaction_index(durable=100, keep_entries=40, first_index=55, catch_up=None, by_bytes=90) == 90
