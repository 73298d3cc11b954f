"""The HTTP JSON gateway: etcd v3's grpc-gateway API, served per member.

Theory of operation
-------------------
etcd keeps an HTTP/JSON face beside its gRPC API so that curl users and simple
programs (Patroni's etcd3 backend above all) need no client library. This actor
is that face for cairn. It runs an aiohttp server on the member's `http`
address from the config (HTTPS for an https:// address: actors/tls.py) and is a client of its own member's frontend over
ZeroMQ (cairn.aio.Client with that one endpoint), so every request takes the
same routing and consistency path as the library's: writes go to the leader,
reads are linearizable unless `serializable` is set.

The translation between etcd's JSON mapping and cairn's messages is pure and
lives in actors/gateway_json.py. Unary calls (kv, lease grant/revoke/timetolive/
leases, member list, status) answer one JSON object. The two streaming calls
answer a chunked stream of newline-separated JSON objects, as etcd's gateway
does: /v3/lease/keepalive answers each request object of the body with one
`{"result": ...}` and ends; /v3/watch handles every request object of the body
(create, cancel, progress) and then keeps the stream open, sending each watch's
responses, until the HTTP client goes away.

Errors are written as etcd's gateway writes them: an HTTP status from the gRPC
code and `{"error", "message", "code"}`. The gateway never dies of bad input; if
it dies for another reason the supervisor restarts it like any actor.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from actors import etcd_api
from actors import gateway_json as gj
from actors import metrics_exposition
from actors import tls
from cairn import aio
from cairn.config import parse_http_address
from transport import messages as m
from transport.errors import CairnError, PermissionDeniedError

ETCD_API_VERSION = etcd_api.ETCD_API_VERSION
# How long the first piece of a snapshot may wait for the member's copy.
SNAPSHOT_WAIT_S = 60.0

PREFIXES = ("/v3", "/v3beta")


class GatewayActor(etcd_api.Door):
    name = "gateway"
    address_field = "http"

    def __init__(self, config, member_name: str):
        super().__init__(config, member_name)
        self.runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ process

    async def open_door(self, client_timeout: float) -> None:
        self.runner = web.AppRunner(self.application(), access_log=None, handler_cancellation=True,
                                    shutdown_timeout=self.door_limits.shutdown_grace_s)
        await self.runner.setup()
        host, port = parse_http_address(self.address)
        ssl_context = tls.server_ssl_context(self.config, self.member.name) if tls.is_tls(self.address) else None
        await web.TCPSite(self.runner, host, port, reuse_address=True, ssl_context=ssl_context).start()
        self.log.info("gateway_listening", http=self.address, frontend=self.member.client)

    async def close_door(self) -> None:
        await self.runner.cleanup()
        await self.client.aclose()

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_request_bytes * self.door_limits.http_body_overhead,
                              middlewares=[self._errors])
        app.router.add_get("/version", self.version)
        app.router.add_get("/health", self.health)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/livez", self.livez)
        app.router.add_get("/metrics", self.serve_metrics)

        def member_change(response):
            return gj.member_change_response(response, self.door_urls)

        unary = {
            "/kv/range": (gj.range_request, gj.range_response),
            "/kv/put": (gj.put_request, gj.put_response),
            "/kv/deleterange": (gj.delete_range_request, gj.delete_range_response),
            "/kv/txn": (gj.txn_request, gj.txn_response),
            "/kv/compaction": (gj.compaction_request, gj.header_only),
            "/lease/grant": (gj.lease_grant_request, gj.lease_grant_response),
            "/lease/revoke": (gj.lease_revoke_request, gj.header_only),
            "/lease/timetolive": (gj.lease_time_to_live_request, gj.lease_time_to_live_response),
            "/lease/leases": (gj.empty_request(m.LeaseLeasesRequest()), gj.lease_leases_response),
            "/cluster/member/list": (gj.empty_request(m.MemberListRequest()),
                                     lambda response: gj.member_list_response(response, self.door_urls)),
            "/cluster/member/add": (gj.member_add_request, member_change),
            "/cluster/member/remove": (gj.member_remove_request, member_change),
            "/cluster/member/update": (gj.member_update_request, member_change),
            "/cluster/member/promote": (gj.member_promote_request, member_change),
            "/maintenance/status": (gj.empty_request(m.StatusRequest()),
                                    lambda response: gj.status_response(response, ETCD_API_VERSION)),
            "/maintenance/alarm": (gj.alarm_request, gj.alarm_response),
            "/maintenance/hash": (gj.empty_request(m.HashRequest()), gj.hash_response),
            "/maintenance/hashkv": (gj.hash_kv_request, gj.hash_kv_response),
            "/maintenance/defragment": (gj.empty_request(m.DefragmentRequest()), gj.header_only),
            # etcd's v3lock and v3election services (observe, a stream, is not served)
            "/lock/lock": (gj.lock_request, gj.lock_response),
            "/lock/unlock": (gj.unlock_request, gj.header_only),
            "/election/campaign": (gj.campaign_request, gj.campaign_response),
            "/election/proclaim": (gj.proclaim_request, gj.header_only),
            "/election/leader": (gj.leader_request, gj.leader_response),
            "/election/resign": (gj.resign_request, gj.header_only),
        }
        for call in ("timetolive", "leases", "revoke"):  # etcd 3.4's older paths of the lease calls
            unary[f"/kv/lease/{call}"] = unary[f"/lease/{call}"]
        for prefix in PREFIXES:
            for path, (parse, render) in unary.items():
                app.router.add_post(prefix + path, self._unary(parse, render))
            app.router.add_post(prefix + "/lease/keepalive", self.lease_keepalive)
            app.router.add_post(prefix + "/watch", self.watch)
            app.router.add_post(prefix + "/maintenance/snapshot", self.snapshot)
            for path, (parse, render) in gj.AUTH_CALLS.items():
                handler = self.authenticate if path == "authenticate" else self._unary(parse, render)
                app.router.add_post(f"{prefix}/auth/{path}", handler)
        return app

    # ------------------------------------------------------------------ helpers

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        """Every failure becomes etcd's error body; nothing escapes to kill the actor."""
        try:
            return await handler(request)
        except gj.BadRequest as error:
            return self._error(request, *gj.error_body(gj.GRPC_INVALID_ARGUMENT, str(error)))
        except CairnError as error:
            return self._error(request, *gj.error_for(error.code, error.message))
        except web.HTTPRequestEntityTooLarge:
            return self._error(request, *gj.error_for("RequestTooLarge", "etcdserver: request is too large"))
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as error:  # a bug: answer it and keep serving
            self.log.exception("gateway_handler_failed", path=request.path)
            return self._error(request, *gj.error_body(gj.GRPC_UNKNOWN, f"cairn gateway: {type(error).__name__}: {error}"))

    def _error(self, request: web.Request, status: int, body: dict) -> web.Response:
        self.log.info("gateway_error", path=request.path, status=status, code=body["code"], message=body["message"])
        return _json_response(body, status)

    async def _bodies(self, request: web.Request) -> list:
        """The request objects of a whole body: none (an empty body is an empty
        request, as etcd's gateway reads it), one, or several in a row."""
        reader = gj.JsonObjects(self.limits.max_request_bytes * self.door_limits.http_body_overhead)
        return reader.feed(await request.read()) + reader.finish()

    async def _body(self, request: web.Request) -> dict:
        objects = await self._bodies(request)
        if len(objects) > 1:
            raise gj.BadRequest("expected one JSON object, got several")
        return objects[0] if objects else {}

    def _unary(self, parse, render):
        async def handler(request: web.Request) -> web.Response:
            message = parse(await self._body(request))
            return _json_response(render(await etcd_api.call(self.client, message, token=_token(request))))

        return handler

    # ------------------------------------------------------------------ handlers

    async def version(self, request: web.Request) -> web.Response:
        return _json_response({"etcdserver": ETCD_API_VERSION, "etcdcluster": ETCD_API_VERSION})

    async def health(self, request: web.Request) -> web.Response:
        """etcd's /health: true when a linearizable read succeeds (there is a leader)."""
        try:
            await self.client.call(m.RangeRequest(b"health"), write=False)
        except PermissionDeniedError:
            pass  # auth is enabled: the read went through raft and was refused, so the member is healthy (as etcd)
        except CairnError as error:
            return _json_response({"health": "false", "reason": error.message}, 503)
        return _json_response({"health": "true"})

    async def readyz(self, request: web.Request) -> web.Response:
        """etcd's /readyz: "ok" when the member serves linearizable reads, else 503."""
        try:
            await self.client.call(m.RangeRequest(b"health"), write=False)
        except PermissionDeniedError:
            pass  # auth is enabled (as etcd: a refused read still proves the member serves)
        except CairnError as error:
            return web.Response(text=f"[-]linearizable_read failed: {error.message}\nreadyz check failed\n", status=503)
        return web.Response(text="ok")

    async def livez(self, request: web.Request) -> web.Response:
        """etcd's /livez: the member's processes answer (no leader needed)."""
        await self.client.call(m.StatusRequest(), write=False)
        return web.Response(text="ok")

    async def serve_metrics(self, request: web.Request) -> web.Response:
        """Prometheus' text format of every actor's metrics, under etcd's names
        where etcd has the meaning, so etcd's dashboards and alerts apply."""
        response = await self.client.call(m.MetricsRequest(), write=False)
        return web.Response(body=metrics_exposition.render(response),
                            headers={"Content-Type": metrics_exposition.CONTENT_TYPE})


    async def authenticate(self, request: web.Request) -> web.Response:
        parse, render = gj.AUTH_CALLS["authenticate"]
        message = parse(await self._body(request))
        response = await etcd_api.call(self.client, message, options=self.authenticate_options(request.remote))
        return _json_response(render(response))

    async def lease_keepalive(self, request: web.Request) -> web.StreamResponse:
        """etcd's keep-alive is a stream: one answer per request object of the body."""
        messages = [gj.lease_keepalive_request(body) for body in (await self._bodies(request) or [{}])]
        stream = await _open_stream(request)
        for message in messages:
            try:
                response = await self.client.call(message, write=False)
                line = gj.lease_keepalive_response(response)
            except CairnError as error:
                line = gj.stream_error(*etcd_api.status_of(error))
            await stream.write(_line(line))
        await stream.write_eof()
        return stream

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        """etcd's Snapshot stream: the member's copy, piece by piece, one
        {"result": {"remaining_bytes", "blob"}} a line; the last piece (no
        remaining_bytes) is followed by a line with the copy's SHA-256 as
        etcd's stream ends with its digest. An error ends the stream with an
        error line."""
        gj.empty_request(m.SnapshotRequest())(await self._body(request))
        response = await etcd_api.call(self.client, m.SnapshotRequest(), timeout=SNAPSHOT_WAIT_S)  # errors before the stream: a plain error
        stream = await _open_stream(request)
        try:
            while True:
                await stream.write(_line(gj.snapshot_response(response)))
                if response.remaining_bytes == 0:
                    await stream.write(_line(gj.snapshot_response(
                        m.SnapshotResponse(response.header, response.snapshot_id, response.total_bytes, response.sha256, 0, 0))))
                    break
                offset = response.offset + len(response.blob)
                response = await etcd_api.call(self.client, m.SnapshotRequest(response.snapshot_id, offset))
        except CairnError as error:
            await stream.write(_line(gj.stream_error(*etcd_api.status_of(error))))
        await stream.write_eof()
        return stream

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """Request objects are handled as they arrive in the body, so a client may
        keep the body open and create or cancel watches later; a bad first
        object is a 400, a bad later one an error line in the stream."""
        reader = gj.JsonObjects(self.limits.max_request_bytes * self.door_limits.http_body_overhead)
        first, ended = [], False
        while not first and not ended:
            chunk = await request.content.readany()
            ended = not chunk
            first = reader.finish() if ended else reader.feed(chunk)
        requests = [gj.watch_request(body) for body in first]
        stream = await _open_stream(request)
        # the caller's token (Authorization) goes with every create: the
        # frontend checks each watch as that user, as it checks a range
        async with self.caller_client(_token(request)) as client:
            session = WatchStream(client, stream, self.log)
            rest = None
            try:
                for message in requests:
                    await session.handle(message)
                if not ended:
                    rest = asyncio.create_task(self._watch_requests(request, reader, session))
                await session.wait_closed(self._stop)
            finally:
                if rest is not None:
                    rest.cancel()
                # When the member stops, its hub goes too: no cancel to wait for.
                await session.close(cancel_watches=not self._stop.is_set())
        return stream

    @staticmethod
    async def _watch_requests(request: web.Request, reader: gj.JsonObjects, session: "WatchStream") -> None:
        """The rest of a watch body, handled object by object until it ends."""
        try:
            while True:
                chunk = await request.content.readany()
                bodies = reader.finish() if not chunk else reader.feed(chunk)
                for body in bodies:
                    await session.handle(gj.watch_request(body))
                if not chunk:
                    return
        except gj.BadRequest as error:
            await session.send(gj.stream_error(gj.GRPC_INVALID_ARGUMENT, str(error)))


