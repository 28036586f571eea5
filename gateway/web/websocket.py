"""WebSocket forwarding (docs/http.md, request path step 6), on aiohttp's client and server.

The upstream handshake gets the same headers as an HTTP request (forward_headers, including the
canonical Host), minus the handshake's own, which aiohttp's client sets. Both directions are
pumped until either side closes or the access behind the socket ends (live_sockets), which
closes both sides with 1008 (policy violation).

Dashboard sockets also check Origin: a browser sends it on every WebSocket handshake, and
cookies ride along on cross-site handshakes (cross-site WebSocket hijacking), so only the
gateway's own origin (same scheme, host and port) is let through. A handshake without Origin is
refused too on the dashboard surface (it is for browsers; fail closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gateway.context import RequestContext
from gateway.policy import decide
from gateway.web.live_sockets import CLOSE_POLICY, LiveSocket, LiveSockets
from gateway.web.upstream.errors import UpstreamTimeout, UpstreamUnavailable

# Set by aiohttp's WebSocket handshake itself.
WS_HANDSHAKE: Final = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def is_websocket(headers: Mapping[str, str]) -> bool:
    return (
        headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in headers.get("Connection", "").lower()
    )


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None or not parts.hostname:
        return None
    host = parts.hostname.rstrip(".")
    return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme, -1)


def same_origin(origin: str | None, host: str | None, secure: bool) -> bool:
    """Is the Origin header the gateway's own origin (scheme, host and port, RFC 6454)?"""
    if not origin or not host or origin == "null":
        return False
    scheme, sep, rest = origin.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS or "/" in rest:
        return False
    theirs = _origin_tuple(scheme, rest)
    ours = _origin_tuple("https" if secure else "http", host)
    return theirs is not None and theirs == ours


def check_origin(
    headers: Mapping[str, str], host: str | None, ctx: RequestContext
) -> decide.Decision | None:
    """A denial for a dashboard WebSocket handshake from another origin, else None."""
    if ctx.surface != "dashboard" or not is_websocket(headers):
        return None
    if same_origin(headers.get("Origin"), host, ctx.secure):
        return None
    return decide.deny(decide.FORBIDDEN, "WebSocket handshake from another origin")


async def forward_websocket(
    request: web.Request,
    ctx: RequestContext,
    session: aiohttp.ClientSession,
    url: str,
    headers: list[tuple[str, str]],
    live: LiveSocket,
    sockets: LiveSockets,
) -> web.StreamResponse:
    app = ctx.app
    assert app is not None
    protocols = [
        p.strip()
        for line in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in line.split(",")
        if p.strip()
    ]
    upstream_headers = [(k, v) for k, v in headers if k.lower() not in WS_HANDSHAKE]
    try:
        upstream = await session.ws_connect(
            url,
            headers=upstream_headers,
            protocols=protocols,
            autoping=False,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=app.read_timeout),
            max_msg_size=0,
        )
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"WebSocket handshake: {exc!r}") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(f"WebSocket handshake: {exc!r}") from exc
    client = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (),
        autoping=False,
        max_msg_size=0,
    )
    client.headers["X-Gateway-Request-Id"] = ctx.request_id
    with sockets.track(live):
        await client.prepare(request)
        tasks = [
            asyncio.create_task(_pump(upstream, client)),
            asyncio.create_task(_pump(client, upstream)),
            asyncio.create_task(live.ended.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if live.ended.is_set():
                ctx.reasons.append(f"WebSocket ended: {live.reason}")
                message = b"access ended"
                await upstream.close(code=CLOSE_POLICY, message=message)
                await client.close(code=CLOSE_POLICY, message=message)
            else:
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
