"""Clients that stall in the middle of a request served by the front: one that stops reading
the answer, one that stops sending its body. Either would otherwise hold an upstream
connection for as long as it likes; after the app's read timeout both are cut (docs/http.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.factories import RunningGateway, gateway_files, running_gateway, serve
from tests.web.test_wire import AUTH, audited_request, connect

BIG = 64 * 1024 * 1024  # well past the socket buffers on both sides of the gateway
READ_TIMEOUT = 0.5


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, list[str]]]:
    events: list[str] = []

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(BIG)})
        await response.prepare(request)
        block = b"z" * (1 << 20)
        try:
            for _ in range(BIG // len(block)):
                await response.write(block)
        except ConnectionError:
            events.append("download cut")
            raise
        return response

    async def upload(request: web.Request) -> web.Response:
        try:
            await request.read()
        except Exception:
            events.append("upload cut")
            raise
        return web.Response(text="read")

    app = web.Application()
    app.router.add_get("/api/big", big)
    app.router.add_post("/api/upload", upload)
    async with serve(app) as url:
        yield url, events


@pytest.fixture
async def gw(tmp_path, backend) -> AsyncIterator[RunningGateway]:
    files = gateway_files(
        tmp_path,
        api_upstream=backend[0],
        extra_config={"upstream_timeouts": {"connect": "2s", "read": f"{READ_TIMEOUT}s"}},
    )
    async with running_gateway(files) as gw:
        yield gw


async def wait_for(events: list[str], event: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while event not in events:
        assert time.monotonic() < deadline, events
        await asyncio.sleep(0.05)


async def test_a_client_that_stops_reading_is_cut(gw, backend):
    _, events = backend
    async with connect(gw) as conn:
        await conn.send(b"GET /api/big HTTP/1.1\r\nHost: gw\r\n" + AUTH + b"\r\n")
        started = time.monotonic()
        await wait_for(events, "download cut")  # the gateway let go of the upstream
        assert time.monotonic() - started < 4
        received = 0
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(conn.reader.read(1 << 20), 5):
                received += len(chunk)
        assert received < BIG  # cut, not delivered
    record = await audited_request(gw.files, "/api/big")
    assert any("read nothing" in reason for reason in record["reasons"]), record["reasons"]


async def test_a_client_that_stops_sending_its_body_is_cut(gw, backend):
    _, events = backend
    async with connect(gw) as conn:
        head = b"POST /api/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n" + AUTH
        await conn.send(head + b"\r\n" + b"x" * 10)
        started = time.monotonic()
        assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # closed, no answer
        assert READ_TIMEOUT <= time.monotonic() - started < 4
    await wait_for(events, "upload cut")
    record = await audited_request(gw.files, "/api/upload")
    assert record["status"] == 499
    assert any("no body bytes" in reason for reason in record["reasons"]), record["reasons"]
