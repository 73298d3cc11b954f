"""etcd's etcdctl 3.5 against the gRPC door's administrative services on one
real 3-member cluster: Cluster (member add --learner, list, update, promote,
remove), Maintenance (snapshot save, endpoint hash/hashkv, defrag) and Auth (users,
roles, permissions, auth enable/disable/status, a token on unary calls and on
watch and keep-alive streams). The assertions are on what etcdctl prints, and
cross-checked with cairn's own client and cairnctl.

Needs the etcd-clients test extra (make installs it); skipped without it. The
auth test runs last and turns auth off again."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from tests.harness import cluster_fixture, free_ports
from tests.integration.test_grpc_clients import ETCDCTL, Lines, etcdctl  # noqa: F401 — skips without etcdctl

CAIRNCTL = os.path.join(os.path.dirname(sys.executable), "cairnctl")

cluster = cluster_fixture("grpc-admin", members=3, grpc=True)


def one(cluster):
    return [next(iter(cluster.members.values()))]


# ------------------------------------------------------------------ Cluster


def test_etcdctl_member_add_learner_list_update_promote_remove(cluster):
    # etcdctl takes only http(s) URLs: the door reads http://HOST:PORT as cairn's tcp://HOST:PORT
    port = free_ports(1)[0]
    peer = f"tcp://127.0.0.1:{port}"
    out = etcdctl(cluster, "member", "add", "n4", f"--peer-urls=http://127.0.0.1:{port}", "--learner")
    first, *rest = out.splitlines()
    words = first.split()
    assert words[0] == "Member" and words[2:5] == ["added", "to", "cluster"], out
    new_id = words[1]
    int(new_id, 16)
    # etcdctl prints the new member's environment, naming it as asked
    assert 'ETCD_NAME="n4"' in rest and 'ETCD_INITIAL_CLUSTER_STATE="existing"' in rest, out
    initial = next(line for line in rest if line.startswith("ETCD_INITIAL_CLUSTER="))
    assert f"n4={peer}" in initial and initial.count("=tcp://") == 4, initial

    listed = json.loads(etcdctl(cluster, "member", "list", "-w", "json"))
    by_id = {format(mb["ID"], "x"): mb for mb in listed["members"]}
    assert len(by_id) == 4 and by_id[new_id]["isLearner"] is True and by_id[new_id]["peerURLs"] == [peer]
    # a member added without cairn's name is named after its first peer URL
    assert by_id[new_id]["name"] == peer
    rows = [line.split(", ") for line in etcdctl(cluster, "member", "list").splitlines()]
    assert [row[5] for row in rows if row[0] == new_id] == ["true"]
    # the same record through cairn's client
    with cluster.client() as c:
        native = {mb.id: mb for mb in c.member_list().members}
    assert native[int(new_id, 16)].is_learner

    port = free_ports(1)[0]
    moved = f"tcp://127.0.0.1:{port}"
    out = etcdctl(cluster, "member", "update", new_id, f"--peer-urls=http://127.0.0.1:{port}")
    assert out.split()[:5] == ["Member", new_id, "updated", "in", "cluster"], out  # etcdctl pads ids (%16x)
    listed = json.loads(etcdctl(cluster, "member", "list", "-w", "json"))
    assert [mb["peerURLs"] for mb in listed["members"] if format(mb["ID"], "x") == new_id] == [[moved]]

    # a learner that never started cannot be promoted: etcd's error, through etcdctl
    out = etcdctl(cluster, "member", "promote", new_id, check=False)
    assert "can only promote a learner member which is in sync with leader" in out, out

    out = etcdctl(cluster, "member", "remove", new_id)
    assert out.split()[:5] == ["Member", new_id, "removed", "from", "cluster"], out
    assert len(json.loads(etcdctl(cluster, "member", "list", "-w", "json"))["members"]) == 3
    out = etcdctl(cluster, "member", "remove", new_id, check=False)
    assert "member not found" in out, out


# ------------------------------------------------------------------ Maintenance


def test_etcdctl_snapshot_save_is_cairns_snapshot_file(cluster, tmp_path):
    for i in range(20):
        etcdctl(cluster, "put", f"snap/{i}", "v" * 100)
    path = str(tmp_path / "etcdctl.db")
    out = etcdctl(cluster, "snapshot", "save", path, members=one(cluster))
    assert f"Snapshot saved at {path}" in out
    data = open(path, "rb").read()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]  # LMDB bytes + their SHA-256
    # cairnctl reads the file etcdctl saved (offline, as etcdutl snapshot status)
    status = json.loads(subprocess.run([CAIRNCTL, "snapshot", "status", path, "-w", "json"], capture_output=True,
                                       text=True, check=True, timeout=30).stdout)
    with cluster.client() as c:
        revision = c.get("snap/19").header.revision
    assert status["revision"] >= revision and status["totalKey"] >= 20 and status["totalSize"] == len(data)
    # the same keyspace as cairn's own client saves from that member
    saved = str(tmp_path / "cairn.db")
    with cluster.client(endpoints=[one(cluster)[0].endpoint]) as c:
        c.snapshot_save(saved)
    native = json.loads(subprocess.run([CAIRNCTL, "snapshot", "status", saved, "-w", "json"], capture_output=True,
                                       text=True, check=True, timeout=30).stdout)
    assert (native["revision"], native["hash"], native["totalKey"]) == (status["revision"], status["hash"],
                                                                        status["totalKey"])
    # etcdctl refuses more than one endpoint, as with etcd
    out = etcdctl(cluster, "snapshot", "save", str(tmp_path / "two.db"), check=False)
    assert "snapshot must be requested to one selected node" in out


def test_etcdctl_endpoint_hash_and_hashkv(cluster):
    etcdctl(cluster, "put", "hash/k", "v")
    with cluster.client() as c:
        revision = c.get("hash/k").header.revision
    rows = json.loads(etcdctl(cluster, "endpoint", "hashkv", "--rev", str(revision), "-w", "json"))
    assert len(rows) == 3
    hashes = {row["HashKV"]["hash"] for row in rows}
    assert len(hashes) == 1 and hashes.pop() != 0  # the same history, the same hash
    text = etcdctl(cluster, "endpoint", "hashkv", "--rev", str(revision))
    assert all(line.split(", ")[1].isdigit() for line in text.splitlines()), text
    with cluster.client(endpoints=[one(cluster)[0].endpoint]) as c:
        native = c.hash_kv(revision)
    target = one(cluster)[0].grpc_target
    assert [row["HashKV"]["hash"] for row in rows if row["Endpoint"] == target] == [native.hash]


def test_etcdctl_defrag_shrinks_every_members_file_and_loses_nothing(cluster):
    with cluster.client() as c:
        for i in range(150):
            c.put(f"defrag/{i}", os.urandom(4096))
        c.put("defrag/kept", "still here")
        revision = c.delete("defrag/", range_end="defrag/kept").header.revision
        c.compact(revision, physical=True)
        before = {member.grpc_target: c.status(endpoint=member.endpoint).db_size for member in cluster.members.values()}
    out = etcdctl(cluster, "defrag")
    assert sorted(out.splitlines()) == sorted(f"Finished defragmenting etcd member[{target}]" for target in before)
    with cluster.client() as c:
        for member in cluster.members.values():
            assert c.status(endpoint=member.endpoint).db_size < before[member.grpc_target]
    for member in cluster.members.values():
        with cluster.client(endpoints=[member.endpoint]) as c:
            assert c.get("defrag/kept", serializable=True).kvs[0].value == b"still here"
    # --cluster: every member from member list (its client URLs), through one endpoint
    out = etcdctl(cluster, "defrag", "--cluster", members=one(cluster))
    assert sorted(out.splitlines()) == sorted(f"Finished defragmenting etcd member[http://{target}]" for target in before)


# ------------------------------------------------------------------ Auth (last: it turns auth on, then off)


def test_etcdctl_auth_users_roles_permissions_and_tokens(cluster):
    root = ["--user", "root:rootpw"]
    reader = ["--user", "reader:readpw"]
    assert etcdctl(cluster, "user", "add", "root", "--new-user-password=rootpw") == "User root created\n"
    assert etcdctl(cluster, "role", "add", "root") == "Role root created\n"
    assert etcdctl(cluster, "user", "grant-role", "root", "root") == "Role root is granted to user root\n"
    etcdctl(cluster, "user", "add", "reader", "--new-user-password=readpw")
    etcdctl(cluster, "role", "add", "ro")
    out = etcdctl(cluster, "role", "grant-permission", "ro", "read", "ro/", "--prefix=true")
    assert out == "Role ro updated\n"
    etcdctl(cluster, "user", "grant-role", "reader", "ro")
    assert "Permission not given" not in etcdctl(cluster, "role", "get", "ro")
    assert etcdctl(cluster, "role", "get", "ro") == 'Role ro\nKV Read:\n\t[ro/, ro0) (prefix ro/)\nKV Write:\n'
    assert etcdctl(cluster, "user", "get", "reader") == "User: reader\nRoles: ro\n"
    assert etcdctl(cluster, "user", "list").split() == ["reader", "root"]
    assert etcdctl(cluster, "role", "list").split() == ["ro", "root"]
    out = etcdctl(cluster, "user", "add", "root", "--new-user-password=x", check=False)
    assert "etcdserver: user name already exists" in out
    etcdctl(cluster, "put", "ro/a", "1")

    assert etcdctl(cluster, "auth", "enable") == "Authentication Enabled\n"
    try:
        assert etcdctl(cluster, *root, "auth", "status").splitlines()[0] == "Authentication Status: true"
        assert etcdctl(cluster, *root, "put", "k", "v") == "OK\n"
        assert etcdctl(cluster, *root, "get", "k", "--print-value-only") == "v\n"
        out = etcdctl(cluster, "put", "k", "v2", check=False)
        assert "etcdserver: user name is empty" in out or "permission denied" in out, out
        out = etcdctl(cluster, "--user", "root:wrong", "get", "k", check=False)
        assert "etcdserver: authentication failed, invalid user ID or password" in out, out
        # read-only on ro/: reads work, writes are denied with etcd's error
        assert etcdctl(cluster, *reader, "get", "ro/a", "--print-value-only") == "1\n"
        out = etcdctl(cluster, *reader, "put", "ro/a", "2", check=False)
        assert "etcdserver: permission denied" in out, out
        out = etcdctl(cluster, *reader, "get", "k", check=False)
        assert "etcdserver: permission denied" in out, out
        out = etcdctl(cluster, *reader, "user", "list", check=False)
        assert "etcdserver: permission denied" in out, out
        # the caller's token rides on a watch stream: reader may watch ro/ ...
        start = int(json.loads(etcdctl(cluster, *root, "put", "ro/w", "seen", "-w", "json"))["header"]["revision"])
        watch = Lines(cluster, *reader, "watch", "ro/", "--prefix", "--rev", str(start))
        try:
            assert watch.next(3) == ["PUT", "ro/w", "seen"]
        finally:
            watch.stop()
        # ... and not outside it: etcd cancels the watch with its error
        watch = Lines(cluster, *reader, "watch", "k", members=one(cluster))
        try:
            assert any("permission denied" in line for line in watch.next(1)), "no denial"
        finally:
            watch.stop()
        # ... and on a keep-alive stream
        lease = etcdctl(cluster, *root, "lease", "grant", "30", members=one(cluster)).split()[1]
        out = etcdctl(cluster, *root, "lease", "keep-alive", "--once", lease, members=one(cluster))
        assert out == f"lease {lease} keepalived with TTL(30)\n"
        out = etcdctl(cluster, *root, "user", "passwd", "reader", "--interactive=false", input="newpw\n")
        assert out == "Password updated\n"
        # Authenticate waits for a read index, as a linearizable read: every
        # member takes the new password and refuses the old one at once (the
        # refusals last: a failure holds the user back for a moment)
        for member in cluster.members.values():
            assert etcdctl(cluster, "--user", "reader:newpw", "get", "ro/a", "--print-value-only", check=False,
                           members=[member]) == "1\n", member.name
        etcdctl(cluster, *root, "role", "revoke-permission", "ro", "ro/", "--prefix=true")
        assert "permission denied" in etcdctl(cluster, "--user", "reader:newpw", "get", "ro/a", check=False)
        for member in cluster.members.values():
            assert "authentication failed" in etcdctl(cluster, *reader, "get", "ro/a", check=False, members=[member])
    finally:
        assert etcdctl(cluster, *root, "auth", "disable") == "Authentication Disabled\n"
    assert etcdctl(cluster, "auth", "status").splitlines()[0] == "Authentication Status: false"
    assert etcdctl(cluster, "user", "revoke-role", "reader", "ro") == "Role ro is revoked from user reader\n"
    assert etcdctl(cluster, "user", "delete", "reader") == "User reader deleted\n"
    assert etcdctl(cluster, "role", "delete", "ro") == "Role ro deleted\n"
    assert etcdctl(cluster, "put", "k", "open") == "OK\n"
