"""What etcd's two client doors of a member share: the HTTP JSON gateway
(actors/gateway.py) and the gRPC door (actors/grpc_gateway.py).

Both are ordinary clients of their member's frontend (cairn.aio.Client) and
differ only in how requests and responses are spelt on the wire. Everything
that does not depend on the spelling lives here, once:

* the etcd API version both report;
* the process around a door (Door): an asyncio loop, the client of its own
  member's frontend, SIGTERM, and the door's limits (DoorLimits);
* how each request is sent: whether it is a write (never repeated after a
  timeout) and how long a call may wait (lock and campaign wait their turn);
* cairn's error codes as the gRPC status codes etcd's rpctypes gives them;
* the watches of one etcd watch stream (WatchSession): watch ids chosen by the
  client or the stream, create, cancel, progress requests and notifications,
  each watch's responses pumped to the stream. A door subclasses it to say how
  a response or an error is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from actors.auth_door import internal_token
from actors.base import Actor
from cairn import aio
from cairn.watch import is_progress_notify
from transport import messages as m
from transport.errors import CairnError
from transport.limits import holds, limit, limits, positive

# What the version and status calls report: the etcd API the doors speak.
# Clients such as Patroni pick their URL prefix from it (/v3 from 3.4 on).
ETCD_API_VERSION = "3.4.0"


# ---------------------------------------------------------------- the door process


@limits(
    holds(lambda l: l.client_timeout_slack_s > 0, "the frontend's Timeout must reach the client first"),
    positive("shutdown_grace_s"),
    holds(lambda l: l.http_body_overhead >= 2, "base64 alone adds a third"),
    holds(lambda l: l.grpc_overhead_bytes >= 0, "an overhead adds to max_request_bytes"),
)
class DoorLimits:
    """The doors' own bounds, each with its reason (the member's limits, such
    as max_request_bytes, are cairn/config.py's Limits)."""

    client_timeout_slack_s: float = limit(
        1.0,
        "A door's client may wait this much past the frontend's request_timeout_ms: it retries what provably never "
        "reached a Raft log (no leader yet, a leader change) until then, as etcd's server waits for a leader, and the "
        "frontend's own Timeout answer still arrives before the client gives up.")
    shutdown_grace_s: float = limit(
        1.0,
        "How long stopping waits for open streams and calls before closing them.")
    http_body_overhead: int = limit(
        2,
        "HTTP: base64 and JSON make a body larger than the request it carries.")
    grpc_overhead_bytes: int = limit(
        512 * 1024,
        "gRPC: etcd's grpcOverheadBytes, what a gRPC message may add to max_request_bytes.")


class Door(Actor):
    """An etcd door: an actor that runs an asyncio server instead of the actor
    loop and reaches its own member's frontend as an ordinary client
    (`self.client`), so its requests take the library's routing and
    consistency path. Subclasses open their server in `open_door` and close it
    in `close_door`; `self._stop` is set on SIGTERM."""

    door_limits = DoorLimits()
    # The MemberSpec field with the address this kind of door serves ("http", "grpc").
    address_field = ""

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.address = getattr(self.member, self.address_field)
        # Every member's door of this kind: a member list names them as the
        # members' client URLs, as etcd's does.
        self.door_urls = {member.id: getattr(member, self.address_field) for member in config.members}
        self.client: aio.Client | None = None
        self._stop: asyncio.Event | None = None

    def serve(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._stop.set)
        # The client's one endpoint is this member (see DoorLimits for its timeout).
        timeout = self.settings.request_timeout_ms / 1000 + self.door_limits.client_timeout_slack_s
        self.client = aio.Client([self.member.client], timeout=timeout, **self.client_security())
        await self.open_door(timeout)
        try:
            if not self.stopping:  # a SIGTERM that came before the loop's handler
                await self._stop.wait()
        finally:
            await self.close_door()

    def authenticate_options(self, peer) -> dict:
        """What a door's Authenticate carries: the member's internal token and the
        caller's address, so the frontend throttles failures per caller rather
        than per door (actors/auth_door.py)."""
        if not hasattr(self, "_internal_token"):
            self._internal_token = internal_token(self.data_dir)
        return {"token": self._internal_token, "peer": str(peer)}

    @contextlib.asynccontextmanager
    async def caller_client(self, token: str | None, client: aio.Client | None = None, require_leader: bool = False):
        """The client a stream's calls use (a watch stream's creates and
        cancels): with the caller's token, a client of this member of its own
        that sends that token with every request, so the frontend checks the
        caller (a stream's watches share one token), closed when the stream
        ends; without one, `client` (by default the door's)."""
        client = client or self.client
        if token is None:
            yield client
            return
        own = aio.Client([self.member.client], timeout=client.timeout, token=token, require_leader=require_leader,
                         **self.client_security())
        try:
            yield own
        finally:
            await own.aclose()

    async def open_door(self, client_timeout: float) -> None:
        """Start serving (the client is connected already)."""
        raise NotImplementedError

    async def close_door(self) -> None:
        """Stop serving and close the clients."""
        raise NotImplementedError

