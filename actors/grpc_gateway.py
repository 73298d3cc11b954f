"""The gRPC door: etcd v3's gRPC API, served per member.

Theory of operation
-------------------
Most software that uses etcd speaks its gRPC API (etcdctl, Go's clientv3 and
everything built on it, python-etcd3 and its forks, jetcd, ...). This actor
serves that API on the member's `grpc` address from the config, with grpcio's
asyncio server: etcdserverpb's KV, Watch, Lease, Cluster (MemberList,
MemberAdd/Remove/Update/Promote), Maintenance (Status, Alarm, MoveLeader, Hash,
HashKV, the Snapshot stream) and Auth (Authenticate, AuthEnable/Disable, 3.5's
AuthStatus, users, roles and permissions), and etcd's v3lock and v3election
services. The wire contract is etcd 3.4's .proto (actors/etcdpb/), so etcd's clients work
unchanged.

Like the HTTP gateway (actors/gateway.py) it is an ordinary client of its own
member's frontend (cairn.aio.Client with that one endpoint), so every request
takes the same routing and consistency path as the library's. The translation
between etcd's protobufs and cairn's messages is pure and lives in
actors/grpc_wire.py; what both doors share (which requests are writes, error
codes, the watch stream's bookkeeping) is in actors/etcd_api.py.

Metadata etcd's clients send:
* `hasleader: true` (clientv3's WithRequireLeader, which etcdctl and clientv3
  use for watch and keep-alive streams): the request is sent with the client
  library's require_leader option to this member only, so a member that has
  lost its leader answers UNAVAILABLE "etcdserver: no leader" at once instead of
  waiting. A stream checks it when it opens.
* `token` (clientv3 sends it after Authenticate): passed on with the call to
  the frontend, which checks it (actors/auth_door.py), on unary calls and on
  streams (a Watch or Observe stream with a token gets a client of its own
  that sends it). cairn's tokens are per member, so the door's Authenticate
  answers a token of every member (cluster_token) and each door passes on its
  own member's part; see `authenticate`. A token is never logged.

Errors are etcd's gRPC statuses (etcd_api.ERROR_CODES). A request protobuf
cannot parse is INTERNAL "grpc: error unmarshalling request", as grpc-go says;
a request larger than max_request_bytes plus etcd's 512 KiB of gRPC overhead is
refused by grpcio with RESOURCE_EXHAUSTED, as etcd's is. The door never dies of
bad input; if it dies for another reason the supervisor restarts it.

Snapshot streams this member's snapshot file as it is (the LMDB copy, then its
SHA-256 in the last message, as etcd's stream ends with the digest of its
data), so `etcdctl snapshot save` writes cairn's snapshot file.

Streams: a Watch stream carries any number of watches (etcd_api.WatchSession);
it ends when the client closes its side, as etcd's does. LeaseKeepAlive
answers each request with one response. Observe (v3election) sends the
election's leader and each change of it. On SIGTERM the door ends every open
stream with UNAVAILABLE "etcdserver: server stopped" (so clients resume on
another member, as they do when an etcd member stops) and stops within
etcd_api.DoorLimits.shutdown_grace_s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json

import grpc
from google.protobuf.message import DecodeError

from actors import etcd_api
from actors import grpc_wire as gw
from actors import tls
from actors.etcdpb import rpc_pb2, v3election_pb2
from cairn import aio
from cairn.requests import prefix_range_end
from cairn.config import parse_http_address
from cairn.watch import is_progress_notify
from transport import messages as m
from transport.errors import CairnError

SERVER_STOPPED = "etcdserver: server stopped"
NO_ELECTION_LEADER = "election: no leader"
# How long a snapshot's first piece may take: the member makes its copy first.
SNAPSHOT_WAIT_S = 60.0
# How long Authenticate waits for the other members' tokens.
OTHER_MEMBERS_AUTH_S = 2.0
CLUSTER_TOKEN_PREFIX = "cairn-members."


def cluster_token(tokens: dict[int, str]) -> str:
    """One token of several members' tokens: {member id: token} as compact JSON
    in URL-safe base64 (gRPC metadata values are ASCII)."""
    body = json.dumps({format(member_id, "x"): token for member_id, token in sorted(tokens.items())},
                      separators=(",", ":"))
    return CLUSTER_TOKEN_PREFIX + base64.urlsafe_b64encode(body.encode()).decode()


def member_token(token: str | None, member_id: int) -> str | None:
    """The part of a cluster_token for member_id; any other token as it is (the
    frontend judges it). A cluster token without this member's part is sent
    as it is, so the member answers InvalidAuthToken."""
    if not token or not token.startswith(CLUSTER_TOKEN_PREFIX):
        return token
    try:
        tokens = json.loads(base64.urlsafe_b64decode(token[len(CLUSTER_TOKEN_PREFIX):].encode()))
        part = tokens.get(format(member_id, "x")) if isinstance(tokens, dict) else None
    except (ValueError, UnicodeDecodeError):
        return token
    return part if isinstance(part, str) else token

_STATUS = {code.value[0]: code for code in grpc.StatusCode}


class Status(Exception):
    """End the call with this gRPC status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _status_of(error: Exception) -> Status:
    if isinstance(error, Status):
        return error
    if isinstance(error, gw.BadRequest):
        return Status(etcd_api.GRPC_INVALID_ARGUMENT, str(error))
    return Status(*etcd_api.status_of(error))


