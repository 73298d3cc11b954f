"""The HTTP gateway actor on a real 3-member cluster: routing through the member's
frontend, streams, bad input, and the actor's life under the supervisor.
(etcd's curl examples: test_gateway_curl.py; Patroni: test_gateway_patroni.py.)"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import threading
import queue
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.harness import Cluster, Stream, cluster_fixture, wait_for


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(url: str, path: str, body, timeout: float = 15.0) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


cluster = cluster_fixture("gateway", members=3, http=True)


def urls(cluster) -> list[str]:
    return [member.http_url for member in cluster.members.values()]


def test_a_write_through_one_gateway_is_read_through_every_other(cluster):
    u1, u2, u3 = urls(cluster)
    status, put = post(u2, "/v3/kv/put", {"key": b64(b"gw/route"), "value": b64(b"v1")})
    assert status == 200
    revision = int(put["header"]["revision"])
    for url in (u1, u2, u3):
        status, got = post(url, "/v3/kv/range", {"key": b64(b"gw/route")})  # linearizable by default
        assert status == 200
        assert got["kvs"][0]["value"] == b64(b"v1")
        assert got["kvs"][0]["mod_revision"] == str(revision)
    member_ids = {post(url, "/v3/maintenance/status", {})[1]["header"]["member_id"] for url in (u1, u2, u3)}
    assert len(member_ids) == 3  # each gateway is its own member's


def test_bad_input_gets_a_clear_400_and_the_gateway_keeps_serving(cluster):
    url = urls(cluster)[0]
    pid = cluster.members["n1"].actor_pids()["gateway"]
    cases = [
        (b'{"key": "Zm9v", "value":', "malformed JSON"),
        (b'{"key": "Zm9v!"}', "illegal base64 data at input byte 4"),
        (b'{"key": 5}', "expected a base64 string"),
        (b'{"key": "Zm9v", "lease": "abc"}', "expected an integer"),
        (b'{"key": "Zm9v", "valeu": "YmFy"}', "unknown field 'valeu'"),
        (b'["Zm9v"]', "expected a JSON object"),
        (b'\xff\xfe', "not UTF-8"),
        (b'{"key": ""}', "etcdserver: key is not provided"),
    ]
    for body, problem in cases:
        status, answer = post(url, "/v3/kv/put", body)
        assert status == 400, (body, answer)
        assert answer["code"] == 3 and problem in answer["message"] and answer["error"] == answer["message"]
    too_large = json.dumps({"key": b64(b"big"), "value": b64(b"x" * (3 * 1024 * 1024))}).encode()
    status, answer = post(url, "/v3/kv/put", too_large)
    assert (status, answer["code"], answer["message"]) == (400, 3, "etcdserver: request is too large")
    status, answer = post(url, "/v3/kv/range", {"key": b64(b"gw/none"), "revision": "100000000"})
    assert (status, answer["code"]) == (400, 11)
    assert answer["message"] == "etcdserver: mvcc: required revision is a future revision"
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url + "/v3/kv/nosuch", data=b"{}", timeout=10)
    assert raised.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url + "/v3/kv/range", timeout=10)  # GET on a POST call
    assert raised.value.code == 405
    # still serving, and the same process: nothing crashed
    assert post(url, "/v3/kv/put", {"key": b64(b"gw/after"), "value": b64(b"ok")})[0] == 200
    assert cluster.members["n1"].actor_pids()["gateway"] == pid


def test_empty_body_and_v3beta_alias(cluster):
    url = urls(cluster)[1]
    post(url, "/v3/kv/put", {"key": b64(b"gw/alias"), "value": b64(b"a")})
    status, answer = post(url, "/v3beta/kv/range", {"key": b64(b"gw/alias")})
    assert status == 200 and answer["kvs"][0]["value"] == b64(b"a")
    status, answer = post(url, "/v3/lease/leases", b"")
    assert status == 200 and "header" in answer
    with urllib.request.urlopen(url + "/version", timeout=10) as response:
        assert json.loads(response.read()) == {"etcdserver": "3.4.0", "etcdcluster": "3.4.0"}
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        assert json.loads(response.read()) == {"health": "true"}


def test_keepalive_answers_each_request_object_of_the_body(cluster):
    url = urls(cluster)[2]
    status, grant = post(url, "/v3/lease/grant", {"TTL": 30})
    assert status == 200
    lease = grant["ID"]
    body = json.dumps({"ID": lease}).encode() + json.dumps({"ID": "12345"}).encode() + json.dumps({"ID": lease}).encode()
    stream = Stream(url, "/v3/lease/keepalive", body)
    answers = [stream.next() for _ in range(3)]
    assert stream.next() is None  # the stream ends with the body's requests
    assert [a["result"].get("TTL") for a in answers] == ["30", None, "30"]
    assert [a["result"]["ID"] for a in answers] == [lease, "12345", lease]


def test_watch_stream_create_events_cancel_and_compaction(cluster):
    u1, u2, _ = urls(cluster)
    prefix = b"gw/watch/"
    first = post(u1, "/v3/kv/put", {"key": b64(prefix + b"a"), "value": b64(b"0")})[1]
    start = int(first["header"]["revision"])
    body = (json.dumps({"create_request": {"key": b64(prefix), "range_end": b64(b"gw/watch0"), "prev_kv": True}})
            + json.dumps({"create_request": {"key": b64(prefix + b"a"), "start_revision": str(start)}})).encode()
    stream = Stream(u1, "/v3/watch", body)
    try:
        created = [stream.next(), stream.next()]
        assert all(c["result"]["created"] for c in created)
        assert "watch_id" not in created[0]["result"] and created[1]["result"]["watch_id"] == "1"
        # watch 1 starts in the past: it replays the first put
        replay = stream.next()["result"]
        assert replay["watch_id"] == "1" and replay["events"][0]["kv"]["mod_revision"] == str(start)
        put = post(u2, "/v3/kv/put", {"key": b64(prefix + b"a"), "value": b64(b"1")})[1]
        delete = post(u2, "/v3/kv/deleterange", {"key": b64(prefix + b"a")})[1]
        seen = {}
        while len(seen) < 4:
            result = stream.next()["result"]
            for event in result["events"]:
                seen[(result.get("watch_id", "0"), event.get("type", "PUT"))] = (result, event)
        result, event = seen[("0", "PUT")]
        # the put's own revision, or the delete's when one message carries both (the
        # watch actor joins quick successive revisions: actors/watch_hub/pacing.py)
        assert int(put["header"]["revision"]) <= int(result["header"]["revision"]) <= int(delete["header"]["revision"])
        assert event["kv"]["mod_revision"] == put["header"]["revision"]
        assert event["kv"]["value"] == b64(b"1") and event["prev_kv"]["value"] == b64(b"0")
        result, event = seen[("0", "DELETE")]
        assert event["kv"] == {"key": b64(prefix + b"a"), "mod_revision": delete["header"]["revision"]}
        assert "prev_kv" not in seen[("1", "DELETE")][1]
    finally:
        stream.close()
    # a start revision behind compaction: created, then canceled with the compact revision
    post(u1, "/v3/kv/compaction", {"revision": delete["header"]["revision"]})
    # the watch goes to another member: once it has applied the compaction too
    # (a watch that races the compaction's arrival is another test's subject)
    wait_for(lambda: post(u2, "/v3/kv/range", {"key": b64(prefix), "revision": "1", "serializable": True})[0] == 400,
             "the second member to apply the compaction")
    stream = Stream(u2, "/v3/watch", json.dumps({"create_request": {"key": b64(prefix), "start_revision": "1"}}).encode())
    try:
        assert stream.next()["result"]["created"] is True
        canceled = stream.next()["result"]
        assert canceled["canceled"] is True and canceled["compact_revision"] == delete["header"]["revision"]
    finally:
        stream.close()


def test_a_cancel_request_ends_one_watch_and_the_stream_stays_open(cluster):
    url = urls(cluster)[0]
    body = (json.dumps({"create_request": {"key": b64(b"gw/c")}}) + json.dumps({"cancel_request": {"watch_id": "0"}})
            + json.dumps({"create_request": {"key": b64(b"gw/d")}})).encode()
    stream = Stream(url, "/v3/watch", body)
    try:
        assert stream.next()["result"]["created"] is True
        assert stream.next()["result"]["canceled"] is True
        second = stream.next()["result"]
        assert second["created"] is True and second["watch_id"] == "1"
        post(url, "/v3/kv/put", {"key": b64(b"gw/c"), "value": b64(b"x")})
        post(url, "/v3/kv/put", {"key": b64(b"gw/d"), "value": b64(b"y")})
        event = stream.next()["result"]
        assert event["watch_id"] == "1" and event["events"][0]["kv"]["key"] == b64(b"gw/d")
    finally:
        stream.close()


def test_a_watch_body_kept_open_takes_requests_as_they_come(cluster):
    """As with etcd's gateway (curl -N ... -d @-): the body is read as it arrives."""
    url = urls(cluster)[2]
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.putrequest("POST", "/v3/watch")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()

    def send(text: str) -> None:
        data = text.encode()
        connection.send(b"%x\r\n%s\r\n" % (len(data), data))

    send(json.dumps({"create_request": {"key": b64(b"gw/live")}}))
    response = connection.getresponse()
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for line in response:
                if line.strip():
                    lines.put(json.loads(line))
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass

    threading.Thread(target=read, daemon=True).start()
    try:
        assert lines.get(timeout=10)["result"]["created"] is True
        send(json.dumps({"create_request": {"key": b64(b"gw/live2")}}))
        second = lines.get(timeout=10)["result"]
        assert second["created"] is True and second["watch_id"] == "1"
        send(json.dumps({"cancel_request": {"watch_id": "0"}}))
        assert lines.get(timeout=10)["result"]["canceled"] is True
        put = post(url, "/v3/kv/put", {"key": b64(b"gw/live2"), "value": b64(b"x")})[1]
        event = lines.get(timeout=10)["result"]
        assert event["watch_id"] == "1" and event["header"]["revision"] == put["header"]["revision"]
        send('{"create_request": ')  # half an object, then a bad end: an error line in the stream
        send('[}')
        connection.send(b"0\r\n\r\n")
        error = lines.get(timeout=10)
        assert error["error"]["grpc_code"] == 3 and "malformed JSON" in error["error"]["message"]
    finally:
        connection.sock.shutdown(2)
        connection.close()


