"""Forwarding to the upstream: streamed HTTP both ways, and WebSocket (PRODUCT.md section 4.6).

Header policy, in this order: hop-by-hop headers (RFC 9110 7.6.1, plus every header the
Connection header names) are dropped; then every inbound header that claims identity or a client
address (X-Gateway-*, in any case and with '_' for '-', Forwarded, X-Forwarded-*, X-Real-IP) is
dropped; then the gateway's own X-Forwarded-*, request id and identity headers are added. Because
ours are added last, a client can never remove or replace them, e.g. with
`Connection: X-Forwarded-For`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.context import RequestContext
from gateway.policy import decide
from gateway.web.csrf import COOKIE as CSRF_COOKIE

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Inbound headers that would let a client claim an identity or an address.
CLAIMS: Final = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"}
)
# aiohttp adds these to client requests unless told not to; a proxy must send what it received.
SKIP_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# Set by aiohttp's WebSocket handshake itself.
WS_HANDSHAKE: Final = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "host",
    }
)


class UpstreamError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _nominated(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in Connection (hop-by-hop by nomination)."""
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _is_claim(lower_name: str) -> bool:
    return lower_name in CLAIMS or lower_name.replace("_", "-").startswith("x-gateway-")


def upstream_request_headers(
    request: web.Request,
    ctx: RequestContext,
    identity: Mapping[str, str],
    session_cookie: str | None,
) -> CIMultiDict[str]:
    inbound = request.headers
    drop = HOP_BY_HOP | _nominated(inbound)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in inbound.items():
        lower = name.lower()
        if lower in drop or _is_claim(lower) or lower == "host":
            continue
        if lower == "cookie":
            value = _without_cookies(value, session_cookie)
            if not value:
                continue
        out.add(name, value)
    host = inbound.get("Host")
    if host:
        out["Host"] = host  # backends see the host the client asked for
        out["X-Forwarded-Host"] = host
    if ctx.client_ip:
        out["X-Forwarded-For"] = ctx.client_ip
    out["X-Forwarded-Proto"] = "https" if ctx.secure else "http"
    out["X-Gateway-Request-Id"] = ctx.request_id
    out.update(identity)
    return out


def _without_cookies(header: str, session_cookie: str | None) -> str:
    """The Cookie header minus the gateway's own cookies (session and CSRF)."""
    if "gateway" not in header and (not session_cookie or session_cookie not in header):
        return header  # fast path: none of ours in it
    ours = (f"{session_cookie}=", f"{CSRF_COOKIE}=") if session_cookie else (f"{CSRF_COOKIE}=",)
    return "; ".join(
        part
        for part in (p.strip() for p in header.split(";"))
        if part and not part.startswith(ours)
    )


def response_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | _nominated(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if name.lower() not in drop:
            out.add(name, value)
    out["X-Gateway-Request-Id"] = request_id
    return out


def _is_websocket(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


class Forwarder:
    """Owns the one pooled ClientSession; forwards a request that the gate has let through."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
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
        if _is_websocket(request):
            return await self._websocket(request, ctx, url, headers)
        timeout = self._timeout(app.connect_timeout, app.read_timeout)
        body = request.content if request.body_exists else None
        try:
            upstream = await self._session.request(
                request.method,
                URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=timeout,
                compress=None,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamError(decide.UPSTREAM_TIMEOUT) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(decide.UPSTREAM_UNAVAILABLE) from exc
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=response_headers(upstream.headers, ctx.request_id),
        )
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
                code = (
                    decide.UPSTREAM_TIMEOUT
                    if isinstance(exc, TimeoutError)
                    else decide.UPSTREAM_UNAVAILABLE
                )
                raise UpstreamError(code) from exc
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

    async def _websocket(
        self, request: web.Request, ctx: RequestContext, url: str, headers: CIMultiDict[str]
    ) -> web.StreamResponse:
        app = ctx.app
        assert app is not None
        protocols = [
            p.strip()
            for line in request.headers.getall("Sec-WebSocket-Protocol", ())
            for p in line.split(",")
            if p.strip()
        ]
        for name in list(headers):
            if name.lower() in WS_HANDSHAKE:
                del headers[name]
        try:
            upstream = await self._session.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                autoping=False,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=app.read_timeout),
                max_msg_size=0,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamError(decide.UPSTREAM_TIMEOUT) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(decide.UPSTREAM_UNAVAILABLE) from exc
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            autoping=False,
            max_msg_size=0,
        )
        client.headers["X-Gateway-Request-Id"] = ctx.request_id
        await client.prepare(request)
        tasks = [
            asyncio.create_task(_pump(upstream, client)),
            asyncio.create_task(_pump(client, upstream)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()
            await client.close()
        return client


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for msg in source:
        if msg.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type is aiohttp.WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type is aiohttp.WSMsgType.PONG:
            await sink.pong(msg.data)
        elif msg.type is aiohttp.WSMsgType.CLOSE:
            await sink.close(code=msg.data or 1000, message=(msg.extra or "").encode())
            return
        else:
            return
