"""Real upstream servers for the client's conformance suite: aiohttp, nginx, and raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from tests.factories import free_port, serve

BIG = 3 * 1024 * 1024 + 17  # not a multiple of any buffer size

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: RawHandler) -> AsyncIterator[str]:
    """A TCP server speaking whatever bytes `handler` writes; yields its base URL."""
    tasks: set[asyncio.Task[None]] = set()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the test is over or the client hung up: nothing to report
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def aiohttp_app() -> web.Application:
    async def small(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no length announced
        await response.prepare(request)
        block = b"b" * 65536
        sent = 0
        while sent < BIG:
            part = block[: min(len(block), BIG - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"s" * int(request.match_info["n"]))

    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {
                "size": size,
                "sha256": digest.hexdigest(),
                "chunked": "chunked" in request.headers.get("Transfer-Encoding", ""),
                "headers": dict(request.headers),
            }
        )

    async def drip(request: web.Request) -> web.StreamResponse:
        gap = float(request.match_info["gap"])
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(4):
            await response.write(b"%d" % i)
            await asyncio.sleep(gap)
        await response.write_eof()
        return response

    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)  # past the tests' read timeouts; short, so shutdown is quick
        return web.Response(text="late")

    app = web.Application(client_max_size=0)
    app.router.add_get("/small", small)
    app.router.add_get("/big", big)
    app.router.add_get("/sized/{n}", sized)
    app.router.add_post("/echo", echo)
    app.router.add_get("/drip/{gap}", drip)
    app.router.add_get("/silent", silent)
    return app


@contextlib.asynccontextmanager
async def aiohttp_server() -> AsyncIterator[str]:
    async with serve(aiohttp_app()) as url:
        yield url


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        location = /small {{ default_type text/plain; return 200 "hello"; }}
        location = /echo {{ default_type text/plain; return 200 "discarded"; }}
    }}
}}
"""


@contextlib.asynccontextmanager
async def nginx_server(tmp: Path) -> AsyncIterator[str]:
    """Debian's nginx (nginx-light) serving /small, /big (a static file) and /echo."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is missing: apt-get install nginx-light"
    (tmp / "www").mkdir(parents=True)
    (tmp / "www" / "big").write_bytes(b"b" * BIG)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, port=port))
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-e", str(tmp / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert proc.poll() is None, (tmp / "error.log").read_text()
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