def test_many_watch_streams_at_once_each_get_their_events(cluster):
    """No thread is parked per watch: 40 streams on one gateway all deliver."""
    url = urls(cluster)[1]
    streams = [Stream(url, "/v3/watch", json.dumps({"create_request": {"key": b64(b"gw/many")}}).encode()) for _ in range(40)]
    try:
        for stream in streams:
            assert stream.next()["result"]["created"] is True
        put = post(url, "/v3/kv/put", {"key": b64(b"gw/many"), "value": b64(b"all")})[1]
        for stream in streams:
            assert stream.next()["result"]["header"]["revision"] == put["header"]["revision"]
    finally:
        for stream in streams:
            stream.close()
    assert post(url, "/v3/kv/range", {"key": b64(b"gw/many")})[0] == 200


def test_lock_and_election_services_over_http(cluster):
    """etcd's v3lock and v3election gateways: a lock held is refused to another
    session until unlocked; a campaign wins, proclaims, and resigns."""
    u1, u2, _ = urls(cluster)
    lease_a = post(u1, "/v3/lease/grant", {"TTL": 30})[1]["ID"]
    lease_b = post(u2, "/v3/lease/grant", {"TTL": 30})[1]["ID"]
    status, held = post(u1, "/v3/lock/lock", {"name": b64(b"gw-lock"), "lease": lease_a})
    assert status == 200 and base64.b64decode(held["key"]).startswith(b"gw-lock/")
    waiter: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: waiter.put(post(u2, "/v3/lock/lock", {"name": b64(b"gw-lock"), "lease": lease_b},
                                                    timeout=60)), daemon=True).start()
    with pytest.raises(queue.Empty):
        waiter.get(timeout=1.0)  # held by the first session: the second waits
    assert post(u1, "/v3/lock/unlock", {"key": held["key"]})[0] == 200
    status, second = waiter.get(timeout=20)
    assert status == 200 and second["key"] != held["key"]
    post(u2, "/v3/lock/unlock", {"key": second["key"]})

    status, won = post(u1, "/v3/election/campaign", {"name": b64(b"gw-elect"), "lease": lease_a, "value": b64(b"one")})
    assert status == 200 and won["leader"]["lease"] == lease_a
    assert post(u2, "/v3/election/proclaim", {"leader": won["leader"], "value": b64(b"two")})[0] == 200
    status, leader = post(u2, "/v3/election/leader", {"name": b64(b"gw-elect")})
    assert status == 200 and leader["kv"]["value"] == b64(b"two")
    assert post(u1, "/v3/election/resign", {"leader": won["leader"]})[0] == 200
    status, gone = post(u1, "/v3/election/proclaim", {"leader": won["leader"], "value": b64(b"three")})
    assert status == 412 and gone["code"] == 9
    status, alarms = post(u1, "/v3/maintenance/alarm", {"action": "GET"})
    assert status == 200 and "alarms" not in alarms


