"""Forwarding to the upstream: streamed HTTP both ways, and WebSocket (docs/http.md).

Which headers cross, each way: gateway.web.forward_headers. WebSocket: gateway.web.websocket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import aiohttp
from aiohttp import web

from gateway.context import RequestContext
from gateway.web import forward_headers
from gateway.web.live_sockets import LiveSocket, LiveSockets
from gateway.web.sessions import RECORD_KEY
from gateway.web.upstream import UpstreamClient, UpstreamError
from gateway.web.upstream.client import UpstreamResponse
from gateway.web.websocket import forward_websocket, is_websocket

__all__ = ["Forwarder", "UpstreamError"]

# aiohttp adds these to client requests unless told not to; a proxy must send what it received.
SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def upstream_request_headers(
    request: web.Request,
    ctx: RequestContext,
    identity: Mapping[str, str],
    session_cookie: str | None,
) -> list[tuple[str, str]]:
    return forward_headers.request_headers(
        request.headers.items(),
        host=ctx.host.header if ctx.host is not None else None,  # canonical (hosts.py)
        client_ip=ctx.client_ip,
        secure=ctx.secure,
        request_id=ctx.request_id,
        identity=identity,
        own_cookies=forward_headers.own_cookie_names(session_cookie),
        api_surface=ctx.surface == "api",
        # aiohttp's server answered 100 Continue before the gate ran: the client is sending.
        drop_expect=True,
        upstream=ctx.app.upstream if ctx.app is not None else None,
    )


def live_socket(request: web.Request, ctx: RequestContext) -> LiveSocket:
    assert ctx.app is not None and ctx.principal is not None and ctx.auth is not None
    record = request.get(RECORD_KEY)
    data = record.data if record is not None and isinstance(record.data, dict) else {}
    return LiveSocket(
        principal=ctx.principal,
        auth=ctx.auth,
        app=ctx.app.name,
        role=ctx.role,
        method=request.method,
        path=ctx.path or "/",
        client_addr=ctx.client_addr,
        sid_hash=record.sid_hash if record is not None and ctx.auth != "api-key" else None,
        password_version=data.get("pwv"),
    )


class Forwarder:
    """Forwards a request that the gate has let through: HTTP with the lean upstream client
    (gateway.web.upstream), WebSocket upgrades with aiohttp's client (gateway.web.websocket)."""

    def __init__(
        self, client: UpstreamClient, ws_session: aiohttp.ClientSession, sockets: LiveSockets
    ) -> None:
        self._client = client
        self._ws_session = ws_session
        self.sockets = sockets

    @staticmethod
    def new_ws_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=60),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )

    @property
    def client(self) -> UpstreamClient:
        return self._client

    async def close(self) -> None:
        await self._client.close()
        await self._ws_session.close()

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        identity: Mapping[str, str],
        session_cookie: str | None,
    ) -> web.StreamResponse:
        app = ctx.app
        assert app is not None and ctx.path is not None
        # The query exactly as received: aiohttp's query_string is percent-decoded.
        raw = request.raw_path
        cut = raw.find("?")
        target = app.upstream_target(ctx.path)
        if cut >= 0:
            target += raw[cut:]
        headers = upstream_request_headers(request, ctx, identity, session_cookie)
        if is_websocket(request.headers):
            return await forward_websocket(
                request,
                ctx,
                self._ws_session,
                app.upstream + target,
                headers,
                live_socket(request, ctx),
                self.sockets,
            )
        try:
            upstream = await self._client.request(
                app.upstream,
                request.method,
                target,
                headers,
                request.content.iter_any() if request.body_exists else None,
                content_length=request.content_length,
                connect_timeout=app.connect_timeout,
                read_timeout=app.read_timeout,
            )
        except ConnectionResetError:
            return _client_gone(request, ctx, "the client closed the connection during the upload")
        try:
            out = forward_headers.response_headers(
                upstream.headers, forward_headers.own_cookie_names(session_cookie)
            )
            out.append(("X-Gateway-Request-Id", ctx.request_id))  # the upstream's is dropped
            kind = _OneWriteResponse if upstream.complete else web.StreamResponse
            response = kind(status=upstream.status, reason=upstream.reason, headers=out)
        except BaseException:
            upstream.close()
            raise
        try:
            await response.prepare(request)
            if upstream.complete:  # the usual small response: one write
                await response.write_eof(upstream.read_now())
            else:
                async for chunk in upstream.chunks():
                    await response.write(chunk)
                await response.write_eof()
            upstream.release()
        except (ConnectionResetError, UpstreamError) as exc:
            cut_mid_response(ctx, upstream, exc)
            if request.transport is not None:
                request.transport.close()
        except BaseException:
            upstream.close()
            raise
        return response


class ClientStalled(ConnectionResetError):
    """The client stopped reading the response (or sending its body) for too long."""


def cut_mid_response(
    ctx: RequestContext, upstream: UpstreamResponse, exc: ConnectionResetError | UpstreamError
) -> None:
    """Part of the response may be out: a new response on this connection would be read as the
    rest of the body (a desync), and the upstream connection is half read. Cutting both is the
    only honest signal left, whichever side failed; the caller closes the client's."""
    if isinstance(exc, ClientStalled):
        reason = f"{exc}; connection cut"
    elif isinstance(exc, ConnectionResetError):
        reason = "the client closed the connection before the end of the response"
    else:
        reason = f"the upstream failed mid-response ({exc}); connection cut"
    ctx.reasons.append(reason)
    upstream.close()


class _OneWriteResponse(web.StreamResponse):
    """For a response whose whole body is already here: the head goes out together with the
    body in one write (as aiohttp's own web.Response does), not in a send of its own."""

    _send_headers_immediately = False


CLIENT_CLOSED_REQUEST: Final = 499  # nginx's status for "the client went away first"


def _client_gone(request: web.Request, ctx: RequestContext, reason: str) -> web.Response:
    ctx.reasons.append(reason)
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=CLIENT_CLOSED_REQUEST)
