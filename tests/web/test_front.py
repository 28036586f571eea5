"""What is specific to the front (gateway.web.front), over raw sockets against a real gateway
and real backends: pipelined requests answered before a refusal, `100 Continue` only once the
gate said yes, bodies broken after their request started (served here or by aiohttp), a
connection that moves from the front to aiohttp mid-way, upgrades, the head timeout against
the idle keep-alive limit, and a graceful stop with a request in flight.

HTTP/1.0 responses delimited by the end of the connection are pinned in tests/web/test_wire.py
(TestHttp10)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from tests.factories import RunningGateway, echo_app, gateway_files, running_gateway, serve
from tests.web.test_wire import (
    AUTH,
    WAIT,
    Conn,
    assert_problem,
    assert_refused,
    audited_request,
    connect,
    get,
    request,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Backend:
    url: str
    seen: list[tuple[str, str]]  # (method, raw path) of every request that reached it


@contextlib.asynccontextmanager
async def recording_echo() -> AsyncIterator[Backend]:
    """tests.factories' echo backend (JSON of what it got, /api/slow/<s>, WebSocket echo),
    recording every request that reaches it."""
    seen: list[tuple[str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append((request.method, request.raw_path))
        return await handler(request)

    app = echo_app()
    app.middlewares.append(record)
    async with serve(app) as url:
        yield Backend(url, seen)


@contextlib.asynccontextmanager
async def gateway_before(tmp_path: Path, backend: Backend) -> AsyncIterator[RunningGateway]:
    """A gateway whose two apps (dashboard at /, api at /api/) both go to `backend`."""
    files = gateway_files(tmp_path, api_upstream=backend.url, dashboard_upstream=backend.url)
    async with running_gateway(files) as gw:
        yield gw


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with recording_echo() as echo:
        yield echo


@pytest.fixture
async def gw(tmp_path, backend: Backend) -> AsyncIterator[RunningGateway]:
    async with gateway_before(tmp_path, backend) as gateway:
        yield gateway


def echoed(body: bytes) -> dict:
    return json.loads(body)


def post_head(path: bytes, extra: bytes = b"", *, key: bool = True) -> bytes:
    """A POST head with a chunked body to come."""
    return request(b"POST", path, b"Transfer-Encoding: chunked\r\n" + extra, key=key)


async def read_to_close(conn: Conn) -> bytes:
    """Everything the gateway sends until it closes the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(conn.reader.read(65536), WAIT):
            data += chunk
    except ConnectionResetError:
        pass
    return data


# -- pipelining before a refusal ------------------------------------------------------------------


class TestPipelinedRefusal:
    async def test_good_request_answered_before_the_400(self, gw, backend):
        bad = (
            b"POST /api/bad HTTP/1.1\r\nHost: gw\r\n" + AUTH
            + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        )  # fmt: skip
        async with connect(gw) as conn:
            await conn.send(get(b"/api/good") + bad)
            good = await conn.answer()
            assert good.status == 200
            assert echoed(good.body)["path"] == "/api/good"
            answer = await assert_refused(conn, 400)  # then closed
            assert answer.body == b"The request could not be understood.\n"
        assert backend.seen == [("GET", "/api/good")]


# -- 100-continue ---------------------------------------------------------------------------------