# ---------------------------------------------------------------- calls

# Requests that change nothing, so a client may send them again after a timeout.
_READS = (m.RangeRequest, m.LeaseTimeToLiveRequest, m.LeaseLeasesRequest, m.LeaseKeepAliveRequest,
          m.MemberListRequest, m.StatusRequest, m.LeaderRequest, m.MoveLeaderRequest)
# Maintenance reads: Hash, HashKV, and the pieces of a Snapshot.
_READS += (m.HashRequest, m.HashKVRequest, m.SnapshotRequest)
# Auth reads (they go through the log, and change nothing).
_READS += (m.AuthenticateRequest, m.AuthStatusRequest, m.AuthUserGetRequest, m.AuthUserListRequest,
           m.AuthRoleGetRequest, m.AuthRoleListRequest)


def is_write(message) -> bool:
    if isinstance(message, m.AlarmRequest):
        return message.action != m.ALARM_GET
    return not isinstance(message, _READS)


# A defragment copies the member's whole keyspace file (cairnctl defrag waits as long).
DEFRAGMENT_WAIT_S = 60.0


def call_timeout(message) -> float | None:
    """Lock and campaign wait for their turn: the member's wait limit, as the
    client library allows; a defragment as long as it copies; None is the
    client's default. A caller's shorter deadline still wins (call)."""
    if isinstance(message, (m.LockRequest, m.CampaignRequest)):
        return aio.Client.SERVICE_WAIT_S
    return DEFRAGMENT_WAIT_S if isinstance(message, m.DefragmentRequest) else None


async def call(client: aio.Client, message, timeout: float | None = None, endpoint: str | None = None,
               token: str | None = None, options: dict | None = None):
    """Send one request through the frontend as etcd's server would serve it;
    token: the caller's auth token (the frontend checks it)."""
    wait = call_timeout(message)
    if timeout is not None:
        wait = timeout if wait is None else min(wait, timeout)
    return await client.call(message, write=is_write(message), timeout=wait, endpoint=endpoint, token=token,
                             options=options)


# ---------------------------------------------------------------- errors

# gRPC status codes (grpc's codes.Code numbers).
GRPC_OK, GRPC_CANCELLED, GRPC_UNKNOWN, GRPC_INVALID_ARGUMENT, GRPC_DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
GRPC_NOT_FOUND, GRPC_FAILED_PRECONDITION, GRPC_RESOURCE_EXHAUSTED, GRPC_OUT_OF_RANGE = 5, 9, 8, 11
GRPC_UNIMPLEMENTED, GRPC_INTERNAL, GRPC_UNAVAILABLE, GRPC_DATA_LOSS = 12, 13, 14, 15

