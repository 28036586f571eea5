"""The floor of our stack: a bare aiohttp pass-through reverse proxy.

Run: .venv/bin/python bench/bare_proxy.py --port 9002 --upstream http://127.0.0.1:9001

What the gateway's proxy step does, minus everything that makes it a gateway: one shared
ClientSession (unlimited keep-alive pool, auto_decompress=False, no cookie jar, no automatic
headers), hop-by-hop headers dropped both ways, X-Forwarded-For added, bodies streamed both ways
with iter_any(). No policy, no audit, no metrics, no signing. Served like `gateway run` serves:
web.run_app with access_log=None.
"""

from __future__ import annotations

import argparse
import ipaddress

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

HOP_BY_HOP = frozenset(
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
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def proxy(request: web.Request) -> web.StreamResponse:
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    if request.remote:
        headers["X-Forwarded-For"] = request.remote
    upstream = await request.app[SESSION].request(
        request.method,
        URL(request.app[UPSTREAM] + request.raw_path, encoded=True),
        headers=headers,
        data=request.content if request.body_exists else None,
        allow_redirects=False,
        compress=None,
    )
    try:
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
            ),
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        upstream.release()


LEAN = web.AppKey("lean", object)


async def lean_proxy(request: web.Request) -> web.StreamResponse:
    """The same hop with the gateway's own upstream client (row b2)."""
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
    if request.remote:
        headers.append(("X-Forwarded-For", request.remote))
    client = request.app[LEAN]
    upstream = await client.request(  # type: ignore[attr-defined]
        request.app[UPSTREAM],
        request.method,
        request.raw_path,
        headers,
        request.content.iter_any() if request.body_exists else None,
        content_length=request.content_length,
        connect_timeout=5,
        read_timeout=60,
    )
    response = web.StreamResponse(
        status=upstream.status,
        reason=upstream.reason,
        headers=CIMultiDict((k, v) for k, v in upstream.headers if k.lower() not in HOP_BY_HOP),
    )
    await response.prepare(request)
    if upstream.complete:
        await response.write_eof(upstream.read_now())
    else:
        async for chunk in upstream.chunks():
            await response.write(chunk)
        await response.write_eof()
    upstream.release()
    return response


async def lean_client(app: web.Application):  # type: ignore[no-untyped-def]
    from gateway.web.upstream import UpstreamClient

    app[LEAN] = UpstreamClient()
    yield
    await app[LEAN].close()  # type: ignore[attr-defined]


async def client_session(app: web.Application):  # type: ignore[no-untyped-def]
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    )
    yield
    await app[SESSION].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT (loopback only)")
    parser.add_argument("--lean", action="store_true", help="use gateway.web.upstream's client")
    args = parser.parse_args()
    upstream_host = URL(args.upstream).host or ""
    if not (
        ipaddress.ip_address(args.host).is_loopback
        and ipaddress.ip_address(upstream_host).is_loopback
    ):
        raise SystemExit("the bare proxy listens on and forwards to loopback addresses only")
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(lean_client if args.lean else client_session)
    app.router.add_route("*", "/{path:.*}", lean_proxy if args.lean else proxy)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
