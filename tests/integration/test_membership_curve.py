"""Membership changes in a cluster with CURVE security (issues 15 and 16): a member
added at run time brings its public key (cairnctl member add --curve-key), the
key is replicated with its record, every member's peer door (and client door,
restricted to security.client_keys) admits it while it is a member and refuses
it once it is removed.

One secured 3-member cluster for the module; the tests run in order (one story).
"""

from __future__ import annotations

import pytest
import zmq
from zmq.utils.monitor import parse_monitor_message

from cairn import Client, cli
from tests.harness import cluster_fixture, value_or_none, wait_for
from transport import curve
from transport.errors import AuthenticationFailed, InvalidArgumentError, LearnerNotReadyError

# Clients restricted to the harness's key, as configs/secure-3node.yaml: the new
# member's --join and lease actor reach the others' client doors as a member.
cluster = cluster_fixture("membership-curve", members=3, secure=True, restrict_clients=True, snapshot_entries=40,
                          corruption_check_interval_s=1)




def _peer_handshake(cluster, member_name: str, keys: curve.KeyPair) -> int:
    """The outcome (a zmq monitor event) of a CURVE handshake with `member_name`'s
    peer door, made with `keys`."""
    target = cluster.config.member(member_name)
    context = zmq.Context()
    try:
        socket = context.socket(zmq.PUSH)
        socket.setsockopt(zmq.LINGER, 0)
        curve.make_client(socket, keys, target.public_key.encode())
        monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        socket.connect(target.peer)
        assert monitor.poll(5000), "no handshake outcome"
        event = parse_monitor_message(monitor.recv_multipart())["event"]
        monitor.close(linger=0)
        socket.close(linger=0)
        return event
    finally:
        context.destroy(linger=0)


def test_a_learner_added_with_its_key_catches_up_is_promoted_and_takes_writes(cluster, capsys):
    new = cluster.add_member_to_config("n4")
    key_file = f"{cluster.directory}/keys/n4.key"
    running = ",".join(m.endpoint for m in cluster.running())
    with cluster.client(timeout=10) as c:
        for i in range(60):  # past snapshot_entries: the learner gets the leader's snapshot
            c.put(b"curve/%03d" % i, b"v")
        with pytest.raises(InvalidArgumentError) as refused:
            c.member_add("n4", [new.spec.peer], is_learner=True)  # no key: it could never get in
        assert "--curve-key" in refused.value.message
    # A stranger's key is no member's yet.
    assert _peer_handshake(cluster, "n1", curve.read_secret_key(key_file)) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert cli.main([f"--endpoints={running}", "--cluster-config", cluster.config_path, "--client-key", cluster.client_key,
                     "member", "add", "n4",
                     f"--peer-urls={new.spec.peer}", f"--client-urls={new.spec.client}", "--learner",
                     "--curve-key", key_file + ".pub"]) == 0
    out = capsys.readouterr().out
    assert f'      public_key: "{new.spec.public_key}"\n' in out and "  security: {mode: curve}\n" in out
    new.start(join=True)
    with Client([new.endpoint], timeout=2, dial_timeout=1, **cluster.client_options()) as learner:
        wait_for(lambda: value_or_none(lambda: learner.get(b"curve/059", serializable=True).count == 1),
                 "the learner to catch up over CURVE", 30)
    with cluster.client(timeout=10) as c:
        promoted = wait_for(lambda: value_or_none(lambda: c.member_promote(new.spec.id), LearnerNotReadyError), "the promotion", 30)
        assert {m.id: m.is_learner for m in promoted.members}[new.spec.id] is False
    cluster.wait_ready([new])
    with Client([new.endpoint], timeout=10, **cluster.client_options()) as voter:
        voter.put(b"curve/by-n4", b"x")  # through the new member, committed with its vote
        assert voter.get(b"curve/by-n4").kvs[0].value == b"x"
    assert any(r.get("event") == "snapshot_installed" for r in new.log_records("raft"))
    # The leader's corruption check compares it too, reached with its key from the
    # log's membership (the YAML the others started with does not list it).
    wait_for(lambda: any(r.get("event") == "corruption_check_passed" and r.get("members") == 4
                         for m in cluster.running() if m is not new for r in m.log_records("frontend")),
             "a check of all four members by one of the others", 20)
    # The others' client doors (restricted to client_keys) admit it as a member.
    assert _client_door_admits(cluster, key_file)


def _client_door_admits(cluster, key_file: str) -> bool:
    n1 = cluster.config.member("n1")
    with Client([n1.client], timeout=5, server_public_keys=n1.public_key, client_key=key_file) as c:
        try:
            return c.get(b"curve/000").count == 1
        except AuthenticationFailed:
            return False


def test_a_removed_members_key_is_refused(cluster):
    removed = cluster.members["n4"]
    keys = curve.read_secret_key(f"{cluster.directory}/keys/n4.key")
    assert _peer_handshake(cluster, "n1", keys) == zmq.EVENT_HANDSHAKE_SUCCEEDED  # a member's, for now
    rest = [m for m in cluster.members.values() if m is not removed]
    with Client([m.endpoint for m in rest], timeout=10, **cluster.client_options()) as c:
        c.member_remove(removed.spec.id)
        wait_for(lambda: removed.process.poll() is not None, "the removed member to stop", 20)
        for member in rest:
            assert _peer_handshake(cluster, member.name, keys) == zmq.EVENT_HANDSHAKE_FAILED_AUTH, member.name
            assert any(r.get("event") == "peer_key_refused" and r.get("public_key") == keys.public.decode()
                       for r in member.log_records("raft"))
        wait_for(lambda: not _client_door_admits(cluster, f"{cluster.directory}/keys/n4.key"),
                 "n1's client door to refuse the removed member's key", 5)
        c.put(b"curve/after-remove", b"1")
        assert c.get(b"curve/after-remove").count == 1
    del cluster.members["n4"]
