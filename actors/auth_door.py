"""The frontend's half of etcd v3 auth: passwords, tokens, throttling, checks.

Theory of operation
-------------------
The auth *state* (users, roles, permissions, enabled, revision) is replicated:
store/auth.py, changed only through the log. This module is what one member's
frontend adds around it, none of which is replicated:

* Passwords. AuthUserAdd and AuthUserChangePassword carry the client's
  password only as far as the frontend that takes them: it hashes it
  (`hash_password`: scrypt, n=2**14, r=8, p=1, a random 16-byte salt, encoded
  "scrypt$n$r$p$salt$hash") and proposes the hash with the password emptied,
  so the log, snapshots and other members never see a password. scrypt costs
  ~0.1-0.2 s of CPU, so hashing and verifying run on one worker thread
  (`Hasher`), never on the loop; the loop learns a job is done through an
  inproc socket it polls like any other. Nothing here logs a password.

* Authenticate (etcd's simple tokens). Served by the member, not the log, but
  after a read index as a linearizable range is (actors/frontend.py), so the
  hash checked is the one of every password change acknowledged anywhere
  before: the password is verified against the stored hash (an LMDB read
  transaction of the member's keyspace) and a token "<random>.<n>" is kept in this member's
  memory with the user and the auth revision at issue. A token unused for
  auth_token_ttl_s expires; each use restarts its TTL (etcd's simpleTokenTTL
  keeper). Tokens are per member, as etcd's simple tokens are: a client that
  fails over authenticates again (cairn/calls.py does it transparently). A
  token issued before the current auth revision stays valid, but every check
  reads the current state, so a revoked permission takes effect at once.

* Throttling. A failed authentication (unknown user, wrong password,
  a no-password user) makes both the user name and the connection wait
  auth_failure_delay_ms, doubling with each further failure (up to 64x); an
  attempt inside the wait is answered AuthFailed without looking at the
  password. An attempt made while another of the same user or connection is
  being verified waits for that one (the frontend parks it, up to
  MAX_PARKED_AUTHENTICATIONS) and is then judged as if it came then: so
  parallel guesses are no faster than serial ones, and several clients
  logging in as one user at once (Patroni's members, say) all get in. A success clears the user's and the connection's count. (etcd has
  no such limit; it is ours. A guesser can thus delay a user's own login by
  failing on purpose; it cannot make guessing fast.)

* Identity. A request's envelope options carry {"token": ...}. With auth
  disabled every request runs unchecked (a token is ignored, as etcd ignores
  it). With auth enabled a known token names the user, an unknown or expired
  one is InvalidAuthToken, and no token is user "" (every check fails: etcd's
  permission denied). The member's own services (the Lock and Election
  services of the lease actor) use the member's internal token
  (`internal_token`, a random secret in <data_dir>/run/, readable by the
  member's user only): they run as the member, and the frontend checks the
  caller's permission on the lock's keys before handing the request over.

* Checks. Writes and auth management go through the log carrying the user
  (transport/entries.py) and are checked by the state machine as of their
  entry (store/apply.py, etcd's checks in its applier). Reads (range) are
  checked against this member's state when they are served, after the read
  index wait; watch creation, the lock and election services, and what only
  root may do (maintenance, move-leader, membership, anything unknown) are
  checked when they arrive. A LeaseTimeToLive asking for the lease's keys
  needs read permission on every key attached (etcd 3.5's
  checkLeaseTimeToLive), checked after its read index (`check_lease_keys`).
  Status, member list, alarm list, auth status, a watch's cancel, progress
  request and keep-alive, and the lease keep-alive family need no permission
  (etcd's clients call them to find their way; knowing a lease's id is what
  a keep-alive needs), nor do metrics (etcd's /metrics asks for none).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import queue
import secrets
import threading
from collections import OrderedDict

import zmq

from store.auth import AuthStore
from transport.key_ranges import prefix_range_end
from transport.errors import AuthFailedError, AuthNotEnabledError, InvalidAuthTokenError
from transport.messages import (
    ALARM_GET,
    AlarmRequest,
    AuthStatusRequest,
    CampaignRequest,
    DeleteRangeRequest,
    LeaderRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseTimeToLiveRequest,
    LockRequest,
    MemberListRequest,
    MetricsRequest,
    ProclaimRequest,
    RangeRequest,
    ResignRequest,
    StatusRequest,
    TxnRequest,
    UnlockRequest,
    WatchCancelRequest,
    WatchProgressRequest,
)

SCRYPT_N, SCRYPT_R, SCRYPT_P, SALT_BYTES, HASH_BYTES = 2**14, 8, 1, 16, 32
INTERNAL_TOKEN_FILE = "internal.token"
MAX_TOKENS = 100_000
MAX_THROTTLED = 100_000
MAX_FAILURE_DOUBLINGS = 6  # the wait grows to at most 64x auth_failure_delay_ms
# Attempts waiting for another of their user or caller to be verified; each
# verification is ~0.1 s of scrypt, so more would wait past a request timeout.
MAX_PARKED_AUTHENTICATIONS = 100

# Requests any caller may make with auth enabled (see the docstring). A watch's
# cancel, progress request and keep-alive act only on the watches of the
# connection that sends them, each checked when it was created (etcd checks
# none of them either); the client library sends them without a token.
OPEN_REQUESTS = (StatusRequest, MetricsRequest, MemberListRequest, AuthStatusRequest,
                 LeaseKeepAliveRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest,
                 WatchCancelRequest, WatchProgressRequest)


def hash_password(password: str) -> str:
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=HASH_BYTES)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def internal_token(data_dir: str) -> str:
    """The member's own secret token (created once, atomically, mode 0600), by
    which its services reach its frontend as the member itself."""
    run_dir = os.path.join(data_dir, "run")
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, INTERNAL_TOKEN_FILE)
    try:
        with open(path) as handle:
            token = handle.read().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("internal." + secrets.token_urlsafe(32))
    try:
        os.link(temporary, path)  # fails if another process made it first: then theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    with open(path) as handle:
        return handle.read().strip()


class Hasher:
    """One worker thread for scrypt; results are taken on the loop's thread.

    submit(function, done, stopped): function() runs on the worker; done(result)
    runs on the loop when `ready()` (the handler of `socket`, polled by the
    actor) drains it. A job still queued or running when the frontend stops is
    answered by its stopped(error) instead (`stop_pending`), so a caller whose
    password is being hashed gets Stopping rather than silence; its result, if
    it comes, is dropped."""

    def __init__(self, context: zmq.Context, name: str):
        self.address = f"inproc://{name}-{secrets.token_hex(4)}"
        self.socket = context.socket(zmq.PULL)
        self.socket.bind(self.address)
        self.context = context
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.pending: dict[int, object] = {}  # job number -> stopped(error), until done or stopped
        self.next_job = 0
        self.closing = False
        self.thread = threading.Thread(target=self._work, name="frontend-hasher", daemon=True)
        self.thread.start()

    def submit(self, function, done, stopped) -> None:
        self.next_job += 1
        self.pending[self.next_job] = stopped
        self.jobs.put((self.next_job, function, done))

    def _work(self) -> None:
        wake = self.context.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self.address)
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                if self.closing:
                    continue  # answered by stop_pending; no scrypt for a caller already told
                number, function, done = job
                try:
                    result = function()
                except Exception as error:  # noqa: BLE001 - handed back to the loop
                    result = error
                self.results.put((number, done, result))
                wake.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:
            return
        finally:
            wake.close()

    def ready(self, _frames) -> None:
        while True:
            try:
                number, done, result = self.results.get_nowait()
            except queue.Empty:
                return
            if self.pending.pop(number, None) is not None:
                done(result)

    def stop_pending(self, error) -> int:
        """Answer every job not done yet with error; how many there were."""
        self.closing = True
        stopped, self.pending = list(self.pending.values()), {}
        for answer in stopped:
            answer(error)
        return len(stopped)

    def close(self) -> None:
        self.closing = True
        self.jobs.put(None)
        self.thread.join(timeout=2)
        self.socket.close(linger=0)


class Tokens:
    """token -> [user, auth revision at issue, expiry, password hash at issue];
    ordered by last use."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self.tokens: OrderedDict[str, list] = OrderedDict()
        self.counter = 0

    def issue(self, user: str, revision: int, now: float, password_hash: str = "") -> str:
        self.counter += 1
        token = f"{secrets.token_urlsafe(12)}.{self.counter}"
        self.tokens[token] = [user, revision, now + self.ttl_s, password_hash]
        while len(self.tokens) > MAX_TOKENS:
            self.tokens.popitem(last=False)
        return token

    def resolve(self, token, now: float) -> list | None:
        record = self.tokens.get(token) if isinstance(token, str) else None
        if record is None:
            return None
        if record[2] <= now:
            del self.tokens[token]
            return None
        record[2] = now + self.ttl_s
        self.tokens.move_to_end(token)
        return record

    def forget(self, token) -> None:
        self.tokens.pop(token, None)

    def sweep(self, now: float) -> None:
        while self.tokens:
            token, record = next(iter(self.tokens.items()))
            if record[2] > now:
                return
            del self.tokens[token]


