"""Patroni's own etcd3 DCS (patroni.dcs.etcd3.Etcd3, from PyPI) runs its
leader-key lifecycle against a real 3-member cairn through the members' JSON
gateways (etcd 3.4's grpc-gateway API), with no PostgreSQL: two Patroni
"members" pg0 and pg1 of one scope race for initialization, register
themselves, race for the leader key, keep it alive, watch it, lose it when
the holder stops refreshing its lease, and clean up.

Everything Patroni does here is its own code: the objects come from
patroni.dcs.get_dcs() with the configuration a patroni.yml would give, the
steps are the calls its HA loop makes, and the assertions are on what those
calls return (initialize, attempt_to_acquire_leader, cancel_initialization
and delete_cluster return etcd's answer, truthy or {}, hence the bool()s),
cross-checked with cairn's native client (the leader key's lease, the lease's
remaining TTL). A last test stops the member whose gateway Patroni uses:
Patroni must move to another gateway of the member list and keep its key.

Every test runs twice: against plaintext gateways, and against a secured
cluster (CURVE between members, the gateways on HTTPS with client
certificates, auth enabled) where Patroni logs in as a user whose role may
read and write its namespace only, as a production Patroni would
(protocol: https, cacert, cert, key, username, password).

Patroni's etcd3 client was checked against a real 3-member etcd 3.4.23 the
same way; these tests passed there too.

Needs patroni[etcd3,psycopg2-binary] (the etcd3 DCS module imports
python-etcd, and Patroni's postgresql package imports a psycopg driver even
though no database is used); the module is skipped without them."""

from __future__ import annotations

import os
import threading
import time
import urllib.parse

import pytest

pytest.importorskip("patroni", reason="patroni is a test extra: pip install 'patroni[etcd3,psycopg2-binary]'")
pytest.importorskip("etcd", reason="python-etcd (patroni[etcd3]) is needed by Patroni's etcd3 DCS")
etcd3 = pytest.importorskip("patroni.dcs.etcd3", reason="Patroni's etcd3 DCS does not import (psycopg driver missing?)")

import urllib3.util.connection  # noqa: E402  (Patroni patches it globally; restored after each test)

from patroni.version import __version__ as PATRONI_VERSION  # noqa: E402
from patroni.dcs import get_dcs  # noqa: E402

from cairn import Client  # noqa: E402
from tests.harness import Cluster  # noqa: E402
from transport.messages import PERM_READWRITE  # noqa: E402

# The smallest values Patroni's configuration accepts (patroni/config.py
# _validate_and_adjust_timeouts and the bootstrap.dcs schema in validator.py):
# ttl >= 20, loop_wait >= 1, retry_timeout >= 3, loop_wait + 2 * retry_timeout <= ttl.
TTL = 20
LOOP_WAIT = 1
RETRY_TIMEOUT = 3
assert LOOP_WAIT + 2 * RETRY_TIMEOUT <= TTL

