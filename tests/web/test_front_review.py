"""An outside review of the front (gateway.web.front), over raw sockets against a real gateway
and a real backend: each test pins a defect that was found and fixed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from tests.factories import RunningGateway, gateway_files, running_gateway
from tests.web.test_front import (
    Backend,
    echoed,
    gateway_before,
    masked_text,
    read_frame,
    recording_echo,
)
from tests.web.test_wire import AUTH, WAIT, Conn, assert_refused, connect, get, request

WEBSOCKET = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)
UPGRADES = {
    "websocket-declined": WEBSOCKET,  # aiohttp takes it as an upgrade; the page declines it
    "h2c": b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABk\r\n",
}
# A request the front refuses (501): forwarded as chunked, its body would reach the backend
# without the coding that says it is gzip.
CODED = (
    b"POST /api/coded HTTP/1.1\r\nHost: gw\r\n" + AUTH
    + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
)  # fmt: skip


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with recording_echo() as echo:
        yield echo


@pytest.fixture
async def gw(tmp_path, backend: Backend) -> AsyncIterator[RunningGateway]:
    async with gateway_before(tmp_path, backend) as gateway:
        yield gateway


async def rest(conn: Conn, wait: float = 2.0) -> bytes:
    """What arrives until the gateway closes (or `wait` seconds pass with nothing more)."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(conn.reader.read(65536), wait):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