class Throttle:
    """Failed authentications per key (a user name, a connection)."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.failures: OrderedDict[object, tuple[int, float]] = OrderedDict()  # key -> (count, not before)
        self.busy: set = set()  # keys with an attempt being verified

    def throttled(self, keys, now: float) -> bool:
        """Whether a failure's wait holds any of keys back."""
        return any((failure := self.failures.get(key)) is not None and failure[1] > now for key in keys)

    def verifying(self, keys) -> bool:
        """Whether an attempt of any of keys is being verified."""
        return any(key in self.busy for key in keys)

    def allowed(self, keys, now: float) -> bool:
        return not self.verifying(keys) and not self.throttled(keys, now)

    def failed(self, keys, now: float) -> None:
        for key in keys:
            count = self.failures.pop(key, (0, 0.0))[0] + 1
            self.failures[key] = (count, now + self.delay_s * 2 ** min(count - 1, MAX_FAILURE_DOUBLINGS))
        while len(self.failures) > MAX_THROTTLED:
            self.failures.popitem(last=False)

    def succeeded(self, keys) -> None:
        for key in keys:
            self.failures.pop(key, None)


def service_needs(request):
    """A request standing for the keys a Lock or Election call touches, as the
    recipes (cairn/concurrency.py) do: read and write under `name/`, or the
    write of one held key; None for requests that are not services'."""
    if isinstance(request, (LockRequest, CampaignRequest)):
        prefix = request.name + b"/"
        end = prefix_range_end(prefix)
        return TxnRequest(success=(RangeRequest(prefix, end), DeleteRangeRequest(prefix, end)))
    if isinstance(request, LeaderRequest):
        prefix = request.name + b"/"
        return RangeRequest(prefix, prefix_range_end(prefix))
    if isinstance(request, UnlockRequest):
        return DeleteRangeRequest(request.key)
    if isinstance(request, (ProclaimRequest, ResignRequest)):
        return DeleteRangeRequest(request.leader.key)
    return None


