"""The curl examples of etcd's gateway documentation (etcd-io/etcd
Documentation/dev-guide/api_grpc_gateway.md, v3.4), run with the real curl
binary against a 3-member cairn's JSON gateways, and the answers compared
with etcd 3.4's structurally: the same keys and the same values, except
cluster_id, member_id, raft_term, revisions and lease ids, which must be
decimal strings (and revisions the right ones relative to each other).

Beyond the documentation: the failure branch of a transaction with a nested
transaction, a prefix watch with prev_kv and a DELETE event, a watch from a
compacted revision, a lease session, the member list, error answers, and the
/v3beta alias. The etcd 3.4.23 answers these are modelled on are quoted in
the tests; every expectation here was also checked against a real 3-member
etcd 3.4.23, where all these tests pass. Watch streams are read from a
background `curl -N` one JSON document at a time (etcd writes one a line),
each with a deadline."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import subprocess
import threading
import time

import pytest

from tests.harness import cluster_fixture

CURL = "/usr/bin/curl"
pytestmark = pytest.mark.skipif(not os.access(CURL, os.X_OK), reason="needs the curl binary at /usr/bin/curl")

DEC = object()  # stands for "a decimal string": ids, terms and revisions differ from etcd's


def header():
    return {"cluster_id": DEC, "member_id": DEC, "revision": DEC, "raft_term": DEC}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def assert_like(actual, expected, path: str = "$") -> None:
    """actual has exactly expected's keys (recursively) and its values, DEC
    matching any decimal string."""
    if expected is DEC:
        assert isinstance(actual, str) and re.fullmatch(r"[0-9]+", actual), f"{path}: {actual!r} is no decimal string"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is no object"
        assert set(actual) == set(expected), (
            f"{path}: keys {sorted(actual)} != etcd's {sorted(expected)} in {json.dumps(actual)}"
        )
        for key in expected:
            assert_like(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_like(a, e, f"{path}[{i}]")
    else:
        assert actual == expected and type(actual) is type(expected), f"{path}: {actual!r} != etcd's {expected!r}"


def curl(url: str, body: str | None = None, method: str | None = "POST", timeout: float = 10.0) -> tuple[int, str]:
    """Run curl as the documentation does (-L -X POST -d BODY); (HTTP status, body text)."""
    args = [CURL, "-sS", "-L", "--max-time", str(timeout), "-w", "\n%{http_code}"]
    if method:
        args += ["-X", method]
    if body is not None:
        args += ["-d", body]
    args.append(url)
    done = subprocess.run(args, capture_output=True, timeout=timeout + 5)
    assert done.returncode == 0, f"curl {url} failed ({done.returncode}): {done.stderr.decode()}"
    text, _, code = done.stdout.decode().rpartition("\n")
    return int(code), text


def post(member, path: str, body, expect_status: int = 200):
    """POST body (a dict is sent as JSON) to a member's gateway; the parsed answer."""
    if not isinstance(body, str):
        body = json.dumps(body)
    status, text = curl(member.http_url + path, body)
    assert status == expect_status, f"POST {path} {body} -> {status} {text} (etcd answers {expect_status})"
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"POST {path} {body} -> {status}, not one JSON document: {text!r}") from None