class TestDeclinedUpgrade:
    """After a request the front read as an upgrade, it passes the bytes on unparsed. If no
    upgrade happens, they must not become requests parsed by aiohttp alone (bypassing the
    front's parser, limits and 501/505 answers): the connection closes after the answer."""

    @pytest.mark.parametrize("upgrade", UPGRADES.values(), ids=UPGRADES.keys())
    async def test_next_request_after_the_answer(self, gw, backend, upgrade):
        async with connect(gw) as conn:
            await conn.send(get(b"/_gateway/healthz", upgrade, key=False))
            answer = await conn.answer()
            assert answer.status == 200
            assert answer.get("connection") == "close"
            with_next = b""
            try:
                await conn.send(CODED)
            except ConnectionError:
                pass
            else:
                with_next = await rest(conn)
            assert with_next == b""
        assert backend.seen == []

    @pytest.mark.parametrize("upgrade", UPGRADES.values(), ids=UPGRADES.keys())
    async def test_next_request_in_the_same_send(self, gw, backend, upgrade):
        async with connect(gw) as conn:
            await conn.send(get(b"/_gateway/healthz", upgrade, key=False) + CODED)
            answer = await conn.answer()
            assert answer.status == 200
            assert await rest(conn) == b""
        assert backend.seen == []

    async def test_connect_then_a_request(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(b"CONNECT gw:443 HTTP/1.1\r\nHost: gw\r\n\r\n" + CODED)
            answer = await conn.answer()
            assert 400 <= answer.status < 500
            assert await rest(conn) == b""
        assert backend.seen == []


async def read_to_close(conn: Conn) -> bytes:
    """Everything until the gateway closes; AssertionError if it does not within WAIT."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(conn.reader.read(65536), WAIT):
            data += chunk
    except ConnectionResetError:
        pass
    return data


async def send_until_closed(conn: Conn, piece: bytes, most: int) -> None:
    """Send `piece` again and again, up to `most` bytes or until the gateway closes."""
    sent = 0
    with contextlib.suppress(ConnectionError):
        while sent < most:
            conn.writer.write(piece)
            await asyncio.wait_for(conn.writer.drain(), WAIT)
            sent += len(piece)


TRAILED = {
    "served-here": b"POST /api/upload HTTP/1.1\r\nHost: gw\r\n" + AUTH,
    "bridged": b"POST /_gateway/login HTTP/1.1\r\nHost: gw\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n",
}


class TestTrailerSize:
    """A chunked body's trailer section is parsed like a head: held to the 64 KiB of a head,
    not grown without end (httptools keeps an unfinished field value whole in memory)."""

    @pytest.mark.parametrize("head", TRAILED.values(), ids=TRAILED.keys())
    async def test_endless_trailer_field_cut(self, gw, backend, head):
        async with connect(gw) as conn:
            await conn.send(head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: ")
            await send_until_closed(conn, b"a" * 16384, 1024 * 1024)
            answer = await read_to_close(conn)  # the request failed; not waiting for the end
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]

    async def test_trailers_within_the_limit_pass(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(
                TRAILED["served-here"]
                + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                + b"X-T: %s\r\n" % (b"a" * 4000) * 10
                + b"\r\n"
                + get(b"/api/next")
            )
            assert (await conn.answer()).status == 200
            assert (await conn.answer()).status == 200
        assert backend.seen == [("POST", "/api/upload"), ("GET", "/api/next")]


class TestMissingHost:
    """HTTP/1.1 requires Host (RFC 9112 3.2: 400 without it); aiohttp's side refuses such a
    request, so the front must not serve it either (a backend would get no Host at all)."""

    async def test_api_request_without_host_400(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(b"GET /api/x HTTP/1.1\r\n" + AUTH + b"\r\n")
            await assert_refused(conn, 400)  # the gateway's answer, not the backend's
        assert backend.seen == []


@pytest.fixture
async def quick_gw(tmp_path, backend: Backend) -> AsyncIterator[RunningGateway]:
    files = gateway_files(tmp_path, api_upstream=backend.url, dashboard_upstream=backend.url)
    async with running_gateway(files, limits={"head_timeout": 1.0}) as gw:
        yield gw


PARTIAL_AFTER = {
    "served-here": request(b"POST", b"/api/one", body=b"hello"),
    "bridged": request(b"POST", b"/_gateway/healthz", body=b"hello", key=False),
}


class TestHeadTimeoutAfterABody:
    """The head timeout runs from a head's first byte, also when that byte came in the same
    read as the end of the request before it (not the 75 s keep-alive limit instead)."""

    @pytest.mark.parametrize("first", PARTIAL_AFTER.values(), ids=PARTIAL_AFTER.keys())
    async def test_partial_head_in_the_same_read_408(self, quick_gw, backend, first):
        async with connect(quick_gw) as conn:
            await conn.send(first + b"GET /api/two HTTP/1.1\r\nHo")
            assert (await conn.answer()).status in (200, 405)
            started = time.monotonic()
            answer = await conn.answer()
            assert answer.status == 408
            assert time.monotonic() - started < 3.0
            assert await conn.closed()


class TestPipelinedFlood:
    """One read of small pipelined requests (256 KiB: thousands of them) behind a slow one:
    their parsed form is some 25 times their size, so only a few are parsed ahead; the rest
    waits as bytes. All are answered, in order."""

    async def test_memory_bounded_and_all_answered(self, gw, backend):
        tiny = b"GET /api/x HTTP/1.1\r\nHost: gw\r\n\r\n"  # no key: 401 from the front
        count = 240 * 1024 // len(tiny)
        async with connect(gw) as conn:
            await conn.send(get(b"/api/slow/1"))
            for _ in range(100):  # the backend has the slow request
                if backend.seen:
                    break
                await asyncio.sleep(0.02)
            gc.collect()
            tracemalloc.start()
            try:
                await conn.send(tiny * count)
                await asyncio.sleep(0.5)  # read and parsed while the slow one is answered
                held, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert held < 2_000_000, held
            assert (await conn.answer()).status == 200
            data = b""
            while data.count(b"HTTP/1.1 401 ") < count:
                chunk = await asyncio.wait_for(conn.reader.read(1 << 20), WAIT)
                assert chunk
                data += chunk
            assert data.count(b"HTTP/1.1 ") == count
            assert await conn.still_open()
        assert backend.seen == [("GET", "/api/slow/1")]


class TestAcceptedUpgrade:
    """The declined-upgrade close above leaves a WebSocket alone: frames sent in the same
    send as the handshake still arrive (first request, and after a request served here)."""

    @pytest.mark.parametrize("after_api", [False, True], ids=["first", "after-api"])
    async def test_frame_in_the_handshake_send(self, gw, backend, after_api):
        async with connect(gw) as conn:
            if after_api:
                await conn.send(get(b"/api/first"))
                assert (await conn.answer()).status == 200
            await conn.send(get(b"/api/ws", WEBSOCKET) + masked_text(b"early"))
            assert (await conn.answer()).status == 101
            assert await read_frame(conn) == (0x1, b"echo:early")
            await conn.send(masked_text(b"later"))
            assert await read_frame(conn) == (0x1, b"echo:later")


class TestFoundOnBothSides:
    """Defects the review found in code both sides share (gate, forward_headers)."""

    @pytest.mark.parametrize(
        "first", [b"", get(b"/_gateway/healthz", key=False)], ids=["front", "aiohttp"]
    )
    async def test_api_key_that_is_not_utf8_401(self, gw, backend, first):
        """It was a 500 with a traceback (UnicodeEncodeError hashing the key)."""
        bad = b"GET /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
        async with connect(gw) as conn:
            await conn.send(first + bad)
            if first:
                assert (await conn.answer()).status == 200
            answer = await conn.answer()
            assert answer.status == 401
            assert 'error="invalid_token"' in answer.get("www-authenticate")
        assert backend.seen == []

    async def test_http10_request_without_host_gets_the_upstreams(self, gw, backend):
        """HTTP/1.0 needs no Host; the upstream request is HTTP/1.1, which does."""
        async with connect(gw) as conn:
            await conn.send(b"GET /api/x HTTP/1.0\r\n" + AUTH + b"\r\n")
            answer = await conn.answer()
        assert answer.status == 200
        sent = {name.lower(): value for name, value in echoed(answer.body)["headers"]}
        assert sent["host"] == backend.url.removeprefix("http://")
        assert "x-forwarded-host" not in sent