class AuthDoor:
    """One frontend's tokens, throttle and checks (see the module docstring)."""

    def __init__(self, env, data_dir: str, ttl_s: float, failure_delay_s: float):
        self.env = env
        self.store = AuthStore(env)
        self.tokens = Tokens(ttl_s)
        self.throttle = Throttle(failure_delay_s)
        self.internal = internal_token(data_dir)
        self.next_sweep = 0.0
        self.peer = None  # the caller a door's request names (set by identify)
        self.new_batch()

    def reopen(self, env) -> None:
        """The keyspace environment after a defragment."""
        self.env = env
        self.store = AuthStore(env)
        self.new_batch()

    def new_batch(self) -> None:
        """A new batch of client frames: whether auth is enabled is read again
        (once per batch, not per request: with auth off that read was a read
        transaction per request on the door's hot path)."""
        self.enabled_in_batch: bool | None = None

    def _enabled(self) -> bool:
        if self.enabled_in_batch is None:
            with self.env.begin() as txn:
                self.enabled_in_batch = self.store.enabled(txn)
        return self.enabled_in_batch

    def identify(self, options: dict, now: float) -> str | None:
        """The user a request runs as: None when unchecked (auth disabled, or
        the member's own services); "" when no token came."""
        token = options.get("token") if options else None
        # a door's Authenticate names its caller (the door itself is one connection for all)
        self.peer = options.get("peer") if token is not None and token == self.internal else None
        if token is not None and token == self.internal:
            return None
        if not self._enabled():
            return None
        with self.env.begin() as txn:
            if token is None:
                return ""
            record = self.tokens.resolve(token, now)
            if record is None:
                raise InvalidAuthTokenError()
            found = self.store.user(txn, record[0])
            if found is None or found[0] != record[3]:
                # deleted, or its password changed since: its tokens end (as etcd's do)
                self.tokens.forget(token)
                raise InvalidAuthTokenError()
        return record[0]

    def check_arrival(self, user: str | None, request) -> None:
        """The checks made when a request arrives: watch creation, the
        services, and what only root may do. Writes and auth management are
        the state machine's to check (as of their entry), ranges are checked
        when served (check_read)."""
        if user is None or isinstance(request, OPEN_REQUESTS):
            return
        if isinstance(request, AlarmRequest) and request.action == ALARM_GET:
            return
        needs = service_needs(request)
        with self.env.begin() as txn:
            if not self.store.enabled(txn):
                return
            self.store.check(txn, user, needs if needs is not None else request)

    def check_read(self, txn, user: str, request) -> None:
        if self.store.enabled(txn):
            self.store.check(txn, user, request)

    def check_lease_keys(self, txn, user: str, lease_keys) -> None:
        """A TimeToLive with keys: read permission on each key attached to the
        lease (none attached, or no such lease: nothing to check), as etcd."""
        if self.store.enabled(txn):
            for key in lease_keys:
                self.store.check(txn, user, RangeRequest(key))

    # ------------------------------------------------------------ authenticate

    def begin_authenticate(self, identity: bytes, name: str, now: float, peer: str | None = None):
        """(keys, stored hash) for a verification to run; None when another
        attempt of the user or caller is being verified (try again after it);
        or raises: AuthNotEnabled, or AuthFailed for an attempt refused without
        verifying. peer: the caller a door named (identify's `peer` when the
        request arrived)."""
        keys = (("user", name), ("connection", identity) if peer is None else ("peer", peer))
        with self.env.begin() as txn:
            if not self.store.enabled(txn):
                raise AuthNotEnabledError()
            if self.throttle.throttled(keys, now):
                raise AuthFailedError()
            if self.throttle.verifying(keys):
                return None
            found = self.store.user(txn, name)
        if found is None or found[2] or not found[0]:  # unknown, or a no-password user
            self.throttle.failed(keys, now)
            raise AuthFailedError()
        self.throttle.busy.update(keys)
        return keys, found[0]

    def finish_authenticate(self, keys, verified: bool, name: str, now: float) -> str:
        """The token for a verified password; AuthFailed otherwise."""
        self.throttle.busy.difference_update(keys)
        if verified is not True:
            self.throttle.failed(keys, now)
            raise AuthFailedError()
        self.throttle.succeeded(keys)
        with self.env.begin() as txn:
            revision = self.store.revision(txn)
            found = self.store.user(txn, name)
        return self.tokens.issue(name, revision, now, found[0] if found else "")

    def on_timer(self, now: float) -> None:
        if now >= self.next_sweep:
            self.next_sweep = now + 1.0
            self.tokens.sweep(now)
