"""Conformance of the upstream client against real servers: aiohttp, nginx, and raw sockets that
send the edge cases (bare LF, early close, 1xx, trailers, huge heads, slow bodies)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator

import pytest

from gateway.web.upstream import (
    UpstreamClient,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.web.upstream.connection import HIGH_WATER
from tests.web.upstream.servers import (
    BIG,
    aiohttp_server,
    nginx_server,
    raw_server,
    read_head,
)

T = {"connect_timeout": 2.0, "read_timeout": 5.0}


@pytest.fixture
async def http() -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient()
    yield client
    await client.close()


async def body_of(response: UpstreamResponse) -> bytes:
    parts = [chunk async for chunk in response.chunks()]
    response.release()
    return b"".join(parts)


def header(response: UpstreamResponse, name: str) -> str | None:
    return next((v for k, v in response.headers if k.lower() == name.lower()), None)


async def blocks(total: int, size: int = 65536) -> AsyncIterator[bytes]:
    block = b"u" * size
    sent = 0
    while sent < total:
        part = block[: min(size, total - sent)]
        sent += len(part)
        yield part


@pytest.fixture(params=["aiohttp", "nginx"])
async def server(request, tmp_path) -> AsyncIterator[str]:
    if request.param == "aiohttp":
        async with aiohttp_server() as url:
            yield url
    else:
        async with nginx_server(tmp_path) as url:
            yield url


class TestRealServers:
    """The same exchanges against aiohttp (chunked /big) and nginx (static /big, with length)."""

    async def test_small_and_reuse(self, http, server):
        for _ in range(20):
            response = await http.request(server, "GET", "/small", [("Host", "x")], **T)
            assert response.status == 200
            assert await body_of(response) == b"hello"
        pool = http._pool(server)
        assert pool.open == 1 and len(pool.idle) == 1  # one keep-alive connection, reused

    async def test_big_streamed(self, http, server):
        response = await http.request(server, "GET", "/big", [("Host", "x")], **T)
        assert response.status == 200
        body = await body_of(response)
        assert len(body) == BIG and body == b"b" * BIG
        again = await http.request(server, "GET", "/small", [("Host", "x")], **T)
        assert await body_of(again) == b"hello"
        assert http._pool(server).open == 1

    async def test_not_found(self, http, server):
        response = await http.request(server, "GET", "/nothing", [("Host", "x")], **T)
        assert response.status == 404
        await body_of(response)

    async def test_head_has_no_body(self, http, server):
        response = await http.request(server, "HEAD", "/small", [("Host", "x")], **T)
        assert response.status == 200
        assert await body_of(response) == b""
        after = await http.request(server, "GET", "/small", [("Host", "x")], **T)
        assert await body_of(after) == b"hello"  # HEAD's connection is not reused: no desync

    @pytest.mark.parametrize("chunked", [False, True])
    async def test_upload_then_keep_alive(self, http, server, chunked):
        size = 1_000_003
        headers = [("Host", "x")] if chunked else [("Host", "x"), ("Content-Length", str(size))]
        response = await http.request(
            server,
            "POST",
            "/echo",
            headers,
            blocks(size),
            content_length=None if chunked else size,
            **T,
        )
        assert response.status == 200
        body = await body_of(response)
        if b"sha256" in body:  # aiohttp echoes; nginx reads and discards
            echo = json.loads(body)
            expected = hashlib.sha256(b"".join([b"u" * size])).hexdigest()
            assert (echo["size"], echo["sha256"], echo["chunked"]) == (size, expected, chunked)
        after = await http.request(server, "GET", "/small", [("Host", "x")], **T)
        assert await body_of(after) == b"hello"


class TestFailures:
    async def test_connection_refused_is_unavailable(self, http):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(UpstreamUnavailable):
            await http.request(f"http://127.0.0.1:{port}", "GET", "/", [("Host", "x")], **T)

    async def test_silent_upstream_times_out(self, http):
        async with aiohttp_server() as url:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await http.request(
                    url, "GET", "/silent", [("Host", "x")], connect_timeout=1, read_timeout=0.3
                )
            assert time.monotonic() - started < 5

    async def test_slow_body_within_read_timeout(self, http):
        async with aiohttp_server() as url:
            response = await http.request(
                url, "GET", "/drip/0.1", [("Host", "x")], connect_timeout=1, read_timeout=1
            )
            assert await body_of(response) == b"0123"

    async def test_body_stalls_past_read_timeout(self, http):
        async with aiohttp_server() as url:
            response = await http.request(
                url, "GET", "/drip/0.6", [("Host", "x")], connect_timeout=1, read_timeout=0.3
            )
            with pytest.raises(UpstreamTimeout):
                await body_of(response)
            response.close()

    async def test_header_injection_refused(self, http):
        async with aiohttp_server() as url:
            with pytest.raises(ValueError):
                await http.request(url, "GET", "/small", [("X-A", "a\r\nX-B: b")], **T)

    async def test_pool_cap_waits_then_times_out(self):
        client = UpstreamClient(limit_per_upstream=1)
        try:
            async with aiohttp_server() as url:
                slow = asyncio.ensure_future(
                    client.request(
                        url, "GET", "/silent", [("Host", "x")], connect_timeout=1, read_timeout=3
                    )
                )
                await asyncio.sleep(0.2)
                with pytest.raises(UpstreamTimeout):
                    await client.request(
                        url, "GET", "/small", [("Host", "x")], connect_timeout=0.3, read_timeout=1
                    )
                slow.cancel()
                await asyncio.gather(slow, return_exceptions=True)
                # The cancelled request's connection was closed: the next one opens a new one.
                response = await client.request(url, "GET", "/small", [("Host", "x")], **T)
                assert await body_of(response) == b"hello"
        finally:
            await client.close()


class TestBackpressure:
    async def test_download_reading_pauses(self, http):
        async with aiohttp_server() as url:
            response = await http.request(url, "GET", "/sized/30000000", [("Host", "x")], **T)
            conn = response._conn
            peak = 0
            total = 0
            async for chunk in response.chunks():
                total += len(chunk)
                await asyncio.sleep(0.002)  # a slow client
                peak = max(peak, conn.body_size)
            response.release()
            assert total == 30_000_000
            # Reading pauses past HIGH_WATER; one more socket read may land meanwhile.
            assert peak < HIGH_WATER + 1024 * 1024, peak

    async def test_upload_waits_for_the_upstream(self, http):
        produced = 0

        async def counting() -> AsyncIterator[bytes]:
            nonlocal produced
            async for block in blocks(200 * 1024 * 1024):
                produced += len(block)
                yield block

        async def slow_reader(reader, writer):
            await read_head(reader)
            await asyncio.sleep(1.0)  # reads nothing: the socket buffers fill up
            writer.write(
                b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()

        async with raw_server(slow_reader) as url:
            size = 200 * 1024 * 1024
            response = await http.request(
                url,
                "POST",
                "/",
                [("Content-Length", str(size))],
                counting(),
                content_length=size,
                **T,
            )
            assert response.status == 413  # heard while uploading; the rest is not sent
            await body_of(response)
        assert produced < 64 * 1024 * 1024, produced  # bounded by socket buffers, not the body


class TestRawEdgeCases:
    async def _get(self, http, handler, **kwargs) -> tuple[UpstreamResponse, bytes]:  # type: ignore[no-untyped-def]
        async with raw_server(handler) as url:
            response = await http.request(url, "GET", "/", [("Host", "x")], **{**T, **kwargs})
            return response, await body_of(response)

    async def test_bare_lf_is_refused(self, http):
        async def bare_lf(reader, writer):
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok")

        with pytest.raises(UpstreamUnavailable, match="malformed"):
            await self._get(http, bare_lf)

    async def test_close_before_response(self, http):
        async def early_close(reader, writer):
            await read_head(reader)

        with pytest.raises(UpstreamUnavailable, match="before a response"):
            await self._get(http, early_close)

    async def test_close_mid_body(self, http):
        async def cut(reader, writer):
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 50)

        with pytest.raises(UpstreamUnavailable, match="mid-response"):
            await self._get(http, cut)

    async def test_interim_responses_skipped(self, http):
        async def interim(reader, writer):
            await read_head(reader)
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: yes\r\n\r\ndone"
            )

        response, body = await self._get(http, interim)
        assert (response.status, body) == (201, b"done")
        assert header(response, "X-Final") == "yes" and header(response, "Link") is None

    async def test_unasked_101_is_refused(self, http):
        async def switch(reader, writer):
            await read_head(reader)
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")

        with pytest.raises(UpstreamUnavailable, match="101"):
            await self._get(http, switch)

    async def test_trailers_dropped_connection_reused(self, http):
        async def trailers(reader, writer):
            for _ in range(2):
                await read_head(reader)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                    b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
                )

        async with raw_server(trailers) as url:
            for _ in range(2):
                response = await http.request(url, "GET", "/", [("Host", "x")], **T)
                assert await body_of(response) == b"abcde"
                assert header(response, "X-Sum") is None
            assert http._pool(url).open == 1

    async def test_huge_head_refused(self, http):
        async def huge(reader, writer):
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"h" * 200_000 + b"\r\n\r\n")

        with pytest.raises(UpstreamUnavailable, match="head is over"):
            await self._get(http, huge)

    async def test_body_until_close(self, http):
        async def eof_delimited(reader, writer):
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
            await writer.drain()

        _, body = await self._get(http, eof_delimited)
        assert body == b"all of it"

    async def test_slow_head_bytes(self, http):
        async def trickle(reader, writer):
            await read_head(reader)
            for piece in (b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n", b"\r\n", b"o", b"k"):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)

        _, body = await self._get(http, trickle)
        assert body == b"ok"

    async def test_stale_keep_alive_retried(self, http):
        served = 0

        async def one_per_connection(reader, writer):
            nonlocal served
            await read_head(reader)
            served += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # says keep-alive
            await writer.drain()
            # ...then closes: the client's pooled connection is dead when it is next used.

        async with raw_server(one_per_connection) as url:
            for _ in range(3):
                response = await http.request(url, "GET", "/", [("Host", "x")], **T)
                assert await body_of(response) == b"ok"
                await asyncio.sleep(0.05)
        assert served == 3


class TestExpectContinue:
    async def _post(self, http, handler, read_timeout: float = 5.0):  # type: ignore[no-untyped-def]
        async with raw_server(handler) as url:
            response = await http.request(
                url,
                "POST",
                "/",
                [("Host", "x"), ("Content-Length", "5"), ("Expect", "100-continue")],
                blocks(5, 5),
                content_length=5,
                connect_timeout=1,
                read_timeout=read_timeout,
                expect_continue=True,
            )
            body = await body_of(response)
            await asyncio.sleep(0.1)  # the server sees the connection close
            return response, body

    async def test_body_after_100(self, http):
        async def polite(reader, writer):
            await read_head(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await reader.readexactly(5)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body)

        response, body = await self._post(http, polite)
        assert (response.status, body) == (200, b"uuuuu")

    async def test_upstream_ignoring_expect_gets_the_body(self, http):
        async def ignores(reader, writer):
            await read_head(reader)
            body = await reader.readexactly(5)  # no 100 ever
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body)

        started = time.monotonic()
        response, body = await self._post(http, ignores, read_timeout=10)
        assert (response.status, body) == (200, b"uuuuu")
        assert time.monotonic() - started < 8  # never held until the read timeout (10 s)

    async def test_final_answer_instead_of_100(self, http):
        got: list[bytes] = []

        async def refuses(reader, writer):
            await read_head(reader)
            writer.write(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            got.append(await reader.read(100))  # the client must not send the body

        response, _ = await self._post(http, refuses)
        assert response.status == 417
        assert got == [b""]


class TestStreamedUploadThenAnswer:
    async def test_answer_after_a_slow_upload_is_heard(self, http):
        """The response that follows a body sent in several pieces wakes the request at once
        (a cancelled wait while sending must not lose the next one)."""

        async def reads_then_answers(reader, writer):
            await read_head(reader)
            await reader.readexactly(5 * 4096)
            await asyncio.sleep(0.2)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        async def slow_body() -> AsyncIterator[bytes]:
            for _ in range(5):
                await asyncio.sleep(0.05)
                yield b"s" * 4096

        async with raw_server(reads_then_answers) as url:
            started = time.monotonic()
            response = await http.request(
                url,
                "POST",
                "/",
                [("Host", "x"), ("Content-Length", str(5 * 4096))],
                slow_body(),
                content_length=5 * 4096,
                connect_timeout=1,
                read_timeout=10,
            )
            assert await body_of(response) == b"ok"
            assert time.monotonic() - started < 8  # woken by the answer, not by the 10 s timeout