# cairn's error codes (transport/errors.py) -> the gRPC code etcd's rpctypes gives the same error.
ERROR_CODES = {
    "InvalidArgument": GRPC_INVALID_ARGUMENT, "EmptyKey": GRPC_INVALID_ARGUMENT, "KeyTooLong": GRPC_INVALID_ARGUMENT,
    "DuplicateKey": GRPC_INVALID_ARGUMENT, "TooManyOps": GRPC_INVALID_ARGUMENT, "ValueProvided": GRPC_INVALID_ARGUMENT,
    "LeaseProvided": GRPC_INVALID_ARGUMENT, "KeyNotFound": GRPC_INVALID_ARGUMENT, "RequestTooLarge": GRPC_INVALID_ARGUMENT,
    "MalformedRequest": GRPC_INVALID_ARGUMENT, "UnsupportedVersion": GRPC_INVALID_ARGUMENT,
    "Compacted": GRPC_OUT_OF_RANGE, "FutureRevision": GRPC_OUT_OF_RANGE, "LeaseTTLTooLarge": GRPC_OUT_OF_RANGE,
    "LeaseNotFound": GRPC_NOT_FOUND, "LeaseExists": GRPC_FAILED_PRECONDITION,
    "NoSpace": GRPC_RESOURCE_EXHAUSTED, "Corrupt": GRPC_DATA_LOSS, "TooManyRequests": GRPC_RESOURCE_EXHAUSTED,
    "NoLeader": GRPC_UNAVAILABLE, "NotLeader": GRPC_UNAVAILABLE, "Timeout": GRPC_UNAVAILABLE,
    "Unavailable": GRPC_UNAVAILABLE, "Indeterminate": GRPC_UNAVAILABLE, "Stopping": GRPC_UNAVAILABLE,
    "ElectionNotLeader": GRPC_FAILED_PRECONDITION, "LockLost": GRPC_FAILED_PRECONDITION,
    # auth, as etcd's rpctypes
    "PermissionDenied": 7, "AuthFailed": GRPC_INVALID_ARGUMENT, "InvalidAuthToken": 16,
    "AuthNotEnabled": GRPC_FAILED_PRECONDITION, "InvalidAuthManagement": GRPC_INVALID_ARGUMENT,
    "UserEmpty": GRPC_INVALID_ARGUMENT, "RoleEmpty": GRPC_INVALID_ARGUMENT,
    "UserAlreadyExist": GRPC_FAILED_PRECONDITION, "UserNotFound": GRPC_FAILED_PRECONDITION,
    "RoleAlreadyExist": GRPC_FAILED_PRECONDITION, "RoleNotFound": GRPC_FAILED_PRECONDITION,
    "RoleNotGranted": GRPC_FAILED_PRECONDITION, "PermissionNotGranted": GRPC_FAILED_PRECONDITION,
    "RootUserNotExist": GRPC_FAILED_PRECONDITION, "RootRoleNotExist": GRPC_FAILED_PRECONDITION,
    "NoPasswordUser": GRPC_INVALID_ARGUMENT,
}
# Membership changes (etcd's rpctypes: ErrGRPCMemberExist ... ErrGRPCNotSupportedForLearner).
ERROR_CODES.update({
    "MemberIDExists": GRPC_FAILED_PRECONDITION, "PeerURLExists": GRPC_FAILED_PRECONDITION,
    "MemberNotFound": GRPC_NOT_FOUND, "NotEnoughStartedMembers": GRPC_FAILED_PRECONDITION,
    "LearnerNotReady": GRPC_FAILED_PRECONDITION, "MemberNotLearner": GRPC_FAILED_PRECONDITION,
    "UnhealthyCluster": GRPC_UNAVAILABLE, "NotSupportedForLearner": GRPC_UNAVAILABLE,
    "ConfChangePending": GRPC_FAILED_PRECONDITION,
})
AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"
# Errors whose message is etcd's own whatever cairn's says (the client library
# words a request it refuses to send its own way).
_ETCD_MESSAGES = {"RequestTooLarge": "etcdserver: request is too large"}


def grpc_status(code: str, message: str) -> tuple[int, str]:
    """(gRPC code, message) for one of cairn's error codes, as etcd answers it."""
    return ERROR_CODES.get(code, GRPC_UNKNOWN), _ETCD_MESSAGES.get(code, message)


def status_of(error: Exception) -> tuple[int, str]:
    if isinstance(error, CairnError):
        return grpc_status(error.code, error.message)
    if isinstance(error, ValueError):  # the client library's check of an argument
        return GRPC_INVALID_ARGUMENT, str(error)
    return GRPC_UNKNOWN, f"cairn: {type(error).__name__}: {error}"


# ---------------------------------------------------------------- watch streams

DUPLICATE_WATCH_ID = "etcdserver: duplicate watch ID"


