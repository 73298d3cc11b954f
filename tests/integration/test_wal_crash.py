"""The Raft log's write-ahead log under real crashes (issue 18): members
kill -9'd at random points of a continuous write load (tests/harness.py: Writer), and a member whose last
WAL record was torn, lose nothing that was acknowledged; a damaged log stops
the member from starting.

kill -9 ends processes, not the machine, so written pages survive in the page
cache; the torn-write cases are made by cutting a stopped member's WAL file
(tests/store/test_raft_wal.py cuts it at every byte offset)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import pytest

from cairn import Client
from store.environment import wal_path
from store.raftlog import RaftLogStore, segment_name, segment_seqs
from store.wal_format import FRAME_HEADER_BYTES
from tests.harness import REPO, Cluster, Writer, wait_for
from tests.wal_files import flip_bit, frame_offsets, write_legacy_raft_log

SEED = int(os.environ.get("CAIRN_CRASH_SEED", random.randrange(1 << 30)))
# kill rounds per run: a few in `make test`, many more in `make test-long`
ROUNDS = int(os.environ.get("CAIRN_CRASH_ROUNDS", 3))
WRITERS = 2


def assert_every_acknowledged_write_is_on_every_member(cluster, acknowledged) -> None:
    cluster.wait_ready()
    for member in cluster.members.values():
        with Client([member.endpoint], timeout=10.0) as client:
            stored = {kv.key for kv in client.get(b"crash/", prefix=True, keys_only=True).kvs}
        lost = [key for key in acknowledged if key not in stored]
        assert not lost, f"member {member.name} lost {len(lost)} acknowledged writes, e.g. {lost[:3]} (seed {SEED})"


@pytest.fixture
def cluster(tmp_path):
    # a short log: compactions (and whole-segment deletions) happen during the test
    with Cluster(tmp_path, members=3, snapshot_entries=200) as cluster:
        yield cluster


def test_members_killed_at_random_points_under_write_load_lose_nothing_acknowledged(cluster):
    rng = random.Random(SEED)
    print(f"replay with CAIRN_CRASH_SEED={SEED}")
    members = list(cluster.members.values())
    writers = [Writer(cluster.endpoints, b"crash/%d/" % i) for i in range(WRITERS)]

    def acknowledged() -> int:
        return sum(len(writer.acked) for writer in writers)

    try:
        for _ in range(ROUNDS):
            # the kill point: a random number of further acknowledged writes
            target = acknowledged() + rng.randint(20, 300)
            wait_for(lambda: acknowledged() >= target, f"{target} acknowledged writes (seed {SEED})", timeout_s=90)
            how = rng.choice(["leader", "follower", "all"])
            if how == "all":
                victims = members
            else:
                leader = cluster.leader()
                victims = [leader] if how == "leader" else [rng.choice([m for m in members if m is not leader])]
            for victim in victims:
                victim.kill9()
            for victim in victims:
                victim.start()
            cluster.wait_ready(victims)
        final = acknowledged() + 50
        wait_for(lambda: acknowledged() >= final, "writes after the last restart", timeout_s=60)
    finally:
        acked = [key for writer in writers for key in writer.finish()]
    assert len(acked) > ROUNDS * 20
    assert_every_acknowledged_write_is_on_every_member(cluster, acked)
    assert any(r.get("event") == "log_compacted" for m in members for r in m.log_records("raft"))


def _last_segment(member) -> str:
    directory = wal_path(member.data_dir)
    return os.path.join(directory, segment_name(segment_seqs(directory)[-1]))


def test_a_member_whose_last_wal_record_was_torn_repairs_it_and_catches_up(cluster):
    acknowledged = []
    with cluster.client() as client:
        for i in range(100):
            client.put(b"crash/torn/%03d" % i, b"v")
            acknowledged.append(b"crash/torn/%03d" % i)
    leader = cluster.leader()
    victim = next(m for m in cluster.members.values() if m is not leader)
    victim.stop()
    path = _last_segment(victim)
    *_, last, end = frame_offsets(path)
    with open(path, "r+b") as handle:  # half of the last frame reached the disk, then zeros
        handle.seek(last + (end - last) // 2)
        handle.write(bytes(end - last - (end - last) // 2))
    with cluster.client() as client:
        for i in range(100, 150):
            client.put(b"crash/torn/%03d" % i, b"v")
            acknowledged.append(b"crash/torn/%03d" % i)
    victim.start()
    cluster.wait_ready([victim])
    repaired = [r for r in victim.log_records("supervisor") if r.get("event") == "raft_log_repaired"]
    assert repaired and "torn tail" in repaired[0]["repair"]
    assert_every_acknowledged_write_is_on_every_member(cluster, acknowledged)


def test_a_member_made_before_the_wal_migrates_its_lmdb_log_and_keeps_its_data(tmp_path):
    with Cluster(tmp_path, members=1) as cluster:
        with cluster.client() as client:
            for i in range(30):
                client.put(b"old/%d" % i, b"v%d" % i)
        [member] = cluster.members.values()
        member.stop()
    # the same log, as the LMDB environment a member made before the WAL holds
    store = RaftLogStore(wal_path(member.data_dir))
    write_legacy_raft_log(member.data_dir, *store.load())
    store.close()
    shutil.rmtree(wal_path(member.data_dir))
    member.start()
    cluster.wait_ready()
    assert any("migrated" in r["repair"] for r in member.log_records("supervisor") if r.get("event") == "raft_log_repaired")
    with cluster.client() as client:
        assert {kv.key: kv.value for kv in client.get(b"old/", prefix=True).kvs} == {b"old/%d" % i: b"v%d" % i for i in range(30)}
        client.put(b"new", b"after the migration")
    member.stop()
    member.start()
    cluster.wait_ready()
    with cluster.client() as client:
        assert client.get(b"new").kvs[0].value == b"after the migration"
        assert client.get(b"old/", prefix=True).count == 30
    member.stop()


def test_a_damaged_wal_stops_the_member_from_starting(tmp_path):
    with Cluster(tmp_path, members=1) as cluster:
        with cluster.client() as client:
            for i in range(20):
                client.put(b"k%d" % i, b"v")
        [member] = cluster.members.values()
        member.stop()
    path = _last_segment(member)
    middle = frame_offsets(path)[len(frame_offsets(path)) // 2]
    flip_bit(path, middle + FRAME_HEADER_BYTES)
    node = subprocess.run(
        [sys.executable, "-m", "cairn.node", "node", "--config", cluster.config_path, "--name", member.name],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert node.returncode == 65, node.stderr
    assert "the Raft log is damaged, refusing to start" in node.stderr
    assert f"payload checksum mismatch, and data follows the frame at offset {middle}" in node.stderr