class WatchStream(etcd_api.WatchSession):
    """The watches of one /v3/watch HTTP stream (etcd_api.WatchSession), written
    as etcd's grpc-gateway writes them: one JSON object a line."""

    def __init__(self, client: aio.Client, stream: web.StreamResponse, log):
        super().__init__(client, log)
        self.stream = stream
        self.lock = asyncio.Lock()
        self.gone = asyncio.Event()

    async def send(self, line: dict) -> None:
        async with self.lock:
            try:
                await self.stream.write(_line(line))
            except (ConnectionResetError, RuntimeError):  # the HTTP client went away
                self.gone.set()

    async def emit(self, response: m.WatchResponse, watch_id: int) -> None:
        await self.send(gj.watch_response(response, watch_id))

    async def emit_error(self, grpc_code: int, message: str) -> None:
        await self.send(gj.stream_error(grpc_code, message))

    async def wait_closed(self, stopping: asyncio.Event) -> None:
        """Until the HTTP client goes away (the handler is then cancelled) or the gateway stops."""
        waits = [asyncio.ensure_future(self.gone.wait()), asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


def _token(request: web.Request) -> str | None:
    """etcd's gateway takes the token from the Authorization header, as it is
    (a "Bearer " prefix is accepted too). Never logged."""
    value = request.headers.get("Authorization")
    if not value:
        return None
    return value[7:] if value.startswith("Bearer ") else value


def _json_response(body: dict, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status, content_type="application/json")


def _line(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


async def _open_stream(request: web.Request) -> web.StreamResponse:
    stream = web.StreamResponse(headers={"Content-Type": "application/json"})
    stream.enable_chunked_encoding()
    await stream.prepare(request)
    return stream