NAMESPACE = "/service/"
CONSTRUCT_TIMEOUT_S = 30.0  # Patroni's constructor retries forever (sleep 5) while etcd is unreachable


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = ""):
    """Poll predicate until it returns something truthy (returned), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {message or predicate}")
        time.sleep(interval)


def run_with_deadline(function, timeout: float, what: str):
    """Run function in a daemon thread; fail (instead of hanging the suite) if
    it does not return in time. Re-raises what it raised."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"deadline:{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{what} did not return within {timeout}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _ExitThread:
    """Unpacking it raises SystemExit, which ends a thread silently."""

    def __iter__(self):
        raise SystemExit


def stop_patroni_threads(dcs) -> list[threading.Thread]:
    """End the daemon threads Patroni started for this DCS object: the KVCache
    watcher (its run() loops forever, catching Exception: the next
    _build_cache raises SystemExit instead, and kill_stream() interrupts the
    current watch) and the DNS resolver (blocked on its queue: it is handed an
    item whose unpacking raises SystemExit). Returns the threads to join."""
    threads = []
    client = dcs._client
    cache = client._kv_cache
    if cache is not None:

        def exit_thread():
            raise SystemExit

        cache._build_cache = exit_thread
        cache.kill_stream()
        threads.append(cache)
    resolver = client._dns_resolver
    resolver._resolve_queue.put(_ExitThread())
    threads.append(resolver)
    client.http.clear()
    return threads


ROOT_PASSWORD = "root-secret"
PATRONI_USER, PATRONI_PASSWORD = "patroni", "patroni-secret"


@pytest.fixture(scope="module", params=["plaintext", "https-auth"])
def cluster(request, tmp_path_factory):
    """Three members with gateways: plaintext, or secured (CURVE, HTTPS with
    client certificates, and auth: root, and a patroni user whose role has
    readwrite on Patroni's namespace and nothing else)."""
    secure = request.param == "https-auth"
    with Cluster(tmp_path_factory.mktemp("gateway_patroni"), members=3, http=True, secure=secure) as started:
        if secure:
            with started.client() as admin:
                admin.user_add("root", ROOT_PASSWORD)
                admin.role_add("root")
                admin.user_grant_role("root", "root")
                admin.role_add("patroni")
                admin.role_grant_permission("patroni", PERM_READWRITE, NAMESPACE, prefix=True)
                admin.user_add(PATRONI_USER, PATRONI_PASSWORD)
                admin.user_grant_role(PATRONI_USER, "patroni")
                admin.auth_enable()
        yield started


def native_client(cluster, endpoints=None) -> Client:
    """cairn's own client (as root where auth is enabled), to cross-check Patroni."""
    credentials = {"user": "root", "password": ROOT_PASSWORD} if cluster.config.security.curve else {}
    return Client(endpoints or cluster.endpoints, timeout=10.0, **cluster.client_options(), **credentials)


def patroni_etcd3_config(cluster) -> dict:
    """Patroni's etcd3 section for this cluster's gateways."""
    hosts = [urllib.parse.urlsplit(m.http_url).netloc for m in cluster.members.values()]
    if not cluster.config.security.curve:
        return {"hosts": hosts}
    tls = os.path.join(cluster.directory, "tls")
    return {"hosts": hosts, "protocol": "https", "cacert": os.path.join(tls, "server.crt"),
            "cert": os.path.join(tls, "client.crt"), "key": os.path.join(tls, "client.key"),
            "username": PATRONI_USER, "password": PATRONI_PASSWORD}


@pytest.fixture
def patroni_members(cluster):
    """A factory of Patroni etcd3 DCS objects pointed at the three gateways,
    built the way Patroni builds them (get_dcs with a patroni.yml-shaped
    config); their threads are stopped and urllib3 restored afterwards."""
    original_create_connection = urllib3.util.connection.create_connection
    created = []

    def make(name: str, scope: str):
        config = {
            "scope": scope,
            "name": name,
            "namespace": NAMESPACE,
            "ttl": TTL,
            "loop_wait": LOOP_WAIT,
            "retry_timeout": RETRY_TIMEOUT,
            "etcd3": patroni_etcd3_config(cluster),
        }
        dcs = run_with_deadline(lambda: get_dcs(config), CONSTRUCT_TIMEOUT_S, f"patroni get_dcs({name})")
        created.append(dcs)
        assert isinstance(dcs, etcd3.Etcd3), type(dcs)
        return dcs

    try:
        yield make
    finally:
        # SystemExit ends a thread normally (threading's default hook ignores
        # it); pytest's hook would report it, so it is filtered meanwhile
        hook = threading.excepthook

        def ignore_system_exit(args):
            if not issubclass(args.exc_type, SystemExit):
                hook(args)

        threading.excepthook = ignore_system_exit
        try:
            threads = []
            for dcs in created:
                threads += stop_patroni_threads(dcs)
            for thread in threads:
                thread.join(5)
        finally:
            threading.excepthook = hook
        urllib3.util.connection.create_connection = original_create_connection
        alive = [t.name for t in threads if t.is_alive()]
        assert not alive, f"Patroni threads still running: {alive}"


def member_data(port: int, role: str) -> dict:
    return {
        "conn_url": f"postgres://127.0.0.1:{port}/postgres",
        "api_url": f"http://127.0.0.1:{port + 3000}/patroni",
        "state": "running",
        "role": role,
        "version": PATRONI_VERSION,
    }


def leader_name(dcs):
    leader = dcs.get_cluster().leader
    return leader and leader.name


def test_patroni_discovers_every_gateway_and_uses_v3(cluster, patroni_members):
    pg0 = patroni_members("pg0", "discovery")
    client = pg0._client
    # Patroni asked GET /version, chose the /v3 prefix of etcd >= 3.4, and took
    # the member list's clientURLs (every member's gateway) as its machines.
    assert client.version_prefix == "/v3"
    assert client._cluster_version >= (3, 4)
    assert sorted(client.machines_cache) == sorted(m.http_url for m in cluster.members.values())
    assert pg0._lease, "Patroni got no lease from /v3/lease/grant"
    if cluster.config.security.curve:  # it logged in over HTTPS and sends its token
        assert client._token and client._base_uri.startswith("https://")
    # an empty scope reads as an empty cluster
    empty = pg0.get_cluster()
    assert empty.initialize is None and empty.leader is None and list(empty.members) == []


def test_patroni_leader_lifecycle(cluster, patroni_members):
    scope = "pgcluster"
    pg0 = patroni_members("pg0", scope)
    pg1 = patroni_members("pg1", scope)
    data0, data1 = member_data(5432, "primary"), member_data(5433, "replica")
    leader_path = f"{NAMESPACE}{scope}/leader".replace("//", "/")
    assert pg0.leader_path == leader_path

    with native_client(cluster) as native:

        # --- initialize: one wins the race, both see the winner's system id
        sysid = "7412345678901234567"
        assert pg0.initialize(create_new=True, sysid=sysid), "pg0 lost an uncontested initialize race"
        assert not pg1.initialize(create_new=True, sysid="7400000000000000000"), "second initialize won too"
        assert pg0.get_cluster().initialize == sysid
        wait_until(lambda: pg1.get_cluster().initialize == sysid, 10, message="pg1 sees initialize key")

        # --- both register as members, each on its own lease
        assert pg0.touch_member(data0) is True
        assert pg1.touch_member(data1) is True
        for dcs in (pg0, pg1):
            wait_until(lambda dcs=dcs: sorted(m.name for m in dcs.get_cluster().members) == ["pg0", "pg1"], 10,
                       message=f"{dcs._name} sees both members")
            members = {m.name: m for m in dcs.get_cluster().members}
            assert members["pg0"].session == pg0._lease and members["pg1"].session == pg1._lease
            assert members["pg0"].conn_url == data0["conn_url"] and members["pg1"].conn_url == data1["conn_url"]
            assert members["pg0"].api_url == data0["api_url"]

        # --- leader race: pg0 takes the key, pg1 sees it and cannot take it
        assert bool(pg0.attempt_to_acquire_leader()) is True
        wait_until(lambda: leader_name(pg1) == "pg0", 10, message="pg1 sees pg0 as leader")
        leader = pg1.get_cluster().leader
        assert leader.session == pg0._lease
        assert leader.member.conn_url == data0["conn_url"]
        assert bool(pg1.attempt_to_acquire_leader()) is False
        assert leader_name(pg0) == "pg0" and leader_name(pg1) == "pg0"
        kv = native.get(leader_path.encode()).kvs[0]
        assert kv.value == b"pg0" and kv.lease == int(pg0._lease), "leader key not attached to pg0's lease"

        # --- the leader keeps its key: update_leader refreshes the lease and writes /status
        lsn = 0x3000060
        assert pg0.update_leader(pg0.get_cluster(), last_lsn=lsn) is True
        remaining = native.lease_time_to_live(int(pg0._lease)).ttl
        assert TTL - 3 <= remaining <= TTL, f"lease not refreshed by keepalive: {remaining}s left"
        wait_until(lambda: pg1.get_cluster().status.last_lsn == lsn, 10, message="pg1 sees the leader's /status")

        # --- the leader's lease is lost behind its back (revoked); update_leader
        # notices (keepalive answers without TTL), grants a new lease and takes
        # the key back in its nested transaction (VALUE compare fails, then
        # CREATE == 0 inside request_txn succeeds)
        stale_view = pg0.get_cluster()
        old_lease = pg0._lease
        native.lease_revoke(int(old_lease))
        wait_until(lambda: leader_name(pg1) is None, 10, message="pg1 sees the leader key deleted with its lease")
        assert pg0.update_leader(stale_view, last_lsn=None) is True
        assert pg0._lease and pg0._lease != old_lease
        kv = native.get(leader_path.encode()).kvs[0]
        assert kv.value == b"pg0" and kv.lease == int(pg0._lease)
        wait_until(lambda: leader_name(pg1) == "pg0" and pg1.get_cluster().leader.session == pg0._lease, 10,
                   message="pg1 sees pg0's key on its new lease")
        assert pg0.touch_member(data0) is True  # its member key went with the old lease
        wait_until(lambda: sorted(m.name for m in pg1.get_cluster().members) == ["pg0", "pg1"], 10,
                   message="pg1 sees pg0 registered again")

        # --- a member that is not the leader cannot delete the leader key
        assert pg1.delete_leader(pg1.get_cluster().leader) is False
        assert native.get(leader_path.encode()).kvs[0].value == b"pg0"

        # --- watch: with nothing changing, pg1's watch times out and says so;
        # when the leader deletes its key, pg1's watch wakes at once
        wait_until(lambda: pg1.watch(None, 0.5) is False, 15, interval=0,
                   message="pg1's watch goes quiet when nothing changes")
        leader_version = pg1.get_cluster().leader.version
        watch_timeout = 10.0
        outcome, watching = {}, threading.Event()

        def watch():
            watching.set()
            started = time.monotonic()
            outcome["woke"] = pg1.watch(leader_version, watch_timeout)
            outcome["returned"] = time.monotonic()
            outcome["took"] = outcome["returned"] - started

        watcher = threading.Thread(target=watch, name="pg1-watch", daemon=True)
        watcher.start()
        assert watching.wait(5)
        deleted_at = time.monotonic()
        assert pg0.delete_leader(pg0.get_cluster().leader) is True
        watcher.join(watch_timeout + 5)
        assert not watcher.is_alive(), "pg1.watch() did not return"
        assert outcome["woke"] is True, "pg1.watch() timed out instead of waking on the leader key's deletion"
        assert outcome["took"] < watch_timeout / 2, f"pg1.watch() woke only after {outcome['took']:.1f}s"
        assert outcome["returned"] - deleted_at < 3.0
        assert leader_name(pg1) is None and leader_name(pg0) is None
        assert not native.get(leader_path.encode()).kvs

        # --- pg0 leads again, then stops (no more refreshes): after the TTL its
        # lease expires in cairn, its keys go, and pg1 takes over
        assert bool(pg0.attempt_to_acquire_leader()) is True
        wait_until(lambda: leader_name(pg1) == "pg0", 10, message="pg1 sees pg0 leading again")
        before_refresh = time.monotonic()
        assert pg0.update_leader(pg0.get_cluster(), last_lsn=None) is True  # its last keepalive
        after_refresh = time.monotonic()
        pg0_lease = pg0._lease
        # pg1 runs a replica's HA loop: touch its member key, read the cluster,
        # watch the leader key for up to loop_wait
        deadline = after_refresh + TTL + 15
        while True:
            assert pg1.touch_member(data1) is True
            view = pg1.get_cluster()
            if view.leader is None:
                gone_at = time.monotonic()
                break
            assert time.monotonic() < deadline, f"pg0's leader key still there {TTL + 15}s after its last keepalive"
            pg1.watch(view.leader.version, LOOP_WAIT)
        assert gone_at - before_refresh >= TTL - 1.0, f"leader key gone {gone_at - before_refresh:.1f}s after keepalive"
        assert native.lease_time_to_live(int(pg0_lease)).ttl == -1
        wait_until(lambda: [m.name for m in pg1.get_cluster().members] == ["pg1"], 10,
                   message="pg0's member key expired with its lease")
        assert bool(pg1.attempt_to_acquire_leader()) is True
        assert leader_name(pg1) == "pg1" and pg1.get_cluster().leader.session == pg1._lease
        kv = native.get(leader_path.encode()).kvs[0]
        assert kv.value == b"pg1" and kv.lease == int(pg1._lease)

        # --- pg0 comes back: it sees pg1 leading and can take the key neither
        # by a race nor by update_leader's compare-and-swap
        wait_until(lambda: leader_name(pg0) == "pg1", 10, message="pg0 sees pg1 as leader")
        assert bool(pg0.attempt_to_acquire_leader()) is False
        assert pg0._lease and pg0._lease != pg0_lease, "pg0 did not replace its expired lease"
        assert pg0.update_leader(pg0.get_cluster(), last_lsn=None) is False
        assert native.get(leader_path.encode()).kvs[0].value == b"pg1"

        # --- the leader steps down, the cluster is deinitialized, then deleted
        assert pg1.delete_leader(pg1.get_cluster().leader) is True
        assert pg1.cancel_initialization()
        for dcs in (pg0, pg1):
            wait_until(lambda dcs=dcs: (c := dcs.get_cluster()).leader is None and c.initialize is None, 10,
                       message=f"{dcs._name} sees no leader and no initialize key")
        assert pg1.delete_cluster()
        for dcs in (pg0, pg1):
            wait_until(lambda dcs=dcs: not list(dcs.get_cluster().members), 10,
                       message=f"{dcs._name} sees an empty cluster")
        assert native.get(f"{NAMESPACE}{scope}/".replace("//", "/").encode(), prefix=True).count == 0


def test_patroni_fails_over_to_another_gateway(cluster, patroni_members):
    """The member whose gateway Patroni talks to stops: Patroni moves to another
    gateway of the member list and keeps its leader key (within retry_timeout,
    as its HA loop needs), and its watcher follows.

    The stopped member is not the Raft leader (leadership is moved away first):
    losing the leader as well costs an election (1-2 s with the default 1 s
    election timeout), during which writes wait, as in etcd; with the smallest
    retry_timeout Patroni accepts (3 s, 1 s per request) that is a race this
    test would lose at times. Patroni's default retry_timeout (10 s) covers it."""
    scope = "failover"
    pg0 = patroni_members("pg0", scope)
    data0 = member_data(5432, "primary")
    assert pg0.touch_member(data0) is True
    assert bool(pg0.attempt_to_acquire_leader()) is True
    victim = next(m for m in cluster.members.values() if m.http_url == pg0._client._base_uri)
    if cluster.leader() is victim:
        successor = next(m for m in cluster.members.values() if m is not victim)
        with native_client(cluster) as native:
            native.move_leader(successor.spec.id)
        assert cluster.leader() is successor
    victim.stop()
    try:
        started = time.monotonic()
        assert pg0.update_leader(pg0.get_cluster(), last_lsn=0x5000000) is True
        assert time.monotonic() - started < 2 * RETRY_TIMEOUT
        assert pg0._client._base_uri != victim.http_url

        def leads():
            try:
                view = pg0.get_cluster()
            except etcd3.Etcd3Error:  # the watcher is still moving to another gateway
                return False
            return view.leader is not None and view.leader.name == "pg0" and view.status.last_lsn == 0x5000000

        wait_until(leads, 15, message="pg0's view through another gateway")
        with native_client(cluster, [m.endpoint for m in cluster.members.values() if m is not victim]) as native:
            kv = native.get(pg0.leader_path.encode()).kvs[0]
            assert kv.value == b"pg0" and kv.lease == int(pg0._lease)
    finally:
        victim.start()
        cluster.wait_ready([victim])
