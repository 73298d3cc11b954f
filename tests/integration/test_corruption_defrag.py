"""Corruption checks, defragmentation and metrics against one shared 3-member
cluster (with the HTTP gateway), checking every second."""

from __future__ import annotations

import time

import lmdb
import pytest

from cairn import cli
from store.environment import kv_path
from store.mvcc import KeySpace
from tests.harness import cluster_fixture, wait_for
from transport import messages as m
from transport.errors import CairnError, CorruptError

cluster = cluster_fixture("corruption", members=3, http=True, corruption_check_interval_s=1)


def _flip_a_record(data_dir: str) -> None:
    """Flip one bit of the third history record's value (offline); flipping
    it again restores the keyspace."""
    env = lmdb.open(kv_path(data_dir), max_dbs=KeySpace.MAX_DBS)
    space = KeySpace(env)
    with env.begin(write=True) as txn:
        cursor = txn.cursor(db=space.revs_db)
        cursor.first()
        cursor.next()
        cursor.next()
        key, record = cursor.item()
        txn.put(key, record[:-1] + bytes([record[-1] ^ 1]), db=space.revs_db)
    env.close()


def _corrupt_alarms(client) -> set:
    return {a.member_id for a in client.alarm_list().alarms if a.alarm == m.ALARM_CORRUPT}


def test_an_offline_edit_raises_corrupt_and_disarm_clears_it(cluster, capsys):
    with cluster.client() as client:
        for i in range(20):
            client.put(f"c{i}", f"v{i}")
        n3 = cluster.members["n3"]
        n3.stop()
        _flip_a_record(n3.data_dir)
        n3.start()
        cluster.wait_ready([n3])
        # the start-up check (n3's) or the leader's periodic one raises it for n3 alone
        assert wait_for(lambda: _corrupt_alarms(client), "the CORRUPT alarm", 15) == {n3.spec.id}

        assert cli.main(["--endpoints", ",".join(cluster.endpoints), "endpoint", "status"]) == 0
        out = capsys.readouterr().out
        assert out.count(f"memberID:{n3.spec.id:x} alarm:CORRUPT") == 3, out

        # etcd's corrupt applier: every member refuses KV requests
        wait_for(lambda: _refused(client, cluster.members["n1"].endpoint), "reads refused on n1", 5)
        with pytest.raises(CorruptError, match="etcdserver: corrupt cluster"):
            client.put(b"c0", b"after")
        wait_for(lambda: _refused(client, n3.endpoint, serializable=True), "serializable reads refused on n3", 5)
        # status and hashes are still served, so the operator can look
        assert client.status(endpoint=n3.endpoint).errors

        # repair n3 (undo the edit), then disarm: the checks pass and requests work again
        n3.stop()
        _flip_a_record(n3.data_dir)
        n3.start()
        wait_for(lambda: _has_leader(client, n3.endpoint), "n3 back (reads are refused: no wait_ready)", 30)
        assert cli.main(["--endpoints", ",".join(cluster.endpoints), "alarm", "disarm"]) == 0
        assert "alarm:CORRUPT" in capsys.readouterr().out
        assert _corrupt_alarms(client) == set()
        wait_for(lambda: not _refused(client, n3.endpoint), "reads served again", 5)
        assert client.put(b"c0", b"after").header.revision
        assert client.get(b"c0").kvs[0].value == b"after"
        time.sleep(2.5)  # later checks (every second) agree again
        assert _corrupt_alarms(client) == set()


def _has_leader(client, endpoint) -> bool:
    try:
        return bool(client.status(endpoint=endpoint, timeout=1).leader)
    except CairnError:
        return False


def _refused(client, endpoint, serializable=False) -> bool:
    try:
        client.call(m.RangeRequest(b"c0", serializable=serializable), write=False, endpoint=endpoint)
    except CorruptError:
        return True
    except CairnError:
        return False
    return False