def test_member_list_points_at_the_gateways(cluster):
    status, answer = post(urls(cluster)[0], "/v3/cluster/member/list", {})
    assert status == 200
    by_name = {member["name"]: member for member in answer["members"]}
    assert {name: m["clientURLs"] for name, m in by_name.items()} == {
        name: [member.http_url] for name, member in cluster.members.items()}
    assert {m["ID"] for m in by_name.values()} == {str(member.spec.id) for member in cluster.members.values()}


def test_a_killed_gateway_is_restarted_by_its_supervisor(cluster):
    member = cluster.members["n3"]
    pid = member.actor_pids()["gateway"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while member.actor_pids().get("gateway") in (None, pid):
        assert time.monotonic() < deadline, "gateway not restarted"
        time.sleep(0.05)
    member.wait_http()
    status, answer = post(member.http_url, "/v3/kv/put", {"key": b64(b"gw/restarted"), "value": b64(b"yes")})
    assert status == 200
    restarts = [r for r in member_supervisor_log(member) if r.get("event") == "actor_died" and r.get("actor_name") == "gateway"]
    assert restarts and restarts[-1]["pid"] == pid


def member_supervisor_log(member) -> list[dict]:
    return member.log_records("supervisor")


def test_no_leader_is_unavailable_code_14(tmp_path):
    with Cluster(tmp_path, members=3, http=True, no_leader_wait_ms=300, request_timeout_ms=1500) as cluster:
        n1, n2, n3 = cluster.members.values()
        n2.stop()
        n3.stop()
        status, answer = post(n1.http_url, "/v3/kv/put", {"key": b64(b"k"), "value": b64(b"v")}, timeout=30)
        assert status == 503 and answer["code"] == 14, answer
        # the gateway still answers what needs no quorum
        assert post(n1.http_url, "/v3/kv/range", {"key": b64(b"k"), "serializable": True})[0] == 200


def test_a_watch_stream_and_writes_survive_the_members_frontend_restarting(cluster):
    """The gateway is a client of its member's frontend: when that frontend is
    killed and restarted by the supervisor, reads wait for it and the watch
    resumes where it was, with nothing lost. (A write sent into the dying
    frontend may be answered "outcome unknown", 503 code 14, as the client
    library's IndeterminateError: so the write here follows a read that
    proves the new frontend is there.)"""
    member = cluster.members["n2"]
    url = member.http_url
    stream = Stream(url, "/v3/watch", json.dumps({"create_request": {"key": b64(b"gw/resume")}}).encode())
    try:
        assert stream.next()["result"]["created"] is True
        first = post(url, "/v3/kv/put", {"key": b64(b"gw/resume"), "value": b64(b"1")})[1]
        assert stream.next()["result"]["header"]["revision"] == first["header"]["revision"]
        os.kill(member.actor_pids()["frontend"], signal.SIGKILL)
        status, answer = post(url, "/v3/kv/range", {"key": b64(b"gw/resume")}, timeout=30)  # reads are retried
        assert status == 200, answer
        status, second = post(url, "/v3/kv/put", {"key": b64(b"gw/resume"), "value": b64(b"2")}, timeout=30)
        assert status == 200, second
        result = stream.next(timeout=20)["result"]
        assert result["header"]["revision"] == second["header"]["revision"]
        assert result["events"][0]["kv"]["value"] == b64(b"2")
    finally:
        stream.close()
