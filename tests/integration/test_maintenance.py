"""Maintenance against real members: snapshot save under write load, restore
into a new cluster, Hash/HashKV agreement, and bad inputs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import urllib.error
import urllib.request

import lmdb
import pytest
import yaml

from cairn import cli
from cairn import node as node_cli
from transport.snapshot_file import SnapshotFileError
from store.environment import kv_path
from store.maintenance import DEFAULT_BUMP_REVISION, RestoreError, restore_member, snapshot_status
from store.mvcc import KeySpace
from tests.harness import Cluster, wait_for, write_config
from cairn import config as config_module
from transport import messages as m
from transport.errors import CairnError, CompactedError, FutureRevisionError


def _everything(client, revision=0):
    response = client.get(b"\x00", from_key=True, revision=revision)
    return response.header.revision, [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                                      for kv in response.kvs if not kv.key.startswith(b"__")]


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _get(url: str, path: str) -> str:
    with urllib.request.urlopen(url + path, timeout=10) as answer:
        return answer.read().decode()


def _new_cluster_config(directory, members: int) -> str:
    """A config for a NEW cluster (its own name, so its own cluster and member ids)."""
    path = write_config(directory, members)
    with open(path) as handle:
        document = yaml.safe_load(handle)
    document["cluster"]["name"] = "restored"
    with open(path, "w") as handle:
        yaml.safe_dump(document, handle)
    return path


def _hash_kv(client, revision: int, endpoint: str):
    try:
        return client.hash_kv(revision, endpoint=endpoint, timeout=1)
    except CairnError:
        return None


def test_snapshot_under_load_restores_into_new_cluster_at_its_revision(tmp_path):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    snapshot = str(tmp_path / "snap.db")
    with Cluster(old_dir, members=3) as cluster, cluster.client() as client:
        lease = client.lease_grant(600).id
        client.put(b"leased", b"L", lease=lease)
        for i in range(200):
            client.put(f"key{i:03}", f"value{i}" * 10)
        client.delete(b"key000")
        client.put(b"key001", b"again")

        stop = threading.Event()
        written = []

        def load():
            with cluster.client() as writer:
                i = 0
                while not stop.is_set():
                    written.append(writer.put(f"load{i % 50}", str(i)).header.revision)
                    i += 1

        loader = threading.Thread(target=load)
        loader.start()
        try:
            while len(written) < 20:  # the load is on before the snapshot starts
                threading.Event().wait(0.01)
            saved = client.snapshot_save(snapshot, endpoint=cluster.members["n2"].endpoint)
            before = len(written)
            while len(written) < before + 20:  # and goes on after it
                threading.Event().wait(0.01)
        finally:
            stop.set()
            loader.join()
        assert written[-1] > saved.revision  # writes went on past the snapshot's revision
        expected_revision, expected = _everything(client, saved.revision)
        assert expected_revision > saved.revision
        status = snapshot_status(snapshot)
        assert status["revision"] == saved.revision and status["total_size"] == os.path.getsize(snapshot)

        # HashKV: the three members agree at a common revision
        common = written[-1]
        hashes = set()
        for member in cluster.members.values():
            client.call(m.RangeRequest(b"x"), write=False, endpoint=member.endpoint)  # linearizable: applied to here
            response = client.hash_kv(common, endpoint=member.endpoint)
            assert response.hash_revision == common
            hashes.add(response.hash)
        assert len(hashes) == 1

        # A keyspace edited offline (one record's value) hashes differently.
        n3 = cluster.members["n3"]
        n3.stop()
        env = lmdb.open(kv_path(n3.data_dir), max_dbs=KeySpace.MAX_DBS)
        space = KeySpace(env)
        with env.begin(write=True) as txn:
            cursor = txn.cursor(db=space.revs_db)
            cursor.set_range(b"\x00" * 8 + b"\x00\x00\x00\x00")
            cursor.next()
            cursor.next()
            key, record = cursor.item()
            txn.put(key, record[:-1] + bytes([record[-1] ^ 1]), db=space.revs_db)
        env.close()
        n3.start()
        # not wait_ready: n3's start-up corruption check may raise CORRUPT, and
        # reads are refused then; HashKV is still served
        edited = wait_for(lambda: _hash_kv(client, common, n3.endpoint), "n3's HashKV", 30).hash
        assert edited not in hashes
        assert client.hash_kv(common, endpoint=cluster.members["n1"].endpoint).hash in hashes

    # Restore the file into a new 3-member cluster, one member at a time, offline.
    new_config_path = _new_cluster_config(new_dir, 3)
    new_config = config_module.load(new_config_path)
    for member in new_config.members:
        assert node_cli.main(["snapshot", "restore", snapshot, "--config", new_config_path, "--name", member.name]) == 0
    with Cluster.from_config(new_dir, new_config_path) as restored, restored.client() as client:
        bumped = saved.revision + DEFAULT_BUMP_REVISION
        for member in restored.members.values():  # every member serves the restored keyspace
            with restored.client([member.endpoint]) as single:
                revision, kvs = _everything(single)
            assert revision == bumped
            assert kvs == expected
        assert client.status().header.cluster_id == new_config.id != cluster.config.id
        # leases come along (etcd keeps them), with their keys
        assert client.lease_time_to_live(lease, keys=True).keys == (b"leased",)
        # a watcher of the old cluster resuming from its revision: compacted, never revisions going back
        with client.watch(b"key", prefix=True, start_revision=saved.revision) as watch:
            responses = list(watch)  # compacted ends the stream, as etcd's
            assert responses[-1].compact_revision == bumped and responses[-1].canceled
        with pytest.raises(CompactedError):
            client.get(b"key001", revision=saved.revision)
        assert client.put(b"after", b"restore").header.revision == bumped + 1


def test_restore_without_bump_keeps_revisions_and_history(tmp_path):
    (tmp_path / "old").mkdir()
    with Cluster(tmp_path / "old", members=1) as cluster, cluster.client() as client:
        client.put(b"a", b"1")
        client.put(b"a", b"2")
        saved = client.snapshot_save(str(tmp_path / "snap.db"))
    (tmp_path / "new").mkdir()
    config_path = _new_cluster_config(tmp_path / "new", 1)
    config = config_module.load(config_path)
    info = restore_member(str(tmp_path / "snap.db"), config, "n1", bump_revision=0)
    assert info["revision"] == saved.revision and info["compact_revision"] == 0
    with pytest.raises(RestoreError, match="not empty"):
        restore_member(str(tmp_path / "snap.db"), config, "n1")
    with Cluster.from_config(tmp_path / "new", config_path) as restored, restored.client() as client:
        assert client.get(b"a").kvs[0].value == b"2"
        assert client.get(b"a", revision=saved.revision - 1).kvs[0].value == b"1"  # history kept
        assert client.put(b"b", b"x").header.revision == saved.revision + 1


def test_bad_inputs_get_clear_errors_and_the_member_keeps_serving(tmp_path, capsys):
    snapshot = str(tmp_path / "snap.db")
    (tmp_path / "c").mkdir()
    with Cluster(tmp_path / "c", members=1, http=True) as cluster, cluster.client() as client:
        endpoint = cluster.members["n1"].endpoint
        for i in range(10):
            client.put(f"k{i}", "v")
        client.compact(5)
        with pytest.raises(CompactedError):
            client.hash_kv(3)
        with pytest.raises(FutureRevisionError):
            client.hash_kv(10_000)
        with pytest.raises(CairnError, match="unknown or expired"):
            client.call(m.SnapshotRequest(12345, 0), write=False)
        assert client.hash_kv(5).compact_revision == 5

        assert cli.main(["--endpoints", endpoint, "snapshot", "save", snapshot]) == 0
        assert capsys.readouterr().out == f"Snapshot saved at {snapshot}\n"
        assert not os.path.exists(snapshot + ".part")
        assert cli.main(["--endpoints", endpoint, "-w", "json", "endpoint", "hashkv"]) == 0
        out = capsys.readouterr().out
        assert '"hash_revision": 11' in out and '"compact_revision": 5' in out
        assert client.get(b"k1").kvs[0].value == b"v"  # still serving

        # the same calls on etcd's HTTP gateway paths
        url = cluster.members["n1"].http_url
        assert _post(url, "/v3/maintenance/hashkv", {"revision": 8})["hash"] == client.hash_kv(8).hash
        assert _post(url, "/v3/maintenance/hash", {})["hash"] == client.hash().hash
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(url, "/v3/maintenance/hashkv", {"revision": 3})
        assert refused.value.code == 400 and b"compacted" in refused.value.read()
        request = urllib.request.Request(url + "/v3/maintenance/snapshot", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            pieces = [json.loads(line)["result"] for line in answer.read().splitlines()]
        blob = b"".join(base64.b64decode(piece.get("blob", "")) for piece in pieces[:-1])
        assert "remaining_bytes" not in pieces[-2]
        assert base64.b64decode(pieces[-1]["blob"]) == hashlib.sha256(blob).digest()
        with open(snapshot, "rb") as handle:  # the same keyspace as the file saved above
            saved_blob = handle.read()[:-32]
        assert len(blob) == len(saved_blob)

        # health, readiness and metrics
        assert _get(url, "/readyz") == "ok" and _get(url, "/livez") == "ok"
        metrics = _get(url, "/metrics")
        assert "etcd_server_has_leader 1" in metrics and "etcd_server_is_leader 1" in metrics
        assert "etcd_debugging_mvcc_current_revision 11" in metrics

    assert cli.main(["snapshot", "status", snapshot, "-w", "table"]) == 0
    table = capsys.readouterr().out
    assert "| HASH | REVISION | TOTAL KEYS | TOTAL SIZE |" in table.replace("  ", " ").replace("  ", " ")
    assert " 11 |" in table

    with open(snapshot, "rb") as handle:
        data = bytearray(handle.read())
    corrupt = str(tmp_path / "corrupt.db")
    data[5000] ^= 0xFF
    with open(corrupt, "wb") as handle:
        handle.write(data)
    (tmp_path / "restore").mkdir()
    new_config = write_config(tmp_path / "restore", 1)
    wrong = str(tmp_path / "wrong.db")
    with open(wrong, "wb") as handle:
        handle.write(os.urandom(10_000))
    for path, message in ((str(tmp_path / "missing.db"), "not found"), (corrupt, "checksum mismatch"),
                          (wrong, "not a cairn snapshot")):
        with pytest.raises(SnapshotFileError, match=message):
            snapshot_status(path)
        assert cli.main(["snapshot", "status", path]) == 1
        assert message in capsys.readouterr().err
        assert node_cli.main(["snapshot", "restore", path, "--config", new_config, "--name", "n1"]) == 1
        assert message in capsys.readouterr().err
        assert not os.path.exists(config_module.load(new_config).data_dir("n1"))  # nothing half-made is left
