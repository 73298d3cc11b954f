"""The keyspace commits without a sync and is made durable in the background
(store/environment.py, actors/keyspace_sync.py); the Raft log is what makes a
write durable. Real members, real kill -9:

* a member whose keyspace lost its last batches (what an OS crash between two
  syncs does: here, the keyspace directory put back as it was before them)
  applies them again from its own log at restart and ends with the others'
  HashKV;
* members killed with kill -9, one, the leader and all at once, under a
  continuous write load: every acknowledged write is on every member
  afterwards, and every member's HashKV agrees."""

from __future__ import annotations

import os
import shutil
import threading
import time

from cairn import Client
from tests.harness import cluster_fixture, wait_for
from transport.errors import CairnError

cluster = cluster_fixture("keyspace-durability", members=3)


def agreed_hash(cluster, revision: int) -> int:
    """Every member's HashKV at revision, after each has applied it (a
    linearizable read through it waits for that); asserts they agree."""
    hashes = {}
    for member in cluster.members.values():
        with Client([member.endpoint], timeout=10) as client:
            assert client.get(b"__sync__").header.revision >= revision
            hashes[member.name] = client.hash_kv(revision, endpoint=member.endpoint).hash
    assert len(set(hashes.values())) == 1, hashes
    return hashes.popitem()[1]


def test_a_keyspace_that_lost_its_last_batches_applies_them_again_from_the_log(cluster, tmp_path):
    leader = cluster.leader()
    victim = next(m for m in cluster.members.values() if m is not leader)
    with cluster.client() as client:
        for i in range(30):
            client.put(f"before/{i}".encode(), b"v")
    victim.stop()  # a clean stop syncs: this copy is the keyspace as of now
    old_keyspace = tmp_path / "kv"
    shutil.copytree(os.path.join(victim.data_dir, "kv"), old_keyspace)
    victim.start()
    cluster.wait_ready([victim])
    with cluster.client() as client:
        for i in range(40):
            revision = client.put(f"after/{i}".encode(), str(i).encode()).header.revision
    with Client([victim.endpoint]) as client:
        wait_for(lambda: client.get(b"after/", prefix=True, count_only=True, serializable=True).count == 40,
                 "the victim to apply the later writes")
    applied_before = victim.status().raft_applied_index
    victim.kill9()
    # The victim's log holds the 40 later entries; its keyspace goes back to before them.
    shutil.rmtree(os.path.join(victim.data_dir, "kv"))
    shutil.copytree(old_keyspace, os.path.join(victim.data_dir, "kv"))
    victim.start()
    cluster.wait_ready([victim])
    recovered = [r for r in victim.log_records("apply") if r.get("event") == "apply_recovered"][-1]
    assert recovered["index"] < applied_before  # it really restarted behind
    with Client([victim.endpoint]) as client:
        wait_for(lambda: client.get(b"after/", prefix=True, count_only=True, serializable=True).count == 40,
                 "the victim to apply the later writes again")
        kvs = client.get(b"after/", prefix=True, serializable=True).kvs
        assert {kv.key: kv.value for kv in kvs} == {f"after/{i}".encode(): str(i).encode() for i in range(40)}
    agreed_hash(cluster, revision)


class Writer:
    """Puts unique keys through every member until stopped, remembering each
    put that was acknowledged (an error or a timeout is not: it may or may not
    have been applied, and is not checked)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.acknowledged: dict[bytes, bytes] = {}
        self.errors = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with Client(self.cluster.endpoints, timeout=3.0) as client:
            n = 0
            while not self.stopping.is_set():
                key, value = f"load/{n:06d}".encode(), str(n).encode()
                n += 1
                try:
                    client.put(key, value)
                except CairnError:
                    self.errors += 1
                    time.sleep(0.02)
                    continue
                self.acknowledged[key] = value

    def wait_for_more(self, count: int, timeout_s: float = 30.0) -> None:
        target = len(self.acknowledged) + count
        wait_for(lambda: len(self.acknowledged) >= target, f"{count} more acknowledged writes", timeout_s)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def test_kill_9_under_write_load_loses_no_acknowledged_write(cluster):
    cluster.wait_ready()
    with Writer(cluster) as writer:
        writer.wait_for_more(50)
        follower = next(m for m in cluster.members.values() if m is not cluster.leader())
        follower.kill9()
        writer.wait_for_more(50)
        follower.start()
        cluster.wait_ready([follower])
        writer.wait_for_more(50)
        leader = cluster.leader()
        leader.kill9()
        writer.wait_for_more(50)  # the other two elect a leader and go on
        leader.start()
        cluster.wait_ready([leader])
        writer.wait_for_more(50)
        for member in cluster.members.values():
            member.kill9()
        for member in cluster.members.values():
            member.start()
        cluster.wait_ready()
        writer.wait_for_more(50)
    acknowledged = dict(writer.acknowledged)
    assert len(acknowledged) >= 300
    with cluster.client() as client:
        revision = client.put(b"load-done", b"1").header.revision
    for member in cluster.members.values():
        with Client([member.endpoint], timeout=10) as client:
            found = {kv.key: kv.value for kv in client.get(b"load/", prefix=True).kvs}
            missing = [key for key in acknowledged if found.get(key) != acknowledged[key]]
            assert not missing, f"{member.name} lost {len(missing)} acknowledged writes, e.g. {missing[:3]}"
    agreed_hash(cluster, revision)
