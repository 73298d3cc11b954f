"""The Raft log's write-ahead log under real crashes (issue 18): members
kill -9'd at random points of a continuous write load, and a member whose last
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
import threading

import pytest

from cairn import Client
from store.environment import wal_path
from store.raftlog import RaftLogStore, segment_name, segment_seqs
from store.wal_format import FRAME_HEADER_BYTES
from tests.harness import REPO, Cluster, wait_for
from transport.errors import CairnError

SEED = int(os.environ.get("CAIRN_CRASH_SEED", random.randrange(1 << 30)))
ROUNDS = 5
WRITERS = 2


class Writers:
    """Clients putting unique keys (crash/<writer>/<n>) without pause; a key is
    recorded only once its put was acknowledged."""

    def __init__(self, endpoints: list[str]):
        self.acknowledged: dict[bytes, bytes] = {}
        self.failed = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i, endpoints), daemon=True) for i in range(WRITERS)]

    def _run(self, writer: int, endpoints: list[str]) -> None:
        with Client(endpoints, timeout=5.0) as client:
            n = 0
            while not self.stopping.is_set():
                key, value = b"crash/%d/%06d" % (writer, n), b"v%d-%d" % (writer, n) + b"x" * 200
                n += 1
                try:
                    client.put(key, value)
                except CairnError:
                    with self.lock:
                        self.failed += 1
                    continue
                with self.lock:
                    self.acknowledged[key] = value

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads), "a writer did not stop"


def assert_every_acknowledged_write_is_on_every_member(cluster, acknowledged: dict) -> None:
    cluster.wait_ready()
    for member in cluster.members.values():
        with Client([member.endpoint], timeout=10.0) as client:
            stored = {kv.key: kv.value for kv in client.get(b"crash/", prefix=True).kvs}
        lost = [key for key, value in acknowledged.items() if stored.get(key) != value]
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
    with Writers(cluster.endpoints) as writers:
        for round_ in range(ROUNDS):
            # the kill point: a random number of further acknowledged writes
            target = writers.count() + rng.randint(20, 300)
            wait_for(lambda: writers.count() >= target, f"{target} acknowledged writes (seed {SEED})", timeout_s=90)
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
        final = writers.count() + 50
        wait_for(lambda: writers.count() >= final, "writes after the last restart", timeout_s=60)
    assert len(writers.acknowledged) > ROUNDS * 20
    assert_every_acknowledged_write_is_on_every_member(cluster, writers.acknowledged)
    assert any(r.get("event") == "log_compacted" for m in members for r in m.log_records("raft"))


def _frames(path: str) -> list[int]:
    """Offsets of the frames in a segment file."""
    with open(path, "rb") as handle:
        data = handle.read()
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += FRAME_HEADER_BYTES + int.from_bytes(data[offset + 4 : offset + 8], "big")
    return offsets


def _last_segment(member) -> str:
    directory = wal_path(member.data_dir)
    return os.path.join(directory, segment_name(segment_seqs(directory)[-1]))


def test_a_member_whose_last_wal_record_was_torn_repairs_it_and_catches_up(cluster):
    acknowledged = {}
    with cluster.client() as client:
        for i in range(100):
            key, value = b"crash/torn/%03d" % i, b"%d" % i
            client.put(key, value)
            acknowledged[key] = value
    leader = cluster.leader()
    victim = next(m for m in cluster.members.values() if m is not leader)
    victim.stop()
    path = _last_segment(victim)
    last = _frames(path)[-1]
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:  # half of the last frame reached the disk
        handle.truncate(last + (size - last) // 2)
    with cluster.client() as client:
        for i in range(100, 150):
            key, value = b"crash/torn/%03d" % i, b"%d" % i
            client.put(key, value)
            acknowledged[key] = value
    victim.start()
    cluster.wait_ready([victim])
    repaired = [r for r in victim.log_records("supervisor") if r.get("event") == "raft_log_repaired"]
    assert repaired and "torn tail" in repaired[0]["repair"]
    assert_every_acknowledged_write_is_on_every_member(cluster, acknowledged)


def test_a_member_made_before_the_wal_migrates_its_lmdb_log_and_keeps_its_data(tmp_path):
    from tests.store.test_raft_wal import write_legacy_raft_log

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
    middle = _frames(path)[len(_frames(path)) // 2]
    with open(path, "r+b") as handle:
        handle.seek(middle + FRAME_HEADER_BYTES)
        byte = handle.read(1)
        handle.seek(middle + FRAME_HEADER_BYTES)
        handle.write(bytes([byte[0] ^ 0xFF]))
    node = subprocess.run(
        [sys.executable, "-m", "cairn.node", "node", "--config", cluster.config_path, "--name", member.name],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert node.returncode == 65, node.stderr
    assert "the Raft log is damaged, refusing to start" in node.stderr
    assert f"payload checksum mismatch, and data follows the frame at offset {middle}" in node.stderr