class WatchSession:
    """The watches of one etcd watch stream, numbered from 0 as each etcd gRPC
    watch stream numbers them (or with the id the client chose), each pumping
    its responses into the stream. Subclasses write: `emit` one response of
    watch `watch_id`, `emit_error` an error of the stream, `create_failed` a
    create the member refused."""

    def __init__(self, client: aio.Client, log):
        self.client = client
        self.log = log
        self.watches: dict[int, aio.AsyncWatch] = {}
        self.pumps: dict[int, asyncio.Task] = {}
        self.next_id = 0
        # watches that asked for progress notifications, and progress requests not yet answered
        self.progress_notify: set[int] = set()
        self.progress_pending: dict[int, int] = {}
        self.fragment: set[int] = set()

    # ------------------------------------------------------------ to override

    async def emit(self, response: m.WatchResponse, watch_id: int) -> None:
        raise NotImplementedError

    async def emit_error(self, grpc_code: int, message: str) -> None:
        raise NotImplementedError

    async def create_failed(self, request: m.WatchCreateRequest, watch_id: int, grpc_code: int, message: str) -> None:
        if grpc_code in (GRPC_UNAVAILABLE, GRPC_RESOURCE_EXHAUSTED):
            await self.emit_error(grpc_code, message)
            return
        # A watch the member refuses (permission denied, a bad range): created
        # and canceled at once with the reason, as etcd's server answers a
        # create that fails; the stream goes on.
        await self.emit(m.WatchResponse(m.ResponseHeader(0, 0, 0, 0), watch_id, created=True, canceled=True,
                                        cancel_reason=message), watch_id)

    # ------------------------------------------------------------ requests

    async def handle(self, message) -> None:
        if isinstance(message, m.WatchCreateRequest):
            await self.create(message)
        elif isinstance(message, m.WatchCancelRequest):
            await self.cancel(message.watch_id)
        else:
            for watch_id, watch in self.watches.items():
                self.progress_pending[watch_id] = self.progress_pending.get(watch_id, 0) + 1
                watch.request_progress()

    async def create(self, request: m.WatchCreateRequest) -> None:
        watch_id = request.watch_id or self.next_id
        if watch_id in self.watches:
            await self.emit(m.WatchResponse(m.ResponseHeader(0, 0, 0, 0), watch_id, created=True, canceled=True,
                                            cancel_reason=DUPLICATE_WATCH_ID), watch_id)
            return
        try:
            watch = await self.client.open_watch(
                request.key, range_end=request.range_end or None, start_revision=request.start_revision,
                prev_kv=request.prev_kv, progress_notify=request.progress_notify, filters=request.filters,
                fragment=request.fragment)
        except (CairnError, ValueError) as error:
            await self.create_failed(request, watch_id, *status_of(error))
            return
        self.next_id = max(self.next_id, watch_id) + 1
        self.watches[watch_id] = watch
        if request.progress_notify:
            self.progress_notify.add(watch_id)
        if request.fragment:
            self.fragment.add(watch_id)
        header = watch.watch.created_header or m.ResponseHeader(0, 0, 0, 0)
        await self.emit(m.WatchResponse(header, watch_id, created=True), watch_id)
        self.pumps[watch_id] = asyncio.create_task(self.pump(watch_id, watch))

    async def pump(self, watch_id: int, watch: aio.AsyncWatch) -> None:
        try:
            while (response := await watch.next()) is not None:
                if is_progress_notify(response):
                    # The member also marks how far a watch is complete with empty
                    # responses; etcd sends them only when asked. The answer to a
                    # progress request carries watch_id -1, as etcd 3.4's.
                    if self.progress_pending.get(watch_id):
                        self.progress_pending[watch_id] -= 1
                        await self.emit(response, -1)
                    elif watch_id in self.progress_notify:
                        await self.emit(response, watch_id)
                    continue
                await self.emit(response, watch_id)
        except CairnError as error:
            await self.emit_error(*status_of(error))
        self.watches.pop(watch_id, None)

    async def cancel(self, watch_id: int) -> None:
        watch = self.watches.pop(watch_id, None)
        if watch is None:
            return  # etcd ignores a cancel of an unknown id
        pump = self.pumps.pop(watch_id)
        pump.cancel()
        response = await watch.cancel()
        header = response.header if response is not None else (watch.watch.created_header or m.ResponseHeader(0, 0, 0, 0))
        await self.emit(m.WatchResponse(header, watch_id, canceled=True), watch_id)

    async def close(self, cancel_watches: bool = True) -> None:
        for pump in self.pumps.values():
            pump.cancel()
        watches, self.watches = list(self.watches.values()), {}
        if not cancel_watches:
            return
        for watch in watches:
            try:
                await asyncio.shield(watch.cancel())
            except (CairnError, asyncio.CancelledError):
                pass
