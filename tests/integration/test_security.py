"""Transport security (issue 16): CURVE on the client and peer doors of a member.

One secured 3-member cluster for the module (security mode curve, clients
restricted to the harness's client key, HTTPS and gRPC over TLS with client
certificates required on the gateways, which reach their frontend over CURVE). A client without the right key, or
holding a wrong key for the member, cannot connect, learns nothing, and is told
why at once; the member logs it. A peer with an unknown key is refused. No
secret key ever reaches a log line.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import ssl
import urllib.error
import urllib.request
import stat
import subprocess
import sys
import time

import grpc
import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from cairn import Client, cli
from actors.etcdpb import rpc_pb2 as pb
from tests.harness import REPO, Cluster, tls_client_context
from transport import codec, curve
from transport.errors import AuthenticationFailed
from transport.messages import RaftBatch

FAST_S = 2.0  # "at once": well under the call's timeout (10 s)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("secure"), members=3, secure=True, restrict_clients=True, http=True, grpc=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def member_key(cluster, name="n1") -> str:
    return cluster.config.member(name).public_key


def log_lines(cluster, event: str, name="n1") -> list[dict]:
    member = cluster.members[name]
    return [r for actor in ("frontend", "raft") for r in member.log_records(actor) if r.get("event") == event]


def wait_for_log(cluster, event: str, name="n1", timeout=5.0, **fields) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for record in log_lines(cluster, event, name):
            if all(record.get(k) == v for k, v in fields.items()):
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no {event} {fields} in the logs of {name}")
        time.sleep(0.05)


def failing_call(endpoint, **options) -> tuple[AuthenticationFailed, float]:
    """The AuthenticationFailed a get raises, and how long it took."""
    started = time.monotonic()
    with Client([endpoint], timeout=10.0, **options) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            client.get(b"secret")
    return caught.value, time.monotonic() - started


def test_a_client_with_the_keys_is_served_and_peers_replicate(cluster):
    with cluster.client() as client:
        client.put(b"secret", b"value")
        assert client.get(b"secret").kvs[0].value == b"value"
        # a write to each member goes through the leader over the peers' CURVE links
        for endpoint in cluster.endpoints:
            assert client.get(b"secret", serializable=False, timeout=5).kvs
    for member in cluster.members.values():
        with Client([member.endpoint], timeout=5, **cluster.client_options()) as single:
            assert single.get(b"secret", serializable=True).kvs[0].value == b"value"


def test_a_plaintext_client_fails_fast_and_the_member_logs_it(cluster):
    error, took = failing_call(cluster.endpoints[0])
    assert took < FAST_S
    assert "requires CURVE" in error.message
    wait_for_log(cluster, "handshake_failed", door="client")


def test_a_wrong_server_key_fails_fast_and_learns_nothing(cluster):
    error, took = failing_call(cluster.endpoints[0], server_public_keys=member_key(cluster, "n2"),
                               client_key=cluster.client_key)
    assert took < FAST_S
    assert "did not match" in error.message
    wait_for_log(cluster, "handshake_failed", door="client",
                 reason="the client's CURVE hello did not decrypt: it holds a wrong public key for this member")


def test_an_unknown_client_key_is_refused_and_learns_nothing(cluster, tmp_path):
    stranger = curve.write_key_pair(str(tmp_path / "stranger.key"))
    error, took = failing_call(cluster.endpoints[0], server_public_keys=member_key(cluster), client_key=str(tmp_path / "stranger.key"))
    assert took < FAST_S
    assert "refused this client's key" in error.message and stranger.public.decode() in error.message
    assert stranger.secret.decode() not in error.message
    wait_for_log(cluster, "client_key_refused", public_key=stranger.public.decode())
    # a write it attempted never happened
    with Client([cluster.endpoints[0]], timeout=10.0, server_public_keys=member_key(cluster),
                client_key=str(tmp_path / "stranger.key")) as client:
        with pytest.raises(AuthenticationFailed):
            client.put(b"stranger", b"was here")
    with cluster.client() as client:
        assert client.get(b"stranger").kvs == ()


def test_a_peer_with_an_unknown_key_is_refused(cluster):
    n1 = cluster.config.member("n1")
    context = zmq.Context()
    try:
        for keys in (curve.KeyPair.generate(), curve.read_secret_key(cluster.client_key)):  # a stranger; a client's key
            socket = context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.IMMEDIATE, 1)
            curve.make_client(socket, keys, n1.public_key.encode())
            monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            socket.connect(n1.peer)
            assert monitor.poll(5000), "no handshake outcome"
            event = parse_monitor_message(monitor.recv_multipart())
            assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
            # what it tries to send goes nowhere
            with pytest.raises(zmq.Again):
                socket.send(codec.encode(RaftBatch(cluster.config.member("n2").id, ())), zmq.NOBLOCK)
            monitor.close(linger=0)
            socket.close(linger=0)
            wait_for_log(cluster, "peer_key_refused", public_key=keys.public.decode())
    finally:
        context.destroy(linger=0)
    cluster.leader()  # the cluster did not notice


def test_cairnctl_takes_the_keys_and_explains_a_refusal(cluster, capsys, tmp_path):
    n1 = cluster.config.member("n1")
    assert cli.main(["--endpoints", n1.client, "--server-keys", n1.public_key, "--client-key", cluster.client_key,
                     "put", "ctl", "v"]) == 0
    capsys.readouterr()
    assert cli.main(["--cluster-config", cluster.config_path, "--client-key", cluster.client_key,
                     "get", "ctl", "--print-value-only"]) == 0
    assert capsys.readouterr().out == "v\n"
    started = time.monotonic()
    assert cli.main(["--endpoints", n1.client, "get", "ctl"]) == 1
    assert time.monotonic() - started < FAST_S
    assert "requires CURVE" in capsys.readouterr().err
    keys = ",".join(f"{m.client}={m.public_key}" for m in cluster.config.members)
    assert cli.main(["--endpoints", ",".join(cluster.endpoints), "--server-keys", keys, "--client-key", cluster.client_key,
                     "endpoint", "health", "--cluster"]) == 0


def test_bench_runs_against_a_curve_cluster_with_cairnctls_flags(cluster, capsys):
    """`cairn bench` takes cairnctl's CURVE flags; every connection of the load
    generator (its worker processes' too) uses them. Without them it gets the
    clear refusal, never a hang."""
    from cairn import bench

    argv = ["put", "--total", "200", "--clients", "8", "--processes", "1", "--key-space-size", "16", "--json"]
    assert bench.main(["--cluster-config", cluster.config_path, "--client-key", cluster.client_key, *argv]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 200 and not summary["errors"], summary
    assert bench.main(["--client-key", cluster.client_key, *argv]) == 2  # a client key with no server keys
    assert "needs --server-keys" in capsys.readouterr().err


def test_keys_and_sockets_are_owner_only_and_secrets_never_logged(cluster):
    secrets = []
    for path in glob.glob(os.path.join(cluster.directory, "keys", "*.key")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        secrets.append(curve.read_secret_key(path).secret.decode())
    assert len(secrets) == 4
    for member in cluster.members.values():
        assert stat.S_IMODE(os.stat(os.path.join(member.data_dir, "run")).st_mode) == 0o700
    logs = glob.glob(os.path.join(cluster.directory, "**", "*.log"), recursive=True)
    logs += glob.glob(os.path.join(cluster.directory, "*.out"))
    assert logs
    for path in logs:
        text = open(path, errors="replace").read()
        assert not any(secret in text for secret in secrets), path


def run_node(config_path: str, name: str = "n1") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cairn.node", "node", "--config", config_path, "--name", name],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_a_member_with_a_bad_key_file_does_not_start(tmp_path):
    cluster = Cluster(tmp_path, members=1, secure=True)
    key_file = cluster.config.secret_key_file("n1")
    secret = curve.read_secret_key(key_file).secret.decode()
    os.chmod(key_file, 0o644)
    result = run_node(cluster.config_path)
    assert result.returncode == 2
    assert "accessible by other users" in result.stderr and secret not in result.stderr
    curve.write_key_pair(key_file, force=True)  # 0600 again, but not the key the config names
    result = run_node(cluster.config_path)
    assert result.returncode == 2
    assert "is not the key of member n1" in result.stderr
    assert not os.path.exists(cluster.config.data_dir("n1"))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def post(url: str, body: dict, context) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.loads(response.read())


def test_the_http_gateway_serves_https_to_clients_with_a_certificate(cluster):
    member = cluster.members["n1"]
    assert member.http_url.startswith("https://")
    context = tls_client_context(cluster.directory)
    post(member.http_url + "/v3/kv/put", {"key": b64("gw"), "value": b64("tls")}, context)
    found = post(member.http_url + "/v3/kv/range", {"key": b64("gw")}, context)
    assert base64.b64decode(found["kvs"][0]["value"]) == b"tls"
    # no client certificate: the TLS handshake fails (etcd's --client-cert-auth)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        post(member.http_url + "/v3/kv/range", {"key": b64("gw")}, tls_client_context(cluster.directory, client_certificate=False))
    # plain HTTP on the HTTPS port gets nothing
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        post(member.http_url.replace("https://", "http://") + "/v3/kv/range", {"key": b64("gw")}, None)


def test_the_grpc_door_serves_tls(cluster):
    tls = os.path.join(cluster.directory, "tls")
    read = lambda name: open(os.path.join(tls, name), "rb").read()  # noqa: E731
    credentials = grpc.ssl_channel_credentials(root_certificates=read("server.crt"), private_key=read("client.key"),
                                               certificate_chain=read("client.crt"))
    member = cluster.members["n2"]
    with grpc.secure_channel(member.grpc_target, credentials) as channel:
        put = channel.unary_unary("/etcdserverpb.KV/Put", request_serializer=pb.PutRequest.SerializeToString,
                                  response_deserializer=pb.PutResponse.FromString)
        get = channel.unary_unary("/etcdserverpb.KV/Range", request_serializer=pb.RangeRequest.SerializeToString,
                                  response_deserializer=pb.RangeResponse.FromString)
        put(pb.PutRequest(key=b"grpc", value=b"tls"), timeout=10)
        assert get(pb.RangeRequest(key=b"grpc"), timeout=10).kvs[0].value == b"tls"
    with grpc.insecure_channel(member.grpc_target) as channel:
        get = channel.unary_unary("/etcdserverpb.KV/Range", request_serializer=pb.RangeRequest.SerializeToString,
                                  response_deserializer=pb.RangeResponse.FromString)
        with pytest.raises(grpc.RpcError) as caught:
            get(pb.RangeRequest(key=b"grpc"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_lease_forwarding_and_the_lock_service_connect_as_members(cluster):
    """A follower forwards keep-alives to the leader's frontend, and the lock
    service is a client of its own: both as their member, which the restricted
    client door admits."""
    leader = cluster.leader()
    follower = next(m for m in cluster.members.values() if m is not leader)
    with Client([follower.endpoint], timeout=10, **cluster.client_options()) as client:
        lease = client.lease_grant(10).id
        assert client.lease_keepalive_once(lease).ttl > 0
        assert client.lease_time_to_live(lease).ttl > 0
        held = client.lock("secure-lock", lease)
        assert held.key.startswith(b"secure-lock/")
        client.unlock(held.key)
        client.lease_revoke(lease)
    assert any(r["event"] == "lease_forwarding_to" for r in follower.log_records("lease"))
