"""The gRPC door: etcd v3's gRPC API, served per member.

Theory of operation
-------------------
Most software that uses etcd speaks its gRPC API (etcdctl, Go's clientv3 and
everything built on it, python-etcd3 and its forks, jetcd, ...). This actor
serves that API on the member's `grpc` address from the config, with grpcio's
asyncio server: etcdserverpb's KV, Watch, Lease, Cluster (MemberList),
Maintenance (Status, Alarm, MoveLeader) and Auth (Authenticate, which answers
that authentication is not enabled), and etcd's v3lock and v3election services.
The wire contract is etcd 3.4's .proto (actors/etcdpb/), so etcd's clients work
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
* `token`: authentication does not exist in cairn yet; _authorize is where a
  token will be checked. Until then a token is ignored, as etcd ignores one
  while auth is disabled, and never logged.

Errors are etcd's gRPC statuses (etcd_api.ERROR_CODES). A request protobuf
cannot parse is INTERNAL "grpc: error unmarshalling request", as grpc-go says;
a request larger than max_request_bytes plus etcd's 512 KiB of gRPC overhead is
refused by grpcio with RESOURCE_EXHAUSTED, as etcd's is. The door never dies of
bad input; if it dies for another reason the supervisor restarts it.

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
import contextlib

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
        self.log.info("grpc_stopped")

    def handlers(self) -> list:
        by_service: dict[str, dict] = {}
        special = {
            ("etcdserverpb.Watch", "Watch"): self.watch,
            ("etcdserverpb.Lease", "LeaseKeepAlive"): self.lease_keepalive,
            ("etcdserverpb.Auth", "Authenticate"): self.authenticate,
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
        which checks it (actors/auth_door.py). Never logged."""
        return metadata.get("token")

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
        request = _parse(rpc_pb2.AuthenticateRequest, raw)  # the password in it is never logged
        client, endpoint = self._route(context)
        response = await etcd_api.call(client, m.AuthenticateRequest(request.name, request.password),
                                       timeout=self._deadline(context), endpoint=endpoint,
                                       options=self.authenticate_options(context.peer()))
        return rpc_pb2.AuthenticateResponse(header=gw.header(response.header), token=response.token).SerializeToString()

    async def leader(self, raw: bytes, context) -> bytes:
        message = gw.leader_request(_parse(v3election_pb2.LeaderRequest, raw))
        client, endpoint = self._route(context)
        response = await etcd_api.call(client, message, timeout=self._deadline(context), endpoint=endpoint)
        if response.kv is None:
            raise Status(etcd_api.GRPC_UNKNOWN, NO_ELECTION_LEADER)  # as etcd's v3election answers
        return gw.leader_response(response).SerializeToString()

    # ------------------------------------------------------------------ streams

    async def lease_keepalive(self, requests, context) -> None:
        client = await self._require_leader(context)
        endpoint = self.member.client if client is self.leader_client else None

        async def body():
            async for raw in requests:
                request = gw.lease_keepalive_request(_parse(rpc_pb2.LeaseKeepAliveRequest, raw))
                response = await client.call(request, write=False, endpoint=endpoint)
                await context.write(gw.lease_keepalive_response(response).SerializeToString())

        await self._until_stopped(body())

    async def watch(self, requests, context) -> None:
        client = await self._require_leader(context)
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
        client = await self._require_leader(context)

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

    async def create_failed(self, request: m.WatchCreateRequest, watch_id: int, grpc_code: int, message: str) -> None:
        if grpc_code in (etcd_api.GRPC_UNAVAILABLE, etcd_api.GRPC_RESOURCE_EXHAUSTED):
            await self.emit_error(grpc_code, message)
            return
        # A watch the member refuses: created and canceled at once with the
        # reason, as etcd's server answers a create that fails.
        await self.emit(m.WatchResponse(m.ResponseHeader(0, 0, 0, 0), watch_id, created=True, canceled=True,
                                        cancel_reason=message), watch_id)
