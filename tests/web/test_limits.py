"""Connection hygiene (docs/security.md) over raw sockets: head timeout, head size limits
answered 431, HTTP/2.0 request lines answered 505, connections per client IP, the descriptor
limit, parser errors that never reach a log with the request's bytes, and memory that stays
bounded under slow-client and header-flood loads of a real `gateway run`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from bench.slow_clients import LOADS, header_load, rss_mib
from gateway.policy.ipset import CompiledIPSet
from gateway.web.listener import ConnectionGuard
from tests.factories import (
    api_key,
    echo_app,
    gateway_files,
    gateway_process,
    raw_request,
    running_gateway,
    serve,
    written_records,
)

KEY = api_key("sync").encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header(response: bytes, name: bytes) -> bytes | None:
    head = response.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def get(path: bytes = b"/_gateway/healthz", extra: bytes = b"", close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n" + connection + extra + b"\r\n"


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response with a Content-Length body from a keep-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(header(head, b"Content-Length") or 0)
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


def audit_records(gw) -> list[dict]:
    return written_records(gw.files.audit_file)  # the audit buffer is flushed every 100 ms


async def audited(gw, request_id: str) -> dict:
    for _ in range(50):
        for record in audit_records(gw):
            if record.get("request_id") == request_id:
                return record
        await asyncio.sleep(0.1)
    raise AssertionError(f"no audit record for {request_id}")


@pytest.fixture
async def gw(tmp_path):
    async with serve(echo_app()) as backend:
        files = gateway_files(tmp_path, api_upstream=backend, dashboard_upstream=backend)
        async with running_gateway(files, limits={"head_timeout": 1.0, "per_ip": 4}) as gw:
            yield gw


class TestHeadSize:
    """8 KiB per line, 64 KiB per head, 128 headers: 431 beyond, with a request id, audited."""

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (get(extra=b"X-Big: " + b"a" * 8200 + b"\r\n"), "line_too_long"),
            (get(path=b"/" + b"a" * 8200), "line_too_long"),
            (get(extra=b"".join(b"X-%d: %s\r\n" % (i, b"a" * 7000) for i in range(10))), None),
            (get(extra=b"".join(b"X-%d: a\r\n" % i for i in range(200))), "too_many_headers"),
        ],
        ids=["header-line", "request-line", "head-in-all", "header-count"],
    )
    async def test_431(self, gw, raw, reason):
        response = await raw_request(gw.host, gw.port, raw)
        assert status_of(response) == 431, response[:200]
        request_id = header(response, b"X-Gateway-Request-Id")
        assert request_id
        record = await audited(gw, request_id.decode())
        assert record["status"] == 431 and record["decision"] == "deny:bad_request"
        if reason:
            assert record["reasons"] == [reason]

    async def test_head_trickled_past_64k(self, gw):
        """A head that never ends is cut at 64 KiB, however slowly it arrives."""
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\n")
            for i in range(17):  # 17 x 4 KB: just past 64 KiB, then nothing more
                writer.write(b"X-%d: %s\r\n" % (i, b"b" * 4000))
                await writer.drain()
                await asyncio.sleep(0.01)
            response = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        assert status_of(response) == 431

    async def test_client_still_sending_reads_the_431(self, gw):
        """The refusal lingers (FIN, then reading and discarding) instead of a reset that
        could destroy the answer before the client reads it."""
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: gw\r\n")
            for i in range(40):  # past 64 KiB, then on after the refusal has been sent
                writer.write(b"X-%d: %s\r\n" % (i, b"e" * 4000))
                await writer.drain()
                if i == 17:
                    await asyncio.sleep(0.3)
            response = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        assert status_of(response) == 431

    async def test_under_the_limits_passes(self, gw):
        """A head just under 64 KiB and a large body are fine."""
        big_head = b"".join(b"X-%d: %s\r\n" % (i, b"c" * 8000) for i in range(7))
        response = await raw_request(
            gw.host, gw.port, get(b"/api/x", b"Authorization: Bearer " + KEY + b"\r\n" + big_head)
        )
        assert status_of(response) == 200, response[:200]
        body = b"d" * 1_000_000
        raw = (
            b"POST /api/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAuthorization: Bearer "
            + KEY
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        response = await raw_request(gw.host, gw.port, raw)
        assert status_of(response) == 200
        assert json.loads(response.split(b"\r\n\r\n", 1)[1])["received"] == len(body)


class TestVersion:
    async def test_http2_request_line_is_505(self, gw):
        response = await raw_request(gw.host, gw.port, b"GET / HTTP/2.0\r\nHost: gw\r\n\r\n")
        assert status_of(response) == 505
        assert header(response, b"X-Gateway-Request-Id")

    async def test_pipelined_request_before_it_is_answered(self, gw):
        raw = get(close=False) + b"GET / HTTP/2.0\r\nHost: gw\r\n\r\n"
        response = await raw_request(gw.host, gw.port, raw)
        assert response.startswith(b"HTTP/1.1 200")
        assert b" 505 " in response


class TestHeadTimeout:
    """head_timeout is 1 s here (10 s in production)."""

    async def test_partial_head_gets_408_and_close(self, gw):
        started = time.monotonic()
        response = await raw_request(gw.host, gw.port, b"GET / HTTP/1.1\r\nHost: gw\r\n", 10)
        assert status_of(response) == 408
        assert time.monotonic() - started < 5

    async def test_silent_connection_is_closed(self, gw):
        started = time.monotonic()
        assert await raw_request(gw.host, gw.port, b"", 10) == b""
        assert time.monotonic() - started < 5

    async def test_slow_response_and_idle_keep_alive_are_not_cut(self, gw):
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        try:
            auth = b"Authorization: Bearer " + KEY + b"\r\n"
            writer.write(get(b"/api/slow/1.5", auth, close=False))
            assert status_of(await read_response(reader)) == 200  # 1.5 s > head timeout
            await asyncio.sleep(1.5)  # idle keep-alive: aiohttp's keepalive_timeout applies
            writer.write(get(close=False))
            assert status_of(await read_response(reader)) == 200
        finally:
            writer.close()


class TestPerIpCap:
    async def test_cap_per_address(self, gw):
        held = []
        try:
            for _ in range(4):
                held.append(
                    await asyncio.open_connection(gw.host, gw.port, local_addr=("127.0.0.2", 0))
                )
            reader, writer = await asyncio.open_connection(
                gw.host, gw.port, local_addr=("127.0.0.2", 0)
            )
            refused = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert status_of(refused) == 429
            other = await raw_request("127.0.0.1", gw.port, get())
            assert status_of(other) == 200  # another address is not affected
            reader, writer = held[0]
            writer.write(get())
            assert status_of(await asyncio.wait_for(reader.read(), 5)) == 200  # held ones work
        finally:
            for _reader, writer in held:
                writer.close()

    async def test_trusted_proxy_is_exempt(self, tmp_path):
        files = gateway_files(tmp_path, extra_config={"trusted_proxies": ["127.0.0.2/32"]})
        async with running_gateway(files, limits={"per_ip": 2}) as gw:
            held = [
                await asyncio.open_connection(gw.host, gw.port, local_addr=("127.0.0.2", 0))
                for _ in range(5)
            ]
            try:
                reader, writer = held[-1]
                writer.write(get())
                assert status_of(await asyncio.wait_for(reader.read(), 5)) == 200
            finally:
                for _reader, writer in held:
                    writer.close()

    def test_ipv6_counts_per_64(self):
        """One machine holds a whole /64: its addresses share the cap (only ::1 exists here,
        so the guard is driven directly)."""
        guard = ConnectionGuard(
            lambda: CompiledIPSet.build([]), lambda: None, max_connections=100, per_ip=2
        )
        assert guard.admit("2001:db8:1:1::1") is None
        assert guard.admit("2001:db8:1:1::2") is None
        assert guard.admit("2001:db8:1:1::3") == 429  # the same /64
        assert guard.admit("2001:db8:1:2::1") is None  # another /64
        guard.release("2001:db8:1:1::1")
        assert guard.admit("2001:db8:1:1::4") is None
        assert guard.admit("192.0.2.1") is None and guard.admit("192.0.2.2") is None


SECRET_KEY = b"gwk_live_SECRETKEY_0123456789"
SECRET_COOKIE = b"SECRETSESSION0123456789abcdef"
SECRET_PASSWORD = b"SECRETPASSWORD-correct-horse"

LEAKY = [
    # an invalid header value character after the credentials
    b"POST /_gateway/login HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + SECRET_KEY + b"\r\n"
    b"Cookie: gateway_session=" + SECRET_COOKIE + b"\r\nX-Bad: a\x01b\r\n"
    b"Content-Length: 30\r\n\r\nusername=a&password=" + SECRET_PASSWORD[:9],
    # a header line over the limit made of a credential
    b"GET / HTTP/1.1\r\nHost: gw\r\nCookie: gateway_session=" + SECRET_COOKIE * 400 + b"\r\n\r\n",
    # a request line the parser refuses, quoting the key
    b"GET /?key=" + SECRET_KEY + b" HTTP/1.1 junk\r\nHost: gw\r\n\r\n",
    # a chunked body with a broken chunk size after the password
    b"POST /_gateway/login HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1e\r\npassword=" + SECRET_PASSWORD + b"\r\nzz\r\n",
]


async def test_parser_errors_never_log_request_bytes(tmp_path):
    files = gateway_files(tmp_path)
    async with gateway_process(files) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        request_ids = []
        for raw in LEAKY:
            response = await raw_request("127.0.0.1", port, raw)
            assert status_of(response) in (400, 431), response[:200]
            request_id = header(response, b"X-Gateway-Request-Id")
            assert request_id, response[:300]
            assert SECRET_KEY not in response and SECRET_COOKIE not in response
            request_ids.append(request_id.decode())
        await asyncio.sleep(0.5)
    assert proc.stderr is not None
    stderr = await proc.stderr.read()
    for secret in (SECRET_KEY, SECRET_COOKIE, SECRET_PASSWORD, b"SECRET"):
        assert secret not in stderr
    for line in stderr.splitlines():
        json.loads(line)  # every line is one JSON object
    audit = files.audit_file.read_text()
    assert b"SECRET" not in audit.encode()
    for request_id in request_ids:
        assert f'"request_id":"{request_id}"' in audit


@pytest.mark.parametrize("load", ["flood-16k", "flood-8k", "stall-60k"])
async def test_memory_bounded_under_header_floods(tmp_path, load):
    """500 connections, never finishing their heads, from 5 addresses. Before: 2.2 GB for
    120 headers of 16 KB each. The load stops early if the bound is crossed (bounded load)."""
    limit_mib = 160.0
    async with gateway_process(gateway_files(tmp_path)) as (url, proc):
        before = rss_mib(proc.pid)
        peak = before

        def over() -> bool:
            nonlocal peak
            peak = max(peak, rss_mib(proc.pid))
            return peak - before > limit_mib

        port = int(url.rsplit(":", 1)[1])
        stats = await header_load(
            "127.0.0.1", port, connections=500, should_stop=over, **LOADS[load]
        )  # type: ignore[arg-type]
        over()
        assert stats["opened"] == 500
        assert peak - before <= limit_mib, (peak - before, stats)
        if load != "stall-60k":
            assert stats["closed_by_gateway"] > 0


async def test_descriptor_limit(tmp_path):
    """At the descriptor budget new connections get 503, open ones keep being served, and the
    condition is logged once, not once per connection."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    async with gateway_process(gateway_files(tmp_path), fd_limit=256) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        keep_reader, keep_writer = await asyncio.open_connection("127.0.0.1", port)
        keep_writer.write(get(close=False))
        assert status_of(await read_response(keep_reader)) == 200
        try:
            for i in range(150):  # budget: (256 - 64) // 2 = 96 connections
                source = f"127.0.0.{2 + i % 5}"
                held.append(
                    await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                )
            refused = 0
            for reader, _writer in held:
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(reader.read(100), 0.05)
                    refused += answer.startswith(b"HTTP/1.1 503")
            assert 40 <= refused <= 60, refused
            keep_writer.write(get(close=False))
            assert status_of(await read_response(keep_reader)) == 200  # the open one is served
        finally:
            for _reader, writer in held:
                writer.close()
        await asyncio.sleep(0.3)
        assert status_of(await raw_request("127.0.0.1", port, get())) == 200
        keep_writer.close()
    assert proc.stderr is not None
    stderr = (await proc.stderr.read()).decode()
    assert stderr.count("connection_limit_reached") == 1, stderr[-2000:]
    assert "Traceback" not in stderr