class TestExpectContinue:
    async def test_denied_without_interim_answer_and_closed(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(
                request(
                    b"POST",
                    b"/api/upload",
                    b"Content-Length: 1000\r\nExpect: 100-continue\r\n",
                    key=False,
                )
            )
            answer = await conn.answer()  # the first thing to arrive: not `100 Continue`
            assert_problem(answer, 401, "unauthenticated")
            assert answer.get("connection") == "close"
            assert await conn.closed()
        assert backend.seen == []

    async def test_allowed_continue_then_body(self, gw, backend):
        data = b"d" * 3000
        async with connect(gw) as conn:
            await conn.send(
                request(
                    b"POST",
                    b"/api/upload",
                    b"Content-Length: %d\r\nExpect: 100-continue\r\n" % len(data),
                )
            )
            interim = await conn.answer()
            assert interim.status == 100 and interim.headers == []
            await conn.send(data)
            answer = await conn.answer()
            assert answer.status == 200
            got = echoed(answer.body)
            assert got["received"] == len(data)
            assert got["sha256"] == hashlib.sha256(data).hexdigest()
            # the front answered the expectation; the backend is not asked again
            assert "expect" not in {name.lower() for name, _ in got["headers"]}
            assert await conn.still_open()
        assert backend.seen == [("POST", "/api/upload")]


# -- denied request with a body -------------------------------------------------------------------


SMUGGLED = get(b"/api/smuggled")
DENIED_BODIES = {
    "content-length": b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
    "chunked": b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
    % (len(SMUGGLED), SMUGGLED),
}


class TestDeniedBody:
    @pytest.mark.parametrize("framed", DENIED_BODIES.values(), ids=DENIED_BODIES.keys())
    async def test_body_skipped_and_connection_reused(self, gw, backend, framed):
        """The whole body arrives: it is read and dropped (never parsed as a request)."""
        async with connect(gw) as conn:
            await conn.send(b"POST /api/upload HTTP/1.1\r\nHost: gw\r\n" + framed)
            answer = await conn.answer()
            assert_problem(answer, 401, "unauthenticated")
            assert answer.get("connection") is None
            await conn.send(get(b"/api/next"))
            following = await conn.answer()
            assert following.status == 200
            assert echoed(following.body)["path"] == "/api/next"
        assert backend.seen == [("GET", "/api/next")]


# -- bodies broken after their request started ----------------------------------------------------


class TestBrokenChunkedBody:
    async def test_api_upload_cut_and_gateway_healthy(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(post_head(b"/api/broken") + b"5\r\nhello\r\n")
            await asyncio.sleep(0.2)  # the request is being forwarded
            await conn.send(b"zz\r\n")
            # The backend reads the whole body before it answers, so nothing was sent yet; the
            # front cannot know that and cuts the connection without an answer.
            assert await read_to_close(conn) == b""
        async with connect(gw) as conn:
            await conn.send(get(b"/api/after"))
            assert (await conn.answer()).status == 200
        record = await audited_request(gw.files, "/api/broken")
        assert record["status"] == 499
        assert any("client" in reason for reason in record["reasons"]), record["reasons"]
        assert ("GET", "/api/after") in backend.seen

    async def test_api_upload_cut_after_the_answer_started(self, gw, backend):
        """The backend answers without reading the body: that answer, then the cut, never a
        400 after it."""
        async with connect(gw) as conn:
            await conn.send(post_head(b"/api/download/10") + b"5\r\nhello\r\n")
            answer = await conn.answer()
            assert answer.status == 200 and answer.body == b"x" * 10
            await conn.send(b"zz\r\n")
            assert await read_to_close(conn) == b""
        async with connect(gw) as conn:
            await conn.send(get(b"/api/after"))
            assert (await conn.answer()).status == 200

    async def test_bridged_body_400(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(
                post_head(
                    b"/_gateway/login", b"Content-Type: application/x-www-form-urlencoded\r\n"
                )
                + b"9\r\nusername=\r\n"
            )
            await asyncio.sleep(0.2)
            await conn.send(b"zz\r\n")
            answer = await conn.answer()
            assert answer.status == 400
            assert answer.get("content-type") == "text/plain; charset=utf-8"
            assert answer.get("x-gateway-request-id")
            assert answer.get("server") == "gateway"
            assert await conn.closed()
        assert backend.seen == []


# -- a connection moving to aiohttp ---------------------------------------------------------------


class TestHandOver:
    async def test_api_page_api_one_at_a_time(self, gw, backend):
        async with connect(gw) as conn:
            answers = []
            for raw in (get(b"/api/one"), get(b"/_gateway/healthz", key=False), get(b"/api/two")):
                await conn.send(raw)
                answers.append(await conn.answer())
            one, health, two = answers
            assert all(a.status == 200 for a in answers)
            assert echoed(one.body)["path"] == "/api/one"
            assert json.loads(health.body) == {"status": "ok"}
            assert echoed(two.body)["path"] == "/api/two"
            for answer in answers:  # the same contract whichever side answered
                assert answer.version == b"HTTP/1.1"
                assert answer.get("server") == "gateway"
                assert answer.get("date")
                assert answer.get("connection") is None
            ids = [a.get("x-gateway-request-id") for a in answers]
            assert all(ids) and len(set(ids)) == 3
            assert await conn.still_open()
        assert backend.seen == [("GET", "/api/one"), ("GET", "/api/two")]

    async def test_websocket_after_an_api_request(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/first"))
            assert (await conn.answer()).status == 200
            key = base64.b64encode(os.urandom(16))
            await conn.send(
                get(
                    b"/api/ws",
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n",
                )
            )
            switched = await conn.answer()
            assert switched.status == 101
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            assert switched.get("sec-websocket-accept") == accept.decode()
            await conn.send(masked_text(b"hello"))
            assert await read_frame(conn) == (0x1, b"echo:hello")
        assert backend.seen == [("GET", "/api/first"), ("GET", "/api/ws")]

    async def test_upgrade_with_a_body_400(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(
                get(
                    b"/api/ws",
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n",
                )
                + b"hello"
            )
            await assert_refused(conn, 400)
        assert backend.seen == []


def masked_text(payload: bytes) -> bytes:
    """A client's WebSocket text frame (short payload, masked as RFC 6455 requires)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def read_frame(conn: Conn) -> tuple[int, bytes]:
    """A server's unmasked frame with a short payload: (opcode, payload)."""
    first, size = await asyncio.wait_for(conn.reader.readexactly(2), WAIT)
    assert not size & 0x80 and size & 0x7F < 126
    payload = await asyncio.wait_for(conn.reader.readexactly(size), WAIT)
    return first & 0x0F, payload


# -- timeouts -------------------------------------------------------------------------------------


@pytest.fixture
async def quick_gw(tmp_path, backend: Backend) -> AsyncIterator[RunningGateway]:
    files = gateway_files(tmp_path, api_upstream=backend.url)
    async with running_gateway(files, limits={"head_timeout": 1.0}) as gw:
        yield gw


class TestSlowClients:
    async def test_head_trickled_past_the_timeout_408(self, quick_gw, backend):
        raw = get(b"/api/slow-head")
        async with connect(quick_gw) as conn:

            async def trickle() -> None:
                with contextlib.suppress(ConnectionError):
                    for byte in raw:
                        conn.writer.write(bytes([byte]))
                        await conn.writer.drain()
                        await asyncio.sleep(1.5 / len(raw))

            sending = asyncio.create_task(trickle())
            started = time.monotonic()
            try:
                answer = await conn.answer()
                assert answer.status == 408
                assert not sending.done()  # the head was still arriving
                assert time.monotonic() - started >= 0.9
                assert await conn.closed()
            finally:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
        assert backend.seen == []

    async def test_part_of_a_head_after_a_request_in_the_same_read_408(self, quick_gw, backend):
        """The next head's deadline starts with its first byte, also when that byte came in
        the same read as the request before it (not the 75 s keep-alive limit)."""
        async with connect(quick_gw) as conn:
            started = time.monotonic()
            await conn.send(get(b"/api/first") + b"GET /api/second HTTP/1.1\r\nHo")
            assert (await conn.answer()).status == 200
            answer = await conn.answer()
            assert answer.status == 408
            assert 0.9 <= time.monotonic() - started < 5
            assert await conn.closed()
        assert backend.seen == [("GET", "/api/first")]

    async def test_idle_keep_alive_outlives_the_head_timeout(self, quick_gw, backend):
        async with connect(quick_gw) as conn:
            await conn.send(get(b"/api/first"))
            assert (await conn.answer()).status == 200
            assert await conn.still_open(1.5)
            await conn.send(get(b"/api/second"))
            answer = await conn.answer()
            assert answer.status == 200 and echoed(answer.body)["path"] == "/api/second"
        assert backend.seen == [("GET", "/api/first"), ("GET", "/api/second")]


# -- graceful stop --------------------------------------------------------------------------------


class TestGracefulStop:
    async def test_request_in_flight_is_answered_then_closed(self, tmp_path, backend):
        files = gateway_files(tmp_path, api_upstream=backend.url)
        stack = contextlib.AsyncExitStack()
        gw = await stack.enter_async_context(running_gateway(files))
        try:
            async with connect(gw) as conn:
                await conn.send(get(b"/api/slow/0.5"))
                for _ in range(50):  # the backend has the request
                    if backend.seen:
                        break
                    await asyncio.sleep(0.02)
                assert backend.seen == [("GET", "/api/slow/0.5")]
                stopping = asyncio.create_task(stack.aclose())  # the gateway stops
                answer = await conn.answer()
                assert answer.status == 200
                assert echoed(answer.body)["path"] == "/api/slow/0.5"
                assert await conn.closed()
                await asyncio.wait_for(stopping, WAIT)
        finally:
            await stack.aclose()


# -- bytes a header value may not hold ------------------------------------------------------------


class TestControlBytes:
    @pytest.mark.parametrize("byte", [b"\x00", b"\x7f"], ids=["nul", "del"])
    async def test_control_byte_in_a_header_value_400(self, gw, backend, byte):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/x", b"X-Bad: a" + byte + b"b\r\n"))
            await assert_refused(conn, 400)
        assert backend.seen == []
