"""cairn's client library (the contract in DESIGN.md, modelled on etcd's clientv3).

    from cairn import Client, Compare, Op
    with Client(["tcp://127.0.0.1:2379"], timeout=5.0) as c:
        c.put(b"foo", b"bar")
        c.get(b"foo").kvs[0].value

Failover rules, so that a member failure is hidden without ever hiding an
uncertain write:
* A request that provably never left this process (the endpoint would not
  connect: Unavailable) or that the member rejected before it reached a Raft log
  (NoLeader, TooManyRequests, Stopping) is retried on the next endpoint, with
  exponential back-off and jitter, until the call's timeout.
* A read that times out is retried on the next endpoint too: reads are safe to
  repeat.
* A write that was sent and got no answer (timeout, or the member's own Timeout)
  raises IndeterminateError: it may or may not have been applied, and only the
  caller can decide what to do.
* A call that fails because its member did not answer (no connection, no
  answer in time, the connection lost) leaves the client preferring the next
  endpoint, so the caller's next call does not wait out the same dead or
  stopped member.

The rules are cairn.retry's decisions, applied by cairn.calls.CallPlanner,
which both this client and the asyncio one (cairn/aio.py) run: every request
method below hands a plan to self._run, which this client runs on the caller's
thread and cairn.aio.Client returns as a coroutine.
"""

from __future__ import annotations

import logging
import threading
from typing import NamedTuple

from cairn.calls import CallPlanner, Plan, run_blocking
from cairn.lease_keepalive import KeepAlive
# Compare and prefix_range_end are imported for `from cairn.client import ...`, where they lived before cairn.requests.
from cairn.requests import Compare, Op, prefix_range_end, range_request, to_bytes, watch_request
from cairn.transport_thread import TransportThread
from cairn.watch import Watch, WatchManager
from transport import messages as m
from transport.curve import ClientCurve
from transport.errors import AuthenticationFailed, CairnError, LeaseNotFoundError, Unavailable

DEFAULT_MAX_RECEIVE_BYTES = 64 * 1024 * 1024
LEADER_LOOKUPS = 5  # tries per new term to find the leader (none while an election is on)
LEADER_LOOKUP_PAUSE_S = 0.2

log = logging.getLogger(__name__)