def json_documents(text: str) -> list:
    decoder, documents, index = json.JSONDecoder(), [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return documents
        document, index = decoder.raw_decode(text, index)
        documents.append(document)


class CurlStream:
    """`curl -N URL -X POST -d BODY` in the background, as the documentation
    runs a watch; its output is read by a thread into a queue and taken one
    JSON document at a time, each with a deadline."""

    def __init__(self, url: str, body: str):
        self.process = subprocess.Popen([CURL, "-sS", "-N", url, "-X", "POST", "-d", body],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.chunks: queue.Queue[bytes] = queue.Queue()
        self.buffer = b""
        self.reader = threading.Thread(target=self._read, name="curl-stream", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        fd = self.process.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            self.chunks.put(chunk)
            if not chunk:
                return

    def next(self, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        decoder = json.JSONDecoder()
        while True:
            text = self.buffer.decode().lstrip()
            if text:
                try:
                    document, end = decoder.raw_decode(text)
                except ValueError:
                    pass
                else:
                    self.buffer = text[end:].encode()
                    return document
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no complete JSON document on the stream within {timeout}s; got {self.buffer!r}")
            try:
                chunk = self.chunks.get(timeout=remaining)
            except queue.Empty:
                continue
            if not chunk:
                self.process.wait(5)
                raise AssertionError(f"stream ended (curl exit {self.process.returncode}: "
                                     f"{self.process.stderr.read().decode()!r}); unparsed {self.buffer!r}")
            self.buffer += chunk

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join(5)
        self.process.stdout.close()
        self.process.stderr.close()


cluster = cluster_fixture("gateway_curl", members=3, http=True)


@pytest.fixture
def streams():
    """Background curl processes a test starts; each killed (by its Popen handle) at the end."""
    started = []

    def start(member, path: str, body: str) -> CurlStream:
        stream = CurlStream(member.http_url + path, body)
        started.append(stream)
        return stream

    yield start
    for stream in started:
        stream.close()


def check_header(cluster, answer_header: dict, member) -> int:
    """The header names the member that answered and the cluster; its revision."""
    assert answer_header["member_id"] == str(member.spec.id), f"member_id of {member.name}: {answer_header}"
    assert answer_header["cluster_id"] == str(cluster.config.id), answer_header
    assert int(answer_header["raft_term"]) >= 1, answer_header
    return int(answer_header["revision"])


def test_version(cluster):
    # etcd 3.4.23: GET /version -> {"etcdserver":"3.4.23","etcdcluster":"3.4.0"}
    for member in cluster.members.values():
        status, text = curl(member.http_url + "/version", method=None)
        assert status == 200, text
        answer = json.loads(text)
        assert set(answer) == {"etcdserver", "etcdcluster"}, answer
        assert re.fullmatch(r"3\.4\.\d+", answer["etcdserver"]), answer
        assert answer["etcdcluster"] == "3.4.0", answer


def test_documentation_walkthrough(cluster, streams):
    """Put, get, prefix get, watch, then the two transactions, as the documentation
    shows them (each step through a different member's gateway)."""
    n1, n2, n3 = cluster.members.values()

    # curl -L http://localhost:2379/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'
    put = post(n1, "/v3/kv/put", '{"key": "Zm9v", "value": "YmFy"}')
    assert_like(put, {"header": header()})
    created = check_header(cluster, put["header"], n1)

    # curl -L http://localhost:2379/v3/kv/range -X POST -d '{"key": "Zm9v"}'
    kv = {"key": "Zm9v", "create_revision": str(created), "mod_revision": str(created), "version": "1", "value": "YmFy"}
    got = post(n2, "/v3/kv/range", '{"key": "Zm9v"}')
    assert_like(got, {"header": header(), "kvs": [kv], "count": "1"})
    assert check_header(cluster, got["header"], n2) == created

    # get all keys prefixed with "foo"
    got = post(n3, "/v3/kv/range", '{"key": "Zm9v", "range_end": "Zm9w"}')
    assert_like(got, {"header": header(), "kvs": [kv], "count": "1"})
    assert check_header(cluster, got["header"], n3) == created

    # curl -N http://localhost:2379/v3/watch -X POST -d '{"create_request": {"key":"Zm9v"} }' &
    watch = streams(n2, "/v3/watch", '{"create_request": {"key":"Zm9v"} }')
    message = watch.next()
    assert_like(message, {"result": {"header": header(), "created": True}})
    assert check_header(cluster, message["result"]["header"], n2) == created

    # curl -L http://localhost:2379/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}' >/dev/null 2>&1
    put = post(n3, "/v3/kv/put", '{"key": "Zm9v", "value": "YmFy"}')
    modified = check_header(cluster, put["header"], n3)
    assert modified == created + 1
    message = watch.next()
    assert_like(message, {"result": {"header": header(), "events": [{"kv": {
        "key": "Zm9v", "create_revision": str(created), "mod_revision": str(modified), "version": "2", "value": "YmFy"}}]}})
    assert check_header(cluster, message["result"]["header"], n2) == modified

    # target CREATE (camelCase field names, as in the documentation)
    answer = post(n1, "/v3/kv/txn", json.dumps({
        "compare": [{"target": "CREATE", "key": "Zm9v", "createRevision": str(created)}],
        "success": [{"requestPut": {"key": "Zm9v", "value": "YmFy"}}]}))
    third = modified + 1
    assert_like(answer, {"header": header(), "succeeded": True,
                         "responses": [{"response_put": {"header": {"revision": str(third)}}}]})
    assert check_header(cluster, answer["header"], n1) == third
    message = watch.next()  # the watch sees the transaction's put too
    assert message["result"]["events"][0]["kv"]["mod_revision"] == str(third)

    # target VERSION
    answer = post(n2, "/v3/kv/txn", json.dumps({
        "compare": [{"version": "3", "result": "EQUAL", "target": "VERSION", "key": "Zm9v"}],
        "success": [{"requestRange": {"key": "Zm9v"}}]}))
    assert_like(answer, {"header": header(), "succeeded": True, "responses": [{"response_range": {
        "header": {"revision": str(third)},
        "kvs": [{"key": "Zm9v", "create_revision": str(created), "mod_revision": str(third), "version": "3",
                 "value": "YmFy"}],
        "count": "1"}}]})
    assert check_header(cluster, answer["header"], n2) == third


def test_txn_failure_branch_with_nested_txn(cluster):
    """etcd 3.4.23: a VERSION compare that fails, failure = [request_range,
    request_txn{success: [request_delete_range]}] ->
    {"header":{...,"revision":"7"},"responses":[{"response_range":{"header":{"revision":"6"},"kvs":[...],"count":"1"}},
     {"response_txn":{"header":{},"succeeded":true,"responses":[{"response_delete_range":{"header":{"revision":"7"},
     "deleted":"1"}}]}}]}   ("succeeded":false is omitted)"""
    n1, n2, _ = cluster.members.values()
    key = b64("txn/nested")
    put = post(n1, "/v3/kv/put", {"key": key, "value": b64("v1")})
    revision = check_header(cluster, put["header"], n1)
    answer = post(n2, "/v3/kv/txn", {
        "compare": [{"target": "VERSION", "key": key, "version": "5"}],
        "success": [{"request_put": {"key": key, "value": b64("never")}}],
        "failure": [{"request_range": {"key": key}},
                    {"request_txn": {"success": [{"request_delete_range": {"key": key}}]}}]})
    kv = {"key": key, "create_revision": str(revision), "mod_revision": str(revision), "version": "1", "value": b64("v1")}
    assert_like(answer, {"header": header(), "responses": [
        {"response_range": {"header": {"revision": str(revision)}, "kvs": [kv], "count": "1"}},
        {"response_txn": {"header": {}, "succeeded": True, "responses": [
            {"response_delete_range": {"header": {"revision": str(revision + 1)}, "deleted": "1"}}]}}]})
    assert check_header(cluster, answer["header"], n2) == revision + 1
    got = post(n1, "/v3/kv/range", {"key": key})
    assert_like(got, {"header": header()})  # no kvs, and count 0 is omitted


def test_range_end_selects_a_prefix(cluster):
    n1, n2, _ = cluster.members.values()
    revisions = {}
    for name in ("pre/a", "pre/b", "prf", "pra"):
        revisions[name] = check_header(cluster, post(n1, "/v3/kv/put", {"key": b64(name), "value": b64(name)})["header"], n1)
    got = post(n2, "/v3/kv/range", {"key": b64("pre/"), "range_end": b64("pre0")})
    assert_like(got, {"header": header(), "count": "2", "kvs": [
        {"key": b64(name), "create_revision": str(revisions[name]), "mod_revision": str(revisions[name]),
         "version": "1", "value": b64(name)} for name in ("pre/a", "pre/b")]})


def test_watch_range_with_prev_kv_and_delete(cluster, streams):
    """etcd 3.4.23: POST /v3/watch {"create_request":{"key":"d2E=","range_end":"d2I=","prev_kv":true}} ->
     {"result":{"header":{...,"revision":"7"},"created":true}}
     {"result":{"header":{...,"revision":"8"},"events":[{"kv":{"key":"d2E=","create_revision":"8","mod_revision":"8",
       "version":"1","value":"MQ=="}}]}}
     {"result":{"header":{...},"events":[{"type":"DELETE","kv":{"key":"d2E=","mod_revision":"10"},"prev_kv":{...}}]}}"""
    n1, n2, n3 = cluster.members.values()
    watch = streams(n1, "/v3/watch", json.dumps({"create_request": {"key": "d2E=", "range_end": "d2I=", "prev_kv": True}}))
    message = watch.next()
    assert_like(message, {"result": {"header": header(), "created": True}})
    start = check_header(cluster, message["result"]["header"], n1)

    first = check_header(cluster, post(n2, "/v3/kv/put", {"key": "d2E=", "value": "MQ=="})["header"], n2)  # wa=1
    assert first == start + 1
    outside = check_header(cluster, post(n2, "/v3/kv/put", {"key": "d2I=", "value": "MQ=="})["header"], n2)  # wb: not watched
    second = check_header(cluster, post(n3, "/v3/kv/put", {"key": "d2E=", "value": "Mg=="})["header"], n3)  # wa=2
    deleted_answer = post(n3, "/v3/kv/deleterange", {"key": "d2E="})
    assert_like(deleted_answer, {"header": header(), "deleted": "1"})
    deleted = check_header(cluster, deleted_answer["header"], n3)
    assert (first, outside, second, deleted) == (start + 1, start + 2, start + 3, start + 4)

    v1 = {"key": "d2E=", "create_revision": str(first), "mod_revision": str(first), "version": "1", "value": "MQ=="}
    v2 = {"key": "d2E=", "create_revision": str(first), "mod_revision": str(second), "version": "2", "value": "Mg=="}
    expected_events = [
        (first, {"kv": v1}),
        (second, {"kv": v2, "prev_kv": v1}),
        (deleted, {"type": "DELETE", "kv": {"key": "d2E=", "mod_revision": str(deleted)}, "prev_kv": v2}),
    ]
    received = []  # (header revision, event); etcd sends one message per revision here
    while len(received) < len(expected_events):
        message = watch.next()
        assert set(message) == {"result"} and set(message["result"]) == {"header", "events"}, message
        assert_like(message["result"]["header"], header())
        revision = check_header(cluster, message["result"]["header"], n1)
        received += [(revision, event) for event in message["result"]["events"]]
    assert len(received) == len(expected_events), received
    for (revision, event), (expected_revision, expected_event) in zip(received, expected_events):
        assert_like(event, expected_event)
        # etcd sends one message per revision here; cairn's watch actor may join quick
        # successive revisions into one (actors/watch_hub/pacing.py), whose header then
        # carries the latest: never older than its events, never past the last write
        assert expected_revision <= revision <= deleted, (revision, event)


def test_watch_from_a_compacted_revision_is_canceled(cluster, streams):
    """etcd 3.4.23: a watch whose start_revision was compacted is created, then
    {"result":{"header":{"cluster_id":"...","member_id":"...","raft_term":"2"},"canceled":true,"compact_revision":"3"}}"""
    n1, n2, _ = cluster.members.values()
    key = b64("compacted/k")
    old = check_header(cluster, post(n1, "/v3/kv/put", {"key": key, "value": b64("1")})["header"], n1)
    latest = check_header(cluster, post(n1, "/v3/kv/put", {"key": key, "value": b64("2")})["header"], n1)
    compacted = post(n1, "/v3/kv/compaction", {"revision": str(latest)})
    assert_like(compacted, {"header": header()})
    watch = streams(n2, "/v3/watch", json.dumps({"create_request": {"key": key, "start_revision": str(old)}}))
    assert_like(watch.next(), {"result": {"header": header(), "created": True}})
    message = watch.next()
    assert set(message) == {"result"}, message
    result = message["result"]
    assert_like({k: v for k, v in result.items() if k != "header"}, {"canceled": True, "compact_revision": str(latest)})
    assert result["header"]["member_id"] == str(n2.spec.id) and result["header"]["cluster_id"] == str(cluster.config.id)
    # reading the compacted revision is an error too (etcd: 400, code 11, "mvcc: required revision has been compacted")
    error = post(n2, "/v3/kv/range", {"key": key, "revision": str(old)}, expect_status=400)
    assert_like(error, {"error": "etcdserver: mvcc: required revision has been compacted",
                        "message": "etcdserver: mvcc: required revision has been compacted", "code": 11})
    # etcd leaves the cancelation's header revision at 0, so it is omitted
    assert_like(result["header"], {"cluster_id": DEC, "member_id": DEC, "raft_term": DEC})


def test_lease_session(cluster):
    """grant, put with the lease, keepalive, timetolive with keys, revoke; then
    keepalive, timetolive and revoke of the revoked lease, as etcd 3.4.23 answers:
     grant {"TTL":"30"} -> {"header":{...},"ID":"9041998788584495122","TTL":"30"}
     keepalive {"ID":"99"} -> {"result":{"header":{...},"ID":"99","TTL":"30"}}; unknown -> {"result":{"header":{...},"ID":"98"}}
     timetolive {"ID":"99","keys":true} -> {"header":{...},"ID":"99","TTL":"29","grantedTTL":"30","keys":[...]};
       unknown -> {"header":...,"ID":"98","TTL":"-1"}
     revoke unknown -> 404 {"error":"etcdserver: requested lease not found","message":"...","code":5}
    Every answer's header is the answering member's, on the leader and on a
    follower alike (etcd fills it locally after forwarding to the leader);
    those are checked at the end, so that a wrong member_id does not hide the rest."""
    leader = cluster.leader()
    follower, other = [m for m in cluster.members.values() if m is not leader]
    answered = []  # (what, header, member that answered)

    def keepalive(member, lease):
        status, text = curl(member.http_url + "/v3/lease/keepalive", json.dumps({"ID": lease}))
        assert status == 200, text
        documents = json_documents(text)
        assert len(documents) == 1, f"keepalive with one request -> {text!r}"
        answered.append((f"keepalive via {member.name}", documents[0]["result"]["header"], member))
        return documents[0]

    granted = post(follower, "/v3/lease/grant", {"TTL": "30"})
    assert_like(granted, {"header": header(), "ID": DEC, "TTL": "30"})
    answered.append(("grant", granted["header"], follower))
    lease = granted["ID"]
    assert int(lease) > 0

    for member in (leader, follower):
        leases = post(member, "/v3/lease/leases", {})
        assert_like(leases, {"header": header(), "leases": [{"ID": DEC}] * len(leases.get("leases", []))})
        assert {"ID": lease} in leases["leases"]
        answered.append((f"leases via {member.name}", leases["header"], member))

    key = b64("lease/session")
    put = post(other, "/v3/kv/put", {"key": key, "value": b64("alive"), "lease": lease})
    revision = check_header(cluster, put["header"], other)
    got = post(follower, "/v3/kv/range", {"key": key})
    assert_like(got, {"header": header(), "count": "1", "kvs": [{
        "key": key, "create_revision": str(revision), "mod_revision": str(revision), "version": "1",
        "value": b64("alive"), "lease": lease}]})

    for member in (follower, leader):
        assert_like(keepalive(member, lease), {"result": {"header": header(), "ID": lease, "TTL": "30"}})
        alive = post(member, "/v3/lease/timetolive", {"ID": lease, "keys": True})
        assert_like(alive, {"header": header(), "ID": lease, "TTL": DEC, "grantedTTL": "30", "keys": [key]})
        assert 0 < int(alive["TTL"]) <= 30
        answered.append((f"timetolive via {member.name}", alive["header"], member))

    revoked = post(follower, "/v3/lease/revoke", {"ID": lease})
    assert_like(revoked, {"header": header()})
    answered.append(("revoke", revoked["header"], follower))
    assert int(revoked["header"]["revision"]) == revision + 1  # the key's deletion
    assert_like(post(other, "/v3/kv/range", {"key": key}), {"header": header()})

    for member in (follower, leader):
        assert_like(keepalive(member, lease), {"result": {"header": header(), "ID": lease}})  # no TTL: the lease is gone
        dead = post(member, "/v3/lease/timetolive", {"ID": lease, "keys": True})
        assert_like(dead, {"header": header(), "ID": lease, "TTL": "-1"})
        answered.append((f"timetolive (revoked) via {member.name}", dead["header"], member))
        error = post(member, "/v3/lease/revoke", {"ID": lease}, expect_status=404)
        assert_like(error, {"error": "etcdserver: requested lease not found",
                            "message": "etcdserver: requested lease not found", "code": 5})
        assert {"ID": lease} not in post(member, "/v3/lease/leases", {}).get("leases", [])

    names = {str(m.spec.id): m.name for m in cluster.members.values()}
    wrong = [f"{what}: answered by {member.name} but member_id is {names.get(h['member_id'], h['member_id'])}"
             for what, h, member in answered if h["member_id"] != str(member.spec.id)]
    assert not wrong, "headers naming another member than the one answering:\n" + "\n".join(wrong)
    for _, h, _ in answered:
        assert h["cluster_id"] == str(cluster.config.id), h


def test_member_list(cluster):
    """etcd 3.4.23: {"header":{"cluster_id":"...","member_id":"...","raft_term":"2"},"members":[{"ID":"159...",
    "name":"ref","peerURLs":[...],"clientURLs":["http://127.0.0.1:12379"]}]}: clientURLs are the gateways' URLs."""
    expected = {str(m.spec.id): m for m in cluster.members.values()}
    for member in cluster.members.values():
        answer = post(member, "/v3/cluster/member/list", "{}")
        assert set(answer) == {"header", "members"}, answer
        assert answer["header"]["member_id"] == str(member.spec.id), answer["header"]
        assert answer["header"]["cluster_id"] == str(cluster.config.id), answer["header"]
        assert len(answer["members"]) == 3, answer
        for entry in answer["members"]:
            assert set(entry) == {"ID", "name", "peerURLs", "clientURLs"}, entry
            listed = expected[entry["ID"]]
            assert entry["name"] == listed.name, entry
            assert entry["clientURLs"] == [listed.http_url], entry
            assert entry["peerURLs"] and all(isinstance(url, str) for url in entry["peerURLs"]), entry
        assert sorted(entry["ID"] for entry in answer["members"]) == sorted(expected)
        # etcd's cluster RPCs leave the header's revision at 0, so it is omitted
        assert_like(answer["header"], {"cluster_id": DEC, "member_id": DEC, "raft_term": DEC})


def test_errors_answer_400_and_the_gateway_keeps_serving(cluster):
    """etcd 3.4.23: malformed JSON -> 400 code 3; bad base64 -> 400
    {"error":"illegal base64 data at input byte 4","message":"...","code":3};
    a wrong type -> 400 code 3; authenticate without auth -> 412 code 9."""
    n1, n2, _ = cluster.members.values()
    for body in ('{"key": "Zm9v"', "not json", '{"key": 5}', '{"key": "Zm9v!!!!"}', '{"key": ["Zm9v"]}'):
        error = post(n1, "/v3/kv/range", body, expect_status=400)
        assert_like(error, {"error": error.get("error"), "message": error.get("error"), "code": 3})
        assert isinstance(error["error"], str) and error["error"], error
    for body in ('{"key": "Zm9v", "value": "YmFy"', '{"key": "Zm9v", "value": 7}'):
        post(n2, "/v3/kv/put", body, expect_status=400)
    error = post(n1, "/v3/auth/authenticate", {"name": "root", "password": "pass"}, expect_status=412)
    assert_like(error, {"error": "etcdserver: authentication is not enabled",
                        "message": "etcdserver: authentication is not enabled", "code": 9})
    # still serving, on the same members
    put = post(n1, "/v3/kv/put", {"key": b64("after/errors"), "value": b64("ok")})
    got = post(n2, "/v3/kv/range", {"key": b64("after/errors")})
    assert got["kvs"][0]["value"] == b64("ok")
    assert got["kvs"][0]["mod_revision"] == put["header"]["revision"]


def test_bad_base64_error_names_the_byte_as_go_does(cluster):
    # etcd decodes bytes fields with Go's encoding/base64: "Zm9v!!!!" -> "illegal base64 data at input byte 4".
    # cairn says the same after naming the field ("RangeRequest.key: illegal base64 ...").
    n1 = next(iter(cluster.members.values()))
    error = post(n1, "/v3/kv/range", '{"key": "Zm9v!!!!"}', expect_status=400)
    assert error["code"] == 3 and error["error"] == error["message"]
    assert error["message"].endswith("illegal base64 data at input byte 4")
    assert error["message"] == "RangeRequest.key: illegal base64 data at input byte 4"


def test_v3beta_is_an_alias(cluster):
    n1, n2, n3 = cluster.members.values()
    key = b64("beta/k")
    put = post(n1, "/v3beta/kv/put", {"key": key, "value": "YmFy"})
    assert_like(put, {"header": header()})
    revision = check_header(cluster, put["header"], n1)
    for member in (n2, n3):
        got = post(member, "/v3beta/kv/range", {"key": key})
        assert_like(got, {"header": header(), "count": "1", "kvs": [
            {"key": key, "create_revision": str(revision), "mod_revision": str(revision), "version": "1",
             "value": "YmFy"}]})
        assert check_header(cluster, got["header"], member) == revision