def _parse(request_class, raw: bytes):
    try:
        return request_class.FromString(raw)
    except DecodeError as error:
        raise Status(etcd_api.GRPC_INTERNAL, f"grpc: error unmarshalling request: {error}") from None


class GrpcActor(etcd_api.Door):
    name = "grpc"
    address_field = "grpc"

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.leader_client: aio.Client | None = None
        self.server: grpc.aio.Server | None = None
        self.member_clients: dict[int, aio.Client] = {}  # other members' frontends, for Authenticate

    # ------------------------------------------------------------------ process

    async def open_door(self, client_timeout: float) -> None:
        # A second client of this member sends with require_leader, for calls with `hasleader`.
        self.leader_client = aio.Client([self.member.client], timeout=client_timeout, require_leader=True,
                                        **self.client_security())
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self.limits.max_request_bytes + self.door_limits.grpc_overhead_bytes),
            ("grpc.max_send_message_length", (1 << 31) - 1),
            ("grpc.so_reuseport", 0),
        ])
        self.server.add_generic_rpc_handlers(self.handlers())
        host, port = parse_http_address(self.address)
        if tls.is_tls(self.address):
            self.server.add_secure_port(f"{host}:{port}", tls.grpc_server_credentials(self.config, self.member.name))
        else:
            self.server.add_insecure_port(f"{host}:{port}")
        await self.server.start()
        self.log.info("grpc_listening", grpc=self.address, frontend=self.member.client)

    async def close_door(self) -> None:
        self._stop.set()  # streams end themselves with UNAVAILABLE
        await self.server.stop(self.door_limits.shutdown_grace_s)
        await self.client.aclose()
        await self.leader_client.aclose()
        for client in self.member_clients.values():
            await client.aclose()
        self.log.info("grpc_stopped")

    def handlers(self) -> list:
        by_service: dict[str, dict] = {}
        special = {
            ("etcdserverpb.Watch", "Watch"): self.watch,
            ("etcdserverpb.Lease", "LeaseKeepAlive"): self.lease_keepalive,
            ("etcdserverpb.Auth", "Authenticate"): self.authenticate,
            ("etcdserverpb.Maintenance", "Snapshot"): self.snapshot,
            ("v3electionpb.Election", "Observe"): self.observe,
            ("v3electionpb.Election", "Leader"): self.leader,
        }
        for (service, method), (kind, request_class, _, to_message, to_pb) in \
                gw.services(self.door_urls, etcd_api.ETCD_API_VERSION).items():
            behavior = special.get((service, method)) or self._unary(request_class, to_message, to_pb)
            make = {gw.UNARY: grpc.unary_unary_rpc_method_handler, gw.STREAM_STREAM: grpc.stream_stream_rpc_method_handler,
                    gw.UNARY_STREAM: grpc.unary_stream_rpc_method_handler}[kind]
            # No (de)serializers: requests are parsed in the handler, so a bad one
            # gets a status of ours and the door's log says why.
            by_service.setdefault(service, {})[method] = make(self._guarded(behavior, f"{service}/{method}"))
        return [grpc.method_handlers_generic_handler(service, methods) for service, methods in by_service.items()]

    # ------------------------------------------------------------------ helpers

    def _guarded(self, behavior, method: str):
        """Every failure becomes a gRPC status; nothing escapes to kill the door."""

        async def handler(request, context):
            try:
                return await behavior(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as error:  # noqa: BLE001 — every error is answered
                if not isinstance(error, (Status, CairnError, gw.BadRequest, ValueError)):
                    self.log.exception("grpc_handler_failed", method=method)
                status = _status_of(error)
                self.log.info("grpc_error", method=method, code=status.code, message=status.message)
                await context.abort(_STATUS[status.code], status.message)

        return handler

    def _authorize(self, metadata: dict) -> str | None:
        """etcd's `token` metadata: passed on with the call to the frontend,
        which checks it (actors/auth_door.py); of a token of every member
        (cluster_token), this member's part. Never logged."""
        return member_token(metadata.get("token"), self.member.id)

    def _token(self, context) -> str | None:
        metadata = {key.lower(): value for key, value in (context.invocation_metadata() or ())}
        return self._authorize(metadata)

    def _route(self, context) -> tuple[aio.Client, str | None]:
        """(client, endpoint) for a call: with `hasleader`, the require-leader
        client and this member only, so no leader is an answer, not a wait."""
        metadata = {key.lower(): value for key, value in (context.invocation_metadata() or ())}
        self._authorize(metadata)
        if metadata.get("hasleader") == "true":
            return self.leader_client, self.member.client
        return self.client, None

    @staticmethod
    def _deadline(context) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else max(remaining, 0.001)

    def _unary(self, request_class, to_message, to_pb):
        async def behavior(raw: bytes, context) -> bytes:
            message = to_message(_parse(request_class, raw))
            client, endpoint = self._route(context)
            response = await etcd_api.call(client, message, timeout=self._deadline(context), endpoint=endpoint,
                                           token=self._token(context))
            return to_pb(response).SerializeToString()

        return behavior

    async def _require_leader(self, context) -> aio.Client:
        """A stream's check of `hasleader` when it opens; the client its calls use."""
        client, endpoint = self._route(context)
        if endpoint is not None:
            await client.call(m.StatusRequest(), write=False, endpoint=endpoint)
        return client

    @contextlib.asynccontextmanager
    async def _stream_client(self, context):
        """The client a stream's watches use: with the caller's `token`, a client
        of this member of its own that sends that token with every request (a
        client's watches share one token), closed when the stream ends;
        otherwise the door's (see _require_leader)."""
        client = await self._require_leader(context)
        async with self.caller_client(self._token(context), client, require_leader=client is self.leader_client) as own:
            yield own

    async def _until_stopped(self, body) -> None:
        """Run a stream's body until it ends or the door stops (then UNAVAILABLE)."""
        task = asyncio.ensure_future(body)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled():
            task.result()  # its error, if any, ends the call
            return
        raise Status(etcd_api.GRPC_UNAVAILABLE, SERVER_STOPPED)

    # ------------------------------------------------------------------ unary specials

    async def authenticate(self, raw: bytes, context) -> bytes:
        """A token for the caller. cairn's tokens are per member; etcd's simple
        tokens are issued through its log and valid on every member, and
        clientv3 (etcdctl) authenticates with one endpoint and sends the token
        to any. So once this member has accepted the password, the door also
        authenticates at every other member of the config and answers one
        token carrying each member's (cluster_token); each door passes on its
        own member's part. A member that is down is left out (a call there is
        InvalidAuthToken, and clientv3 authenticates again)."""
        request = _parse(rpc_pb2.AuthenticateRequest, raw)  # the password in it is never logged
        client, endpoint = self._route(context)
        message = m.AuthenticateRequest(request.name, request.password)
        response = await etcd_api.call(client, message, timeout=self._deadline(context), endpoint=endpoint,
                                       options=self.authenticate_options(context.peer()))
        token = response.token
        others = [member for member in self.config.members if member.id != self.member.id]
        if token and others:
            wait = min(self._deadline(context) or OTHER_MEMBERS_AUTH_S, OTHER_MEMBERS_AUTH_S)
            answers = await asyncio.gather(*(self._authenticate_at(member, message, wait) for member in others),
                                           return_exceptions=True)
            tokens = {self.member.id: token}
            tokens.update((member.id, answer.token) for member, answer in zip(others, answers)
                          if isinstance(answer, m.AuthenticateResponse) and answer.token)
            token = cluster_token(tokens)
        return rpc_pb2.AuthenticateResponse(header=gw.header(response.header), token=token).SerializeToString()

    async def _authenticate_at(self, member, message: m.AuthenticateRequest, wait: float) -> m.AuthenticateResponse:
        client = self.member_clients.get(member.id)
        if client is None:
            client = self.member_clients[member.id] = aio.Client(
                [member.client], timeout=self.client.timeout, **self.client_security(member))
        return await client.call(message, write=False, timeout=wait, endpoint=member.client)

    async def snapshot(self, raw: bytes, context) -> None:
        """Maintenance.Snapshot: this member's snapshot file as it is, pulled
        piece by piece from its frontend (cairn.Client.snapshot_save's pieces)
        and written a piece a message; the last message carries the SHA-256 of
        the copy, checked here against what was sent, so a client that saves
        the stream (etcdctl snapshot save) holds cairn's snapshot file."""
        _parse(rpc_pb2.SnapshotRequest, raw)
        token = self._token(context)
        timeout = max(self.client.timeout, SNAPSHOT_WAIT_S)

        async def body():
            digest = hashlib.sha256()
            response = await etcd_api.call(self.client, m.SnapshotRequest(), timeout=timeout,
                                           endpoint=self.member.client, token=token)
            while True:
                digest.update(response.blob)
                await context.write(gw.snapshot_response(response).SerializeToString())
                if response.remaining_bytes == 0:
                    break
                request = m.SnapshotRequest(response.snapshot_id, response.offset + len(response.blob))
                response = await etcd_api.call(self.client, request, timeout=timeout, endpoint=self.member.client,
                                               token=token)
            if digest.digest() != response.sha256:
                raise Status(etcd_api.GRPC_INTERNAL, "cairn: snapshot checksum mismatch: the member's copy and what was sent differ")
            await context.write(gw.snapshot_digest(response).SerializeToString())

        await self._until_stopped(body())

    async def leader(self, raw: bytes, context) -> bytes:
        message = gw.leader_request(_parse(v3election_pb2.LeaderRequest, raw))
        client, endpoint = self._route(context)
        response = await etcd_api.call(client, message, timeout=self._deadline(context), endpoint=endpoint,
                                       token=self._token(context))
        if response.kv is None:
            raise Status(etcd_api.GRPC_UNKNOWN, NO_ELECTION_LEADER)  # as etcd's v3election answers
        return gw.leader_response(response).SerializeToString()

    # ------------------------------------------------------------------ streams

    async def lease_keepalive(self, requests, context) -> None:
        client = await self._require_leader(context)
        endpoint = self.member.client if client is self.leader_client else None
        token = self._token(context)

        async def body():
            async for raw in requests:
                request = gw.lease_keepalive_request(_parse(rpc_pb2.LeaseKeepAliveRequest, raw))
                response = await client.call(request, write=False, endpoint=endpoint, token=token)
                await context.write(gw.lease_keepalive_response(response).SerializeToString())

        await self._until_stopped(body())

    async def watch(self, requests, context) -> None:
        async with self._stream_client(context) as client:
            await self._watch(client, requests, context)

    async def _watch(self, client: aio.Client, requests, context) -> None:
        session = GrpcWatchSession(client, context, self.log, self.limits.max_request_bytes)

        async def read():
            async for raw in requests:
                message = gw.watch_request(_parse(rpc_pb2.WatchRequest, raw))
                if message is not None:
                    await session.handle(message)
            # the client closed its side: the stream ends, as etcd's does

        async def body():
            reader = asyncio.ensure_future(read())
            failed = asyncio.ensure_future(session.failed.wait())
            try:
                await asyncio.wait([reader, failed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, failed):
                    task.cancel()
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()
            if session.error is not None:
                raise Status(*session.error)

        try:
            await self._until_stopped(body())
        finally:
            # When the door stops, the member's hub is going too: no cancel to wait for.
            await session.close(cancel_watches=not self._stop.is_set())

    async def observe(self, raw: bytes, context) -> None:
        """v3election's Observe: the election's leader now and at each change
        (a new leader or a proclamation), from a watch of the election's keys."""
        name = gw.leader_request(_parse(v3election_pb2.LeaderRequest, raw)).name
        async with self._stream_client(context) as client:
            await self._observe(client, name, context)

    async def _observe(self, client: aio.Client, name: bytes, context) -> None:
        async def body():
            prefix = name + b"/"
            watch = await client.open_watch(prefix, range_end=prefix_range_end(prefix))
            last = None
            try:
                while True:
                    response = await etcd_api.call(client, m.LeaderRequest(name))
                    if response.kv is not None and (response.kv.key, response.kv.mod_revision) != last:
                        last = (response.kv.key, response.kv.mod_revision)
                        await context.write(gw.leader_response(response).SerializeToString())
                    while (change := await watch.next()) is not None and is_progress_notify(change):
                        pass
                    if change is None:
                        return
            finally:
                with contextlib.suppress(CairnError, asyncio.CancelledError):
                    await asyncio.shield(watch.cancel())

        await self._until_stopped(body())


class GrpcWatchSession(etcd_api.WatchSession):
    """The watches of one gRPC Watch call, written as etcd's WatchResponses."""

    def __init__(self, client: aio.Client, context, log, fragment_bytes: int):
        super().__init__(client, log)
        self.context = context
        self.fragment_bytes = fragment_bytes
        self.lock = asyncio.Lock()
        self.failed = asyncio.Event()
        self.error: tuple[int, str] | None = None

    async def emit(self, response: m.WatchResponse, watch_id: int) -> None:
        message = gw.watch_response(response, watch_id)
        parts = gw.fragments(message, self.fragment_bytes) if watch_id in self.fragment else [message]
        async with self.lock:
            for part in parts:
                try:
                    await self.context.write(part.SerializeToString())
                except Exception:  # noqa: BLE001 — the call is over (client gone)
                    self.failed.set()
                    return

    async def emit_error(self, grpc_code: int, message: str) -> None:
        """An error of the stream (no leader, the member stopping): etcd ends the
        whole stream with it, and its clients resume elsewhere."""
        if self.error is None:
            self.error = (grpc_code, message)
        self.failed.set()

