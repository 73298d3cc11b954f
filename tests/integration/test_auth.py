"""etcd v3 auth through the doors, with real members: users, roles and
permissions checked on reads, writes, txns, watches and the lock service;
revocation on an open token; token expiry and transparent refresh; throttled
guessing; the HTTP gateway's authenticate and Authorization header; cairnctl's
output; auth surviving a restart; no password or token in any log file.

One single-member cluster for the module (tests run in file order and build
on each other's state: auth is enabled by the first)."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request

import pytest

from cairn import Client
from cairn import cli
from tests.harness import Stream, cluster_fixture, wait_for
from transport import messages as m
from transport.errors import AuthFailedError, AuthNotEnabledError, InvalidAuthTokenError, PermissionDeniedError

TTL_S = 2
DELAY_S = 0.4
PASSWORDS = {"root": "r00t-secret-pw", "alice": "alice-secret-pw", "bob": "bob-secret-pw", "mallory": "mallory-secret-pw"}
TOKENS: list[str] = []  # every token a test saw, for the log check

cluster = cluster_fixture("auth", http=True, auth_token_ttl_s=TTL_S, auth_failure_delay_ms=int(DELAY_S * 1000))


def client(cluster, user=None, **options) -> Client:
    if user is None:
        return Client(cluster.endpoints, timeout=10.0, **options)
    return Client(cluster.endpoints, timeout=10.0, user=user, password=PASSWORDS[user], **options)


def test_enable_auth_and_authenticate(cluster):
    with client(cluster) as anyone:
        with pytest.raises(AuthNotEnabledError):
            anyone.authenticate("root", "x")
        anyone.user_add("root", PASSWORDS["root"])
        anyone.role_add("root")
        anyone.user_grant_role("root", "root")
        for name in ("alice", "mallory"):
            anyone.user_add(name, PASSWORDS[name])
        anyone.role_add("reader")
        anyone.role_grant_permission("reader", m.PERM_READ, "a/", prefix=True)
        anyone.role_add("writer")
        anyone.role_grant_permission("writer", m.PERM_READWRITE, "c/", prefix=True)
        anyone.user_grant_role("alice", "reader")
        anyone.user_grant_role("alice", "writer")
        anyone.put("a/1", "one")
        anyone.put("b/1", "secret")
        anyone.auth_enable()
        assert anyone.auth_status().enabled
        with pytest.raises(PermissionDeniedError):  # no token: user "", etcd's permission denied
            anyone.get("a/1")
        with pytest.raises(PermissionDeniedError):
            anyone.put("a/2", "x")
    with client(cluster, "root") as root:
        assert root.user_get("alice").roles == ("reader", "writer")
        assert root.role_get("reader").perm == (m.Permission(m.PERM_READ, b"a/", b"a0"),)
        assert root.get("b/1").kvs[0].value == b"secret"
        TOKENS.append(root._calls.tokens[0])
    with client(cluster) as anyone:
        TOKENS.append(anyone.authenticate("alice", PASSWORDS["alice"]).token)


def test_a_reader_reads_its_range_only(cluster):
    with client(cluster, "alice") as alice:
        assert alice.get("a/1").kvs[0].value == b"one"
        assert alice.get("a/", prefix=True).count == 1
        with pytest.raises(PermissionDeniedError):
            alice.get("b/1")
        with pytest.raises(PermissionDeniedError):
            alice.get("a/", from_key=True)  # runs past a/
        with pytest.raises(PermissionDeniedError):
            alice.put("a/1", "overwritten")
        alice.put("c/1", "mine")
        with pytest.raises(PermissionDeniedError):  # one forbidden key refuses the whole txn
            alice.txn(success=[m.PutRequest(b"c/2", b"x"), m.PutRequest(b"b/2", b"x")])
        with pytest.raises(PermissionDeniedError):  # a compare is a read
            alice.txn(compare=[m.Compare(m.COMPARE_EQUAL, m.TARGET_VERSION, b"b/1", 1)], success=[m.PutRequest(b"c/3", b"x")])
        with pytest.raises(PermissionDeniedError):
            alice.compact(1)
        with pytest.raises(PermissionDeniedError):
            alice.user_list()
        assert alice.user_get("alice").roles == ("reader", "writer")  # itself: allowed, as etcd
    with client(cluster, "root") as root:
        assert root.get("c/2").count == 0 and root.get("a/1").kvs[0].value == b"one"
        assert root.get("c/1").kvs[0].value == b"mine"


def test_watch_outside_the_range_is_refused(cluster):
    with client(cluster, "alice") as alice:
        with pytest.raises(PermissionDeniedError):
            alice.watch("b/", prefix=True, timeout=5)
        with alice.watch("c/", prefix=True, timeout=5) as watch:
            alice.put("c/w", "1")
            events = next(response for response in watch if response.events).events
            assert events[0].kv.key == b"c/w"


def test_a_users_watch_keeps_flowing_past_its_credit_window(cluster):
    """A watch's keep-alives (which return its flow-control credit) and its
    cancel need no permission of their own: a user's watch delivers far more
    responses than one credit window (HubLimits.window_responses, 32)."""
    count = 100
    with client(cluster, "root") as root, client(cluster, "alice") as alice:
        with alice.watch("c/flow/", prefix=True, timeout=5) as watch:
            for i in range(count):
                root.put(f"c/flow/{i}", "x")
            seen = 0
            while seen < count and (response := watch.get(timeout=10)) is not None:
                seen += len(response.events)
        assert seen == count, f"the watch stalled after {seen} events"


def test_lease_revoke_needs_write_on_its_keys(cluster):
    with client(cluster, "root") as root, client(cluster, "alice") as alice:
        lease = alice.lease_grant(60).id  # a grant needs no key
        root.put("b/leased", "x", lease=lease)
        with pytest.raises(PermissionDeniedError):
            alice.lease_revoke(lease)
        root.delete("b/leased")
        alice.put("c/leased", "x", lease=lease)
        alice.lease_revoke(lease)
        assert root.get("c/leased").count == 0


def test_lock_service_runs_with_the_callers_permission(cluster):
    with client(cluster, "root") as root, client(cluster, "alice") as alice:
        lease = alice.lease_grant(60).id
        held = alice.lock("c/lock", lease, timeout=10)  # alice may read and write c/lock/...
        assert held.key.startswith(b"c/lock/")
        alice.unlock(held.key)
        with pytest.raises(PermissionDeniedError):
            alice.lock("b/lock", lease, timeout=10)
        root_lease = root.lease_grant(60).id
        root.unlock(root.lock("b/lock", root_lease, timeout=10).key)


def test_revoking_a_permission_takes_effect_on_an_open_token(cluster):
    with client(cluster, "root") as root, client(cluster, "alice") as alice:
        assert alice.get("a/1").count == 1
        token = alice._calls.tokens[0]
        root.role_revoke_permission("reader", "a/", prefix=True)
        with pytest.raises(PermissionDeniedError):
            alice.get("a/1")
        assert alice._calls.tokens[0] == token  # the same token: the check reads the current state
        root.role_grant_permission("reader", m.PERM_READ, "a/", prefix=True)
        assert alice.get("a/1").count == 1
        root.user_revoke_role("alice", "writer")
        with pytest.raises(PermissionDeniedError):
            alice.put("c/1", "again")
        root.user_grant_role("alice", "writer")
        alice.put("c/1", "again")


def test_tokens_expire_and_clients_authenticate_again(cluster):
    with client(cluster, "alice") as alice, client(cluster) as anyone:
        alice.get("a/1")
        token = alice._calls.tokens[0]
        TOKENS.append(token)
        with Client(cluster.endpoints, timeout=5.0, token=token) as fixed:
            assert fixed.get("a/1").count == 1  # a token alone is enough
            time.sleep(TTL_S + 0.5)
            with pytest.raises(InvalidAuthTokenError):
                fixed.get("a/1")
        assert alice.get("a/1").count == 1  # expired too, and renewed under the hood
        assert alice._calls.tokens[0] != token
        TOKENS.append(alice._calls.tokens[0])
        with pytest.raises(InvalidAuthTokenError):
            Client(cluster.endpoints, timeout=5.0, token="forged.1").get("a/1")
        with pytest.raises(PermissionDeniedError):
            anyone.get("a/1")


def test_failed_authentications_are_slowed(cluster):
    with client(cluster) as guesser:
        with pytest.raises(AuthFailedError):
            guesser.authenticate("mallory", "guess-1")
        with pytest.raises(AuthFailedError):  # inside the wait: refused, right password or not
            guesser.authenticate("mallory", PASSWORDS["mallory"])
        # N guesses take at least the doubling waits: every one inside a wait is refused unchecked
        started, checked = time.monotonic(), 0
        while time.monotonic() - started < 2.0:
            try:
                guesser.authenticate("mallory", f"guess-{checked}")
            except AuthFailedError:
                pass
            time.sleep(0.02)
        # after 1 + k failures the wait is DELAY_S * 2**k; in ~2 s at most 3 more guesses were checked
        with pytest.raises(AuthFailedError):  # so the right password is refused now...
            guesser.authenticate("mallory", PASSWORDS["mallory"])
    with client(cluster) as other_connection:
        # ...on another connection too (the user's count), and works once the wait is over
        token = wait_for(lambda: _try_authenticate(other_connection, "mallory"), "mallory's wait to end", 30)
        TOKENS.append(token)
    with client(cluster) as unknown:
        with pytest.raises(AuthFailedError):
            unknown.authenticate("nobody", "x")


def test_several_clients_logging_in_as_one_user_at_once_all_get_in(cluster):
    """An attempt made while another of the same user is being verified waits
    for it rather than being refused (several Patroni members share a user)."""
    from concurrent.futures import ThreadPoolExecutor

    def log_in(_):
        with client(cluster) as own:
            return own.authenticate("alice", PASSWORDS["alice"]).token

    with ThreadPoolExecutor(6) as pool:
        tokens = list(pool.map(log_in, range(6)))
    assert len(set(tokens)) == 6 and all(tokens)
    TOKENS.extend(tokens)


def _try_authenticate(c: Client, name: str):
    try:
        return c.authenticate(name, PASSWORDS[name]).token
    except AuthFailedError:
        time.sleep(0.2)
        return None


def _post(cluster, path: str, body: dict, token: str | None = None):
    request = urllib.request.Request(cluster.members["n1"].http_url + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json", **({"Authorization": token} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_gateway_authenticate_and_authorization_header(cluster):
    status, body = _post(cluster, "/v3/auth/authenticate", {"name": "alice", "password": PASSWORDS["alice"]})
    assert status == 200 and body["token"]
    token = body["token"]
    TOKENS.append(token)
    import base64

    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    status, body = _post(cluster, "/v3/kv/range", {"key": b64("a/1")}, token)
    assert status == 200 and base64.b64decode(body["kvs"][0]["value"]) == b"one"
    status, body = _post(cluster, "/v3/kv/range", {"key": b64("b/1")}, token)
    assert (status, body["code"], body["message"]) == (403, 7, "etcdserver: permission denied")
    status, body = _post(cluster, "/v3/kv/range", {"key": b64("a/1")}, "forged.7")
    assert (status, body["code"], body["message"]) == (401, 16, "etcdserver: invalid auth token")
    status, body = _post(cluster, "/v3/auth/authenticate", {"name": "alice", "password": "wrong"})
    assert (status, body["code"]) == (400, 3)
    # the failure holds back this caller (the gateway names it to the frontend) for a while
    status, body = _post(cluster, "/v3/auth/authenticate", {"name": "root", "password": PASSWORDS["root"]})
    assert (status, body["message"]) == (400, "etcdserver: authentication failed, invalid user ID or password")
    time.sleep(DELAY_S + 0.2)
    status, root = _post(cluster, "/v3/auth/authenticate", {"name": "root", "password": PASSWORDS["root"]})
    TOKENS.append(root["token"])
    status, body = _post(cluster, "/v3/auth/role/get", {"role": "reader"}, root["token"])
    assert status == 200 and body["perm"] == [{"permType": "READ", "key": b64("a/"), "range_end": b64("a0")}]
    status, body = _post(cluster, "/v3/auth/user/list", {}, root["token"])
    assert status == 200 and body["users"] == ["alice", "mallory", "root"]
    status, body = _post(cluster, "/v3/auth/status", {}, root["token"])
    assert status == 200 and body["enabled"] is True
    with urllib.request.urlopen(cluster.members["n1"].http_url + "/health", timeout=10) as response:
        assert json.loads(response.read()) == {"health": "true"}  # auth on: refused reads still count


def test_gateway_watch_runs_as_the_caller(cluster):
    """/v3/watch passes the Authorization token on: a watch outside the
    caller's range is created and canceled with etcd's reason, one inside
    it delivers events; with no token every watch is refused."""
    import base64

    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    token = _post(cluster, "/v3/auth/authenticate", {"name": "alice", "password": PASSWORDS["alice"]})[1]["token"]
    TOKENS.append(token)
    url = cluster.members["n1"].http_url
    refused = {"create_request": {"key": b64("b/"), "range_end": b64("b0")}}
    allowed = {"create_request": {"key": b64("c/gw"), "watch_id": "7"}}
    stream = Stream(url, "/v3/watch", (json.dumps(refused) + json.dumps(allowed)).encode(), {"Authorization": token})
    try:
        first = stream.next()["result"]
        assert first["created"] and first["canceled"] and first["cancel_reason"] == "etcdserver: permission denied"
        second = stream.next()["result"]
        assert second["created"] and second["watch_id"] == "7" and not second.get("canceled")
        with client(cluster, "root") as root:
            root.put("c/gw", "seen")
        event = stream.next()["result"]
        assert event["watch_id"] == "7" and event["events"][0]["kv"]["value"] == b64("seen")
    finally:
        stream.close()
    stream = Stream(url, "/v3/watch", json.dumps(allowed).encode())  # no token: user "", refused
    try:
        answer = stream.next()["result"]
        assert answer["canceled"] and answer["cancel_reason"] == "etcdserver: permission denied"
    finally:
        stream.close()


def test_lease_time_to_live_with_keys_needs_read_on_every_key(cluster):
    """etcd 3.5's checkLeaseTimeToLive: asking for a lease's keys needs read
    permission on each key attached; without keys, no permission is needed."""
    with client(cluster, "root") as root, client(cluster, "alice") as alice:
        lease = alice.lease_grant(60).id
        alice.put("c/ttl", "x", lease=lease)
        assert alice.lease_time_to_live(lease, keys=True).keys == (b"c/ttl",)
        root.put("b/ttl", "x", lease=lease)
        with pytest.raises(PermissionDeniedError):
            alice.lease_time_to_live(lease, keys=True)
        assert alice.lease_time_to_live(lease).ttl > 0
        assert root.lease_time_to_live(lease, keys=True).keys == (b"b/ttl", b"c/ttl")
        root.lease_revoke(lease)
        assert alice.lease_time_to_live(lease, keys=True).ttl == -1


def _ctl(capsys, *argv, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cairnctl(cluster, capsys, monkeypatch):
    endpoints = ["--endpoints", ",".join(cluster.endpoints)]
    as_root = endpoints + ["--user", f"root:{PASSWORDS['root']}"]
    assert _ctl(capsys, *as_root, "auth", "status")[1].startswith("Authentication Status: true\nAuthRevision: ")
    assert _ctl(capsys, *as_root, "user", "add", "bob", "--interactive=false", stdin=PASSWORDS["bob"] + "\n",
                monkeypatch=monkeypatch)[1] == "User bob created\n"
    assert _ctl(capsys, *as_root, "role", "add", "auditor")[1] == "Role auditor created\n"
    assert _ctl(capsys, *as_root, "role", "grant-permission", "auditor", "read", "logs/", "--prefix")[1] == "Role auditor updated\n"
    assert _ctl(capsys, *as_root, "role", "grant-permission", "auditor", "readwrite", "x", "xz")[1] == "Role auditor updated\n"
    assert _ctl(capsys, *as_root, "role", "grant-permission", "auditor", "write", "z/", "--from-key")[1] == "Role auditor updated\n"
    assert _ctl(capsys, *as_root, "role", "grant-permission", "auditor", "read", "one")[1] == "Role auditor updated\n"
    assert _ctl(capsys, *as_root, "user", "grant-role", "bob", "auditor")[1] == "Role auditor is granted to user bob\n"
    assert _ctl(capsys, *as_root, "user", "get", "bob")[1] == "User: bob\nRoles: auditor\n"
    assert _ctl(capsys, *as_root, "role", "get", "auditor")[1] == (
        "Role auditor\nKV Read:\n\t[logs/, logs0) (prefix logs/)\n\tone\n\t[x, xz)\n"
        "KV Write:\n\t[x, xz)\n\t[z/, <open ended>\n")
    assert _ctl(capsys, *as_root, "role", "list")[1] == "auditor\nreader\nroot\nwriter\n"
    # -w json: etcdctl's JSON of each response (Go's encoding/json: empty fields left out)
    as_json = lambda *argv: json.loads(_ctl(capsys, *as_root, "-w", "json", *argv)[1])  # noqa: E731
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    assert as_json("role", "get", "auditor")["perm"] == [
        {"key": b64(b"logs/"), "range_end": b64(b"logs0")}, {"key": b64(b"one")},
        {"permType": m.PERM_READWRITE, "key": b64(b"x"), "range_end": b64(b"xz")},
        {"permType": m.PERM_WRITE, "key": b64(b"z/"), "range_end": b64(b"\0")}]
    assert as_json("user", "get", "bob")["roles"] == ["auditor"]
    assert as_json("user", "list")["users"] == ["alice", "bob", "mallory", "root"]
    assert as_json("role", "list")["roles"] == ["auditor", "reader", "root", "writer"]
    status = as_json("auth", "status")
    assert status["enabled"] is True and status["authRevision"] > 0 and status["header"]["revision"] > 0
    assert set(as_json("role", "add", "scratch")) == {"header"}
    assert set(as_json("role", "delete", "scratch")) == {"header"}
    assert _ctl(capsys, *as_root, "user", "list")[1] == "alice\nbob\nmallory\nroot\n"
    assert _ctl(capsys, *as_root, "role", "revoke-permission", "auditor", "one")[1] == \
        "Permission of key one is revoked from role auditor\n"
    assert _ctl(capsys, *as_root, "role", "revoke-permission", "auditor", "logs/", "--prefix")[1] == \
        "Permission of range [logs/, logs0) is revoked from role auditor\n"
    monkeypatch.setenv("ETCDCTL_USER", "bob")
    monkeypatch.setenv("ETCDCTL_PASSWORD", PASSWORDS["bob"])
    code, out, err = _ctl(capsys, *endpoints, "get", "b/1")
    assert (code, err) == (1, "Error: etcdserver: permission denied\n")
    code, out, err = _ctl(capsys, *endpoints, "put", "x", "1")
    assert (code, out) == (0, "OK\n")
    monkeypatch.delenv("ETCDCTL_PASSWORD")
    code, out, err = _ctl(capsys, *endpoints, "--user", "bob:wrong", "get", "x")
    assert (code, err) == (1, "Error: etcdserver: authentication failed, invalid user ID or password\n")
    monkeypatch.delenv("ETCDCTL_USER")
    time.sleep(DELAY_S + 0.2)  # bob's failure just now holds bob back that long
    assert _ctl(capsys, *as_root, "user", "passwd", "bob", "--interactive=false", stdin="bob-new-pw\n",
                monkeypatch=monkeypatch)[1] == "Password updated\n"
    PASSWORDS["bob"] = "bob-new-pw"
    assert _ctl(capsys, *endpoints, "--user", "bob", "--password", "bob-new-pw", "get", "x")[1] == "x\n1\n"
    assert _ctl(capsys, *as_root, "user", "revoke-role", "bob", "auditor")[1] == "Role auditor is revoked from user bob\n"
    assert _ctl(capsys, *as_root, "role", "delete", "auditor")[1] == "Role auditor deleted\n"
    assert _ctl(capsys, *as_root, "user", "delete", "bob")[1] == "User bob deleted\n"


def test_auth_survives_a_restart(cluster):
    member = cluster.members["n1"]
    member.stop()
    member.start()
    cluster.wait_ready()
    with client(cluster, "alice") as alice, client(cluster) as anyone:
        assert alice.get("a/1").count == 1
        with pytest.raises(PermissionDeniedError):
            alice.get("b/1")
        with pytest.raises(PermissionDeniedError):
            anyone.get("a/1")
        assert anyone.auth_status().enabled
    with client(cluster, "root") as root:
        root.auth_disable()
        with client(cluster) as anyone:
            assert anyone.get("b/1").count == 1
        root.auth_enable()


def test_no_password_or_token_in_any_log_file(cluster):
    """Neither in the logs nor in the Raft log or keyspace (the log carries the
    hash, the frontend strips tokens from what it proposes)."""
    assert len(TOKENS) >= 5
    secrets = [password.encode() for password in PASSWORDS.values()] + [token.encode() for token in TOKENS]
    scanned = 0
    for directory, _, files in os.walk(cluster.directory):
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith((".ipc", ".lock")) or os.path.islink(path) or name == "internal.token":
                continue
            if os.path.getsize(path) > 256 * 1024 * 1024:
                continue
            with open(path, "rb") as handle:
                content = handle.read()
            scanned += 1
            for secret in secrets:
                assert secret not in content, f"{secret[:4]!r}... found in {path}"
    assert scanned >= 5