class Client:
    def __init__(self, endpoints, timeout: float = 5.0, dial_timeout: float = 2.0,
                 max_receive_bytes: int = DEFAULT_MAX_RECEIVE_BYTES, max_send_bytes: int = 1536 * 1024 + 4096,
                 require_leader: bool = False, auto_sync_interval: float = 0.0,
                 server_public_keys=None, client_key=None,
                 user: str | None = None, password: str | None = None, token: str | None = None,
                 follow_leader: bool = True):
        """endpoints: tcp:// client URLs of some members. timeout: the default per
        call (each method takes timeout= too). require_leader: fail with NoLeader
        rather than be served by a member that has lost its leader.
        auto_sync_interval: seconds between endpoint discoveries (0 = never); a
        discovery that fails is logged, kept in `sync_error`, and tried again
        after the next interval.

        CURVE (a cluster whose config says security mode curve): server_public_keys
        is the member's public key (a client of one endpoint) or {endpoint: key}
        (keys as `cairn keygen` prints them, or paths of its .pub files);
        discovered endpoints without a key are not used. client_key is this
        client's secret key file (or a transport.curve.KeyPair), needed when the
        cluster lists its allowed client_keys; without it the client makes a key
        pair of its own. A failed handshake raises AuthenticationFailed at once.

        user, password: etcd v3 auth; the client authenticates on first use with
        each member it asks and sends the token with every request,
        authenticating again when a token expires (cairn/calls.py). token: a
        token to send as it is instead.

        follow_leader: calls go first to the leader's member when its client URL
        is among the endpoints (looked up with a status call and the member
        list, again whenever a reply shows a new Raft term), so a write or
        linearizable read skips the hops a follower adds forwarding to the
        leader. False keeps the first endpoint preferred until it fails."""
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        if client_key is not None and server_public_keys is None:
            raise ValueError("client_key needs server_public_keys: a CURVE client must know its members' public keys")
        curve = ClientCurve(list(endpoints), server_public_keys, client_key) if server_public_keys is not None else None
        self._transport = TransportThread(list(endpoints), dial_timeout, max_receive_bytes, curve)
        self.endpoints = self._transport.endpoints  # one list: discovery appends to it
        if password is not None and user is None:
            raise ValueError("a password needs a user")
        credentials = (user, password or "") if user is not None else None
        self._calls = CallPlanner(self._transport, timeout, max_send_bytes, {"require_leader": True} if require_leader else None,
                                  credentials=credentials, token=token, follow_leader=follow_leader and len(endpoints) > 1)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._watch_manager: WatchManager | None = None
        self.sync_error: Exception | None = None  # the last automatic discovery's failure; None once one succeeds
        if auto_sync_interval > 0:
            threading.Thread(target=self._auto_sync, args=(auto_sync_interval,), name="cairn-client-sync", daemon=True).start()
        if self._calls.follow_leader:
            threading.Thread(target=self._follow_leader, name="cairn-client-leader", daemon=True).start()

    @property
    def timeout(self) -> float:
        """The default seconds a call may take (each method takes timeout= too)."""
        return self._calls.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._calls.timeout = value

    @property
    def max_send_bytes(self) -> int:
        return self._calls.max_send_bytes

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._closing.set()
        self._calls.leader_stale.set()  # wakes the follow_leader thread to end
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def call(self, request, write: bool, timeout=None, endpoint: str | None = None, token: str | None = None,
             options: dict | None = None):
        """Send one prepared request message (transport/messages.py) and return its
        response, with the routing and failover rules of the methods below: for
        front ends that build the messages themselves (the HTTP gateway).
        write=False marks a request that is safe to send again. With `endpoint`,
        only that member is asked, and an error is not retried elsewhere.
        token: an auth token for this call alone (a door passes its caller's on);
        options: more frame options for this call alone."""
        return self._run(self._calls.call(request, write, timeout, endpoint, token, options))

    # ------------------------------------------------------------------ KV

    def put(self, key, value, lease=0, prev_kv=False, ignore_value=False, ignore_lease=False, timeout=None) -> m.PutResponse:
        return self._call(Op.put(key, value, lease, prev_kv, ignore_value, ignore_lease), write=True, timeout=timeout)

    def get(self, key, range_end=None, prefix=False, from_key=False, revision=0, limit=0, keys_only=False,
            count_only=False, serializable=False, sort_order=None, sort_target=None, timeout=None, **filters) -> m.RangeResponse:
        request = range_request(key, range_end, prefix, from_key, revision, limit, keys_only, count_only,
                                serializable, sort_order, sort_target, **filters)
        return self._call(request, write=False, timeout=timeout)

    def delete(self, key, range_end=None, prefix=False, from_key=False, prev_kv=False, timeout=None) -> m.DeleteRangeResponse:
        return self._call(Op.delete(key, range_end, prefix, from_key, prev_kv), write=True, timeout=timeout)

    def txn(self, compare=(), success=(), failure=(), timeout=None) -> m.TxnResponse:
        return self._call(Op.txn(compare, success, failure), write=True, timeout=timeout)

    def compact(self, revision: int, physical: bool = False, timeout=None) -> m.CompactionResponse:
        return self._call(m.CompactionRequest(revision, physical), write=True, timeout=timeout)

    # ------------------------------------------------------------------ leases

    def lease_grant(self, ttl: int, id: int = 0, timeout=None) -> m.LeaseGrantResponse:
        """A lease of ttl seconds (raised to the cluster's minimum, as etcd does)."""
        return self._call(m.LeaseGrantRequest(ttl, id), write=True, timeout=timeout)

    def lease_revoke(self, id: int, timeout=None) -> m.LeaseRevokeResponse:
        """Revoke the lease; every key attached to it is deleted in one revision."""
        return self._call(m.LeaseRevokeRequest(id), write=True, timeout=timeout)

    def lease_keepalive_once(self, id: int, timeout=None) -> m.LeaseKeepAliveResponse:
        """Renew the lease once; LeaseNotFoundError if it expired or never was."""
        return self._run(self._lease_keepalive_once(id, timeout))

    def _lease_keepalive_once(self, id: int, timeout) -> Plan:
        response = yield from self._calls.call(m.LeaseKeepAliveRequest(id), write=False, timeout=timeout)
        if response.ttl <= 0:
            raise LeaseNotFoundError()
        return response

    def lease_keepalive(self, id: int) -> KeepAlive:
        """Keep the lease alive in the background until closed: iterate it for the
        responses (`with c.lease_keepalive(lease) as ka: ...`)."""
        return KeepAlive(self, id)

    def lease_time_to_live(self, id: int, keys: bool = False, timeout=None) -> m.LeaseTimeToLiveResponse:
        return self._call(m.LeaseTimeToLiveRequest(id, keys), write=False, timeout=timeout)

    def leases(self, timeout=None) -> m.LeaseLeasesResponse:
        return self._call(m.LeaseLeasesRequest(), write=False, timeout=timeout)

    # ------------------------------------------------------------------ watch

    def watch(self, key, range_end=None, prefix=False, start_revision=0, prev_kv=False, progress_notify=False,
              filters=(), fragment=False, watch_id=0, timeout=None) -> Watch:
        """Watch a key, a range (range_end, b"\\0" = every key from key) or a
        prefix, from start_revision (0 = from now). Returns once a member has
        created the watch: a cairn.watch.Watch, a context manager to iterate for
        WatchResponses, which follows the cluster across member failures without
        a gap or a duplicate (see cairn/watch.py). filters: "noput", "nodelete"."""
        request = watch_request(key, range_end, prefix, start_revision, prev_kv, progress_notify, filters, fragment, watch_id)
        return self._watches().open(request, self.timeout if timeout is None else timeout)

    def _watches(self) -> WatchManager:
        """The client's one WatchManager, started on its first watch."""
        with self._lock:
            if self._watch_manager is None or not self._watch_manager.thread.is_alive():
                options_for = self._calls.options_for if (self._calls.credentials or self._calls.fixed_token) else None
                self._watch_manager = WatchManager(self._transport, self._calls.preferred, self.timeout, options_for)
            return self._watch_manager

    # ------------------------------------------------------------------ Lock and Election services
    # Served by the member (etcd's v3lock and v3election); the caller keeps
    # `lease` alive. Waiting calls allow the server's wait limit (60 s) by default.

    SERVICE_WAIT_S = 65.0

    def lock(self, name, lease: int, timeout=None) -> m.LockResponse:
        return self._call(m.LockRequest(to_bytes(name), lease), write=True, timeout=timeout or self.SERVICE_WAIT_S)

    def unlock(self, key, timeout=None) -> m.UnlockResponse:
        return self._call(m.UnlockRequest(to_bytes(key)), write=True, timeout=timeout)

    def campaign(self, name, lease: int, value, timeout=None) -> m.CampaignResponse:
        return self._call(m.CampaignRequest(to_bytes(name), lease, to_bytes(value)), write=True,
                          timeout=timeout or self.SERVICE_WAIT_S)

    def proclaim(self, leader: m.LeaderKey, value, timeout=None) -> m.ProclaimResponse:
        return self._call(m.ProclaimRequest(leader, to_bytes(value)), write=True, timeout=timeout)

    def leader(self, name, timeout=None) -> m.LeaderResponse:
        return self._call(m.LeaderRequest(to_bytes(name)), write=False, timeout=timeout)

    def resign(self, leader: m.LeaderKey, timeout=None) -> m.ResignResponse:
        return self._call(m.ResignRequest(leader), write=True, timeout=timeout)

    # ------------------------------------------------------------------ cluster

    def status(self, endpoint: str | None = None, timeout=None) -> m.StatusResponse:
        """Status of one member (the given endpoint, else the preferred one)."""
        return self._call(m.StatusRequest(), write=False, timeout=timeout, endpoint=endpoint)

    def metrics(self, endpoint: str | None = None, timeout=None) -> m.MetricsResponse:
        """One member's metrics: each actor's last report (what /metrics shows;
        actors/metrics.py names them)."""
        return self._call(m.MetricsRequest(), write=False, timeout=timeout, endpoint=endpoint)

    def member_list(self, timeout=None) -> m.MemberListResponse:
        return self._call(m.MemberListRequest(), write=False, timeout=timeout)

    def member_add(self, name: str, peer_urls, is_learner: bool = False, client_urls=(), public_key: str | bytes = "",
                   timeout=None) -> m.MemberAddResponse:
        """etcd's MemberAdd: the member's id derives from the cluster's and its name;
        start it afterwards with `cairn node --join` (its YAML names it).
        public_key: the new member's CURVE public key (`cairn keygen`), which a
        cluster in security mode curve requires."""
        if isinstance(public_key, bytes):
            public_key = public_key.decode("ascii", errors="replace")
        request = m.MemberAddRequest(tuple(_urls(peer_urls)), is_learner, name, tuple(_urls(client_urls)), public_key)
        return self._call(request, write=True, timeout=timeout)

    def member_remove(self, member_id: int, timeout=None) -> m.MemberRemoveResponse:
        return self._call(m.MemberRemoveRequest(member_id), write=True, timeout=timeout)

    def member_update(self, member_id: int, peer_urls, timeout=None) -> m.MemberUpdateResponse:
        return self._call(m.MemberUpdateRequest(member_id, tuple(_urls(peer_urls))), write=True, timeout=timeout)

    def member_promote(self, member_id: int, timeout=None) -> m.MemberPromoteResponse:
        """Make a learner a voter; refused until it has caught up with the leader."""
        return self._call(m.MemberPromoteRequest(member_id), write=True, timeout=timeout)

    def alarm_list(self, timeout=None) -> m.AlarmResponse:
        return self._call(m.AlarmRequest(m.ALARM_GET), write=False, timeout=timeout)

    def alarm_disarm(self, member_id: int = 0, alarm: int = m.ALARM_NOSPACE, timeout=None) -> m.AlarmResponse:
        """Deactivate an alarm (every listed alarm when member_id is 0), as etcdctl alarm disarm."""
        return self._run(self._alarm_disarm(member_id, alarm, timeout))

    def _alarm_disarm(self, member_id: int, alarm: int, timeout) -> Plan:
        listed = yield from self._calls.call(m.AlarmRequest(m.ALARM_GET), write=False, timeout=timeout)
        targets = [(member_id, alarm)] if member_id else [(a.member_id, a.alarm) for a in listed.alarms]
        header, disarmed = listed.header, []
        for target_member, target_alarm in targets:
            request = m.AlarmRequest(m.ALARM_DEACTIVATE, target_member, target_alarm)
            response = yield from self._calls.call(request, write=True, timeout=timeout)
            header = response.header
            disarmed.extend(response.alarms)
        return m.AlarmResponse(header, tuple(disarmed))

    def sync_endpoints(self, timeout=None) -> list[str]:
        """Discover every member's client URL (etcd clientv3's Sync) and prefer the
        leader's, so writes skip a forwarding hop. Returns the endpoints."""
        return self._run(self._calls.sync_endpoints(timeout))

    def _auto_sync(self, interval: float) -> None:
        """The auto_sync_interval thread. It runs the discovery plan itself, on its
        own thread, for the asyncio client too: no event loop is involved."""
        while not self._closing.wait(interval):
            try:
                run_blocking(self._calls.sync_endpoints())
            except Exception as error:  # noqa: BLE001 - whatever it was, the next round tries again
                if self._closing.is_set():
                    return
                self.sync_error = error
                log.warning("endpoint sync failed (tried again in %gs): %s", interval, error,
                            exc_info=not isinstance(error, CairnError))
            else:
                self.sync_error = None

    def _follow_leader(self) -> None:
        """The follow_leader thread: a lookup each time a reply shows a new term
        (on its own thread, for the asyncio client too). During an election
        there is no leader to find, and a lookup may fail: it looks again, a
        few times, 0.2 s apart."""
        stale = self._calls.leader_stale
        while stale.wait() and not self._closing.is_set():
            stale.clear()
            for _ in range(LEADER_LOOKUPS):
                try:
                    if run_blocking(self._calls.find_leader(self.timeout)):
                        break
                except Exception as error:  # noqa: BLE001 - the calls go on without a preference of ours
                    if self._closing.is_set():
                        return
                    log.debug("leader lookup failed: %s", error, exc_info=not isinstance(error, CairnError))
                if self._closing.wait(LEADER_LOOKUP_PAUSE_S):
                    return

    def move_leader(self, target_id: int, timeout=None) -> m.MoveLeaderResponse:
        """Hand leadership to member target_id; returns once it leads."""
        return self._call(m.MoveLeaderRequest(target_id), write=False, timeout=timeout)

    # ------------------------------------------------------------------ maintenance

    def hash(self, endpoint: str | None = None, timeout=None) -> m.HashResponse:
        """etcd's Maintenance.Hash of one member's whole store (the given endpoint, else the preferred one)."""
        return self._call(m.HashRequest(), write=False, timeout=timeout, endpoint=endpoint)

    def defragment(self, endpoint: str | None = None, timeout=None) -> m.DefragmentResponse:
        """etcd's Maintenance.Defragment of one member (the given endpoint, else
        the preferred one): its keyspace file is rewritten without free pages.
        The member applies nothing while it copies (a second or so per few
        hundred MB), so defragment one member at a time."""
        return self._call(m.DefragmentRequest(), write=False, timeout=timeout, endpoint=endpoint)

    def hash_kv(self, revision: int = 0, endpoint: str | None = None, timeout=None) -> m.HashKVResponse:
        """etcd's Maintenance.HashKV: (hash, compact_revision, hash_revision) of one
        member's MVCC history up to revision (0 = latest); equal on members with
        the same history."""
        return self._call(m.HashKVRequest(revision), write=False, timeout=timeout, endpoint=endpoint)

    def snapshot_save(self, path: str, endpoint: str | None = None, progress=None, timeout=None) -> "SnapshotSaved":
        """Save a consistent copy of one member's keyspace (the given endpoint,
        else the preferred one) to path, as etcdctl snapshot save: written to
        path.part, checked against the member's SHA-256, then renamed.
        progress(bytes_so_far, total_bytes) is called after each piece."""
        return self._run(self._snapshot_save(path, endpoint, progress, timeout))

    def _snapshot_save(self, path: str, endpoint, progress, timeout) -> Plan:
        import hashlib
        import os

        from transport.snapshot_file import SnapshotFileError

        endpoint = endpoint or self.endpoints[self._calls.preferred()]
        partial = path + ".part"
        digest = hashlib.sha256()
        try:
            with open(partial, "wb") as out:
                response = yield from self._calls.call(m.SnapshotRequest(), write=False, timeout=timeout, endpoint=endpoint)
                while True:
                    out.write(response.blob)
                    digest.update(response.blob)
                    if progress is not None:
                        progress(response.offset + len(response.blob), response.total_bytes)
                    if response.remaining_bytes == 0:
                        break
                    request = m.SnapshotRequest(response.snapshot_id, response.offset + len(response.blob))
                    response = yield from self._calls.call(request, write=False, timeout=timeout, endpoint=endpoint)
                if digest.digest() != response.sha256:
                    raise SnapshotFileError("snapshot checksum mismatch: the member's copy and what arrived differ")
                out.write(digest.digest())
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        except BaseException:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise
        return SnapshotSaved(path, response.header.revision, response.total_bytes + len(digest.digest()),
                             digest.hexdigest(), response.header.member_id)

    # ------------------------------------------------------------------ auth (etcd v3)
    # Changes go through the log; so do the reads (as in etcd). Passwords are
    # hashed by the member that takes them; neither they nor tokens are logged.

    def authenticate(self, name: str, password: str, timeout=None) -> m.AuthenticateResponse:
        """A token for name (etcd's Authenticate); Client(user=, password=) does this itself."""
        return self._call(m.AuthenticateRequest(name, password), write=False, timeout=timeout)

    def auth_enable(self, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthEnableRequest(), write=True, timeout=timeout)

    def auth_disable(self, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthDisableRequest(), write=True, timeout=timeout)

    def auth_status(self, timeout=None) -> m.AuthStatusResponse:
        return self._call(m.AuthStatusRequest(), write=False, timeout=timeout)

    def user_add(self, name: str, password: str = "", no_password: bool = False, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthUserAddRequest(name, password, "", no_password), write=True, timeout=timeout)

    def user_get(self, name: str, timeout=None) -> m.AuthUserGetResponse:
        return self._call(m.AuthUserGetRequest(name), write=False, timeout=timeout)

    def user_list(self, timeout=None) -> m.AuthUserListResponse:
        return self._call(m.AuthUserListRequest(), write=False, timeout=timeout)

    def user_delete(self, name: str, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthUserDeleteRequest(name), write=True, timeout=timeout)

    def user_change_password(self, name: str, password: str, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthUserChangePasswordRequest(name, password), write=True, timeout=timeout)

    def user_grant_role(self, user: str, role: str, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthUserGrantRoleRequest(user, role), write=True, timeout=timeout)

    def user_revoke_role(self, user: str, role: str, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthUserRevokeRoleRequest(user, role), write=True, timeout=timeout)

    def role_add(self, name: str, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthRoleAddRequest(name), write=True, timeout=timeout)

    def role_get(self, role: str, timeout=None) -> m.AuthRoleGetResponse:
        return self._call(m.AuthRoleGetRequest(role), write=False, timeout=timeout)

    def role_list(self, timeout=None) -> m.AuthRoleListResponse:
        return self._call(m.AuthRoleListRequest(), write=False, timeout=timeout)

    def role_delete(self, role: str, timeout=None) -> m.AuthResponse:
        return self._call(m.AuthRoleDeleteRequest(role), write=True, timeout=timeout)

    def role_grant_permission(self, role: str, perm_type: int, key, range_end=None, prefix: bool = False,
                              from_key: bool = False, timeout=None) -> m.AuthResponse:
        """Grant perm_type (m.PERM_READ, PERM_WRITE, PERM_READWRITE) on key, or
        [key, range_end), a prefix, or every key from key on."""
        key, end = _perm_range(key, range_end, prefix, from_key)
        return self._call(m.AuthRoleGrantPermissionRequest(role, m.Permission(perm_type, key, end)), write=True,
                          timeout=timeout)

    def role_revoke_permission(self, role: str, key, range_end=None, prefix: bool = False, from_key: bool = False,
                               timeout=None) -> m.AuthResponse:
        key, end = _perm_range(key, range_end, prefix, from_key)
        return self._call(m.AuthRoleRevokePermissionRequest(role, key, end), write=True, timeout=timeout)

    # ------------------------------------------------------------------ plumbing

    def _call(self, request, write: bool, timeout=None, endpoint: str | None = None):
        """Send request, failing over between endpoints as cairn.retry decides."""
        return self._run(self._calls.call(request, write, timeout, endpoint))

    # Run a plan of cairn.calls and return its result: here, on the caller's
    # thread; cairn.aio.Client returns a coroutine instead.
    _run = staticmethod(run_blocking)


def _perm_range(key, range_end, prefix: bool, from_key: bool) -> tuple[bytes, bytes]:
    key = to_bytes(key)
    if prefix:
        return key, prefix_range_end(key)
    if from_key:
        return key, b"\0"
    return key, to_bytes(range_end) if range_end is not None else b""


class SnapshotSaved(NamedTuple):
    """What Client.snapshot_save wrote: the file, the revision it holds, its size
    in bytes, the SHA-256 of its LMDB payload, and the member it came from."""

    path: str
    revision: int
    size: int
    sha256: str
    member_id: int


__all__ = ["AuthenticationFailed", "Client", "Compare", "Op", "Unavailable", "prefix_range_end"]


def _urls(urls) -> list[str]:
    """A URL, a comma-separated list, or an iterable of URLs."""
    if isinstance(urls, str):
        return [u for u in urls.split(",") if u]
    return list(urls)
