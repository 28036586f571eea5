"""Forwarding to the upstream: streamed HTTP both ways, and WebSocket (PRODUCT.md section 4.6).

Which headers cross, each way: gateway.web.forward_headers. WebSocket: gateway.web.websocket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.context import RequestContext
from gateway.web import forward_headers
from gateway.web.live_sockets import LiveSocket, LiveSockets
from gateway.web.sessions import RECORD_KEY
from gateway.web.upstream.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
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
        host=request.headers.get("Host"),
        client_ip=ctx.client_ip,
        secure=ctx.secure,
        request_id=ctx.request_id,
        identity=identity,
        own_cookies=forward_headers.own_cookie_names(session_cookie),
        api_surface=ctx.surface == "api",
        # aiohttp's server answered 100 Continue before the gate ran: the client is sending.
        drop_expect=True,
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
    """Owns the one pooled ClientSession; forwards a request that the gate has let through."""

    def __init__(self, session: aiohttp.ClientSession, sockets: LiveSockets) -> None:
        self._session = session
        self.sockets = sockets
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    @staticmethod
    def new_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=60),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )

    def _timeout(self, connect: float, read: float) -> aiohttp.ClientTimeout:
        key = (connect, read)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, connect=connect, sock_read=read
            )
        return timeout

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        identity: Mapping[str, str],
        session_cookie: str | None,
    ) -> web.StreamResponse:
        app = ctx.app
        assert app is not None and ctx.path is not None
        target = app.upstream + app.upstream_target(ctx.path)
        # The query exactly as received: aiohttp's query_string is percent-decoded.
        raw = request.raw_path
        cut = raw.find("?")
        url = target + raw[cut:] if cut >= 0 else target
        headers = upstream_request_headers(request, ctx, identity, session_cookie)
        if is_websocket(request.headers):
            return await forward_websocket(
                request, ctx, self._session, url, headers, live_socket(request, ctx), self.sockets
            )
        timeout = self._timeout(app.connect_timeout, app.read_timeout)
        body = request.content if request.body_exists else None
        try:
            upstream = await self._session.request(
                request.method,
                URL(url, encoded=True),
                headers=CIMultiDict(headers),
                data=body,
                allow_redirects=False,
                timeout=timeout,
                compress=None,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable() from exc
        out = CIMultiDict(
            forward_headers.response_headers(
                upstream.headers.items(), forward_headers.own_cookie_names(session_cookie)
            )
        )
        out["X-Gateway-Request-Id"] = ctx.request_id
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out)
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError, TimeoutError) as exc:
            client_gone = isinstance(exc, ConnectionResetError) and not isinstance(
                exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError
            )
            if not response.prepared and not client_gone:
                if isinstance(exc, TimeoutError):
                    raise UpstreamTimeout() from exc
                raise UpstreamUnavailable() from exc
            # Part of the response is out: a new response on this connection would be read as
            # the rest of the body (a desync), and the upstream connection is half read. Cutting
            # both is the only honest signal left, whichever side failed.
            ctx.reasons.append(
                "the client closed the connection before the end of the response"
                if client_gone
                else f"the upstream failed mid-response ({type(exc).__name__}); connection cut"
            )
            upstream.close()
            if request.transport is not None:
                request.transport.close()
        finally:
            upstream.release()
        return response
