"""The gateway's HTTP/1.1 wire behaviour as a client sees it, over raw sockets: keep-alive,
pipelining, HTTP/1.0, HEAD, bodiless statuses, chunked bodies both ways, 100-continue, the API
surface's denials, framing the parser refuses, head limits, upstream failures and clients that
go away. Any server in front of the gateway's app (docs/http.md) must answer the same bytes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.factories import (
    GatewayFiles,
    RunningGateway,
    api_key,
    free_port,
    gateway_files,
    running_gateway,
    serve,
    written_records,
)
from tests.web.upstream.servers import raw_server, read_head

KEY = api_key("sync").encode()
AUTH = b"Authorization: Bearer " + KEY + b"\r\n"
WAIT = 5.0  # seconds any single read may take
BODILESS = (204, 304)


# -- reading answers ----------------------------------------------------------------------------


@dataclass
class Answer:
    version: bytes  # b"HTTP/1.1"
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, (name, values)
        return values[0] if values else None


async def read_answer(
    reader: asyncio.StreamReader, *, head_only: bool = False, until_close: bool = False
) -> Answer:
    """One response: status line, headers, then a Content-Length, chunked or (`until_close`,
    or neither framing given) read-to-close body; none for HEAD (`head_only`), 1xx, 204, 304."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    lines = head[:-4].split(b"\r\n")
    version, status, _reason = lines[0].split(b" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower().decode(), value.strip().decode("latin-1")))
    answer = Answer(version, int(status), headers, b"")
    if head_only or answer.status < 200 or answer.status in BODILESS:
        return answer
    length = answer.get("content-length")
    if answer.get("transfer-encoding") == "chunked":
        answer.body = await read_chunked(reader)
    elif length is not None and not until_close:
        answer.body = await asyncio.wait_for(reader.readexactly(int(length)), WAIT)
    else:
        answer.body = await asyncio.wait_for(reader.read(), WAIT)
    return answer


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT)
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            assert await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT) == b"\r\n"
            return body
        body += await asyncio.wait_for(reader.readexactly(size), WAIT)
        assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"


class Conn:
    """One client connection to the gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, **kwargs: Any) -> Answer:
        return await read_answer(self.reader, **kwargs)

    async def closed(self) -> bool:
        """The gateway closed the connection, with nothing more sent."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), WAIT)
        except ConnectionResetError:
            return True
        assert rest == b"", rest[:200]
        return True

    async def still_open(self, wait: float = 0.2) -> bool:
        """Nothing arrives and the connection stays open for `wait` seconds."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected bytes or close: {data!r}")


@contextlib.asynccontextmanager
async def connect(gw: RunningGateway, local_addr: str | None = None) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            gw.host, gw.port, local_addr=(local_addr, 0) if local_addr else None
        ),
        WAIT,
    )
    try:
        yield Conn(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def request(
    method: bytes,
    path: bytes,
    extra: bytes = b"",
    *,
    body: bytes = b"",
    key: bool = True,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    head = method + b" " + path + b" " + version + b"\r\nHost: gw\r\n"
    if key:
        head += AUTH
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + extra + b"\r\n" + body


def get(path: bytes, extra: bytes = b"", **kwargs: Any) -> bytes:
    return request(b"GET", path, extra, **kwargs)


# -- the backend ------------------------------------------------------------------------------


@dataclass
class Backend:
    url: str
    seen: list[tuple[str, str]]  # (method, raw path) of every request that reached it


def wire_app(seen: list[tuple[str, str]]) -> web.Application:
    """Answers by path: /api/204, /api/304, /api/server (its own Server header), /api/stream
    (no length: chunked), /api/slow/<s>, /api/body (length and sha256 of the body), /api/fixed
    (the same body for every method); anything else: its raw path as text."""

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.raw_path))
        path = request.path
        if path == "/api/204":
            return web.Response(status=204)
        if path == "/api/304":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        if path == "/api/server":
            return web.Response(text="own server", headers={"Server": "backend/1.0"})
        if path == "/api/fixed":
            return web.Response(text="fixed body", headers={"X-Fixed": "1"})
        if path == "/api/stream":
            response = web.StreamResponse()
            await response.prepare(request)
            for i in range(3):
                await response.write(b"part%d;" % i)
                await asyncio.sleep(0.01)
            await response.write_eof()
            return response
        if path.startswith("/api/slow/"):
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        if path == "/api/body":
            digest = hashlib.sha256()
            size = 0
            async for chunk in request.content.iter_any():
                digest.update(chunk)
                size += len(chunk)
            return web.json_response({"size": size, "sha256": digest.hexdigest()})
        return web.Response(text=request.raw_path)

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    seen: list[tuple[str, str]] = []
    async with serve(wire_app(seen)) as url:
        yield Backend(url, seen)


@pytest.fixture
async def gw(tmp_path, backend: Backend) -> AsyncIterator[RunningGateway]:
    files = gateway_files(tmp_path, api_upstream=backend.url, dashboard_upstream=backend.url)
    async with running_gateway(files) as gw:
        yield gw


def audit_records(files: GatewayFiles) -> list[dict[str, Any]]:
    return written_records(files.audit_file)


async def audited_request(files: GatewayFiles, path: str) -> dict[str, Any]:
    """The `request` audit record of `path` (the audit file is flushed every 100 ms)."""
    for _ in range(30):
        for record in audit_records(files):
            if record.get("event") == "request" and record.get("path") == path:
                return record
        await asyncio.sleep(0.1)
    raise AssertionError(f"no request record for {path}")


# -- the tests ----------------------------------------------------------------------------------


class TestKeepAlive:
    async def test_three_requests_on_one_connection(self, gw, backend):
        async with connect(gw) as conn:
            ids = []
            for name in (b"one", b"two", b"three"):
                await conn.send(get(b"/api/" + name))
                answer = await conn.answer()
                assert answer.version == b"HTTP/1.1" and answer.status == 200
                assert answer.body == b"/api/" + name
                assert answer.get("server") == "gateway"
                assert answer.get("date")
                assert answer.get("connection") is None
                ids.append(answer.get("x-gateway-request-id"))
            assert all(ids) and len(set(ids)) == 3
            assert await conn.still_open()
        assert backend.seen == [("GET", "/api/one"), ("GET", "/api/two"), ("GET", "/api/three")]

    async def test_backend_server_header_passes_alone(self, gw):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/server"))
            answer = await conn.answer()
            assert answer.status == 200 and answer.body == b"own server"
            assert answer.all("server") == ["backend/1.0"]
            await conn.send(get(b"/api/after"))
            assert (await conn.answer()).all("server") == ["gateway"]

    async def test_connection_close_is_honoured(self, gw):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/last", b"Connection: close\r\n"))
            answer = await conn.answer()
            assert answer.status == 200 and answer.body == b"/api/last"
            assert answer.get("connection") == "close"
            assert await conn.closed()


class TestPipelining:
    async def test_three_api_requests_in_one_write(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/p1") + get(b"/api/p2?q=1") + get(b"/api/p3"))
            bodies = [(await conn.answer()).body for _ in range(3)]
            assert bodies == [b"/api/p1", b"/api/p2?q=1", b"/api/p3"]
            assert await conn.still_open()
        assert [path for _method, path in backend.seen] == ["/api/p1", "/api/p2?q=1", "/api/p3"]

    async def test_api_gateway_page_api(self, gw):
        async with connect(gw) as conn:
            await conn.send(
                get(b"/api/first") + get(b"/_gateway/healthz", key=False) + get(b"/api/third")
            )
            first, health, third = [await conn.answer() for _ in range(3)]
            assert (first.status, first.body) == (200, b"/api/first")
            assert health.status == 200 and json.loads(health.body) == {"status": "ok"}
            assert health.get("content-type") == "application/json"
            assert health.get("server") == "gateway"
            assert (third.status, third.body) == (200, b"/api/third")

    async def test_post_bodies_between_pipelined_requests(self, gw):
        data = b"abc" * 1000
        async with connect(gw) as conn:
            await conn.send(
                request(b"POST", b"/api/body", body=data)
                + get(b"/api/between")
                + request(b"PUT", b"/api/body", body=b"x")
            )
            first, between, last = [await conn.answer() for _ in range(3)]
            assert json.loads(first.body) == {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            assert between.body == b"/api/between"
            assert json.loads(last.body)["size"] == 1


class TestHttp10:
    async def test_without_keep_alive_the_gateway_closes(self, gw):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/old", version=b"HTTP/1.0"))
            answer = await conn.answer()
            assert answer.version == b"HTTP/1.0" and answer.status == 200
            assert answer.body == b"/api/old"
            assert answer.get("connection") is None
            assert await conn.closed()

    async def test_keep_alive_is_honoured(self, gw):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/a", b"Connection: keep-alive\r\n", version=b"HTTP/1.0"))
            first = await conn.answer()
            assert first.version == b"HTTP/1.0" and first.status == 200
            assert first.get("connection") == "keep-alive"
            assert first.body == b"/api/a"
            await conn.send(get(b"/api/b", version=b"HTTP/1.0"))
            second = await conn.answer()
            assert second.status == 200 and second.body == b"/api/b"
            assert await conn.closed()

    async def test_unframed_backend_body_ends_with_the_connection(self, gw):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/stream", version=b"HTTP/1.0"))
            answer = await conn.answer(until_close=True)
            assert answer.status == 200
            assert answer.get("transfer-encoding") is None
            assert answer.get("content-length") is None
            assert answer.body == b"part0;part1;part2;"


class TestHead:
    async def test_head_has_the_get_length_and_no_body(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/fixed"))
            got = await conn.answer()
            await conn.send(request(b"HEAD", b"/api/fixed"))
            head = await conn.answer(head_only=True)
            assert head.status == 200
            assert head.get("content-length") == got.get("content-length") == "10"
            assert head.get("x-fixed") == "1"
            await conn.send(get(b"/api/next"))
            following = await conn.answer()  # body bytes of the HEAD would show up here
            assert following.status == 200 and following.body == b"/api/next"
        assert backend.seen[1] == ("HEAD", "/api/fixed")


class TestBodilessStatuses:
    @pytest.mark.parametrize("status", BODILESS)
    async def test_no_body_and_connection_reused(self, gw, status):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/%d" % status))
            answer = await conn.answer()
            assert answer.status == status
            assert answer.get("transfer-encoding") is None
            if status == 304:
                assert answer.get("etag") == '"v1"'
            else:
                assert answer.get("content-length") is None
            await conn.send(get(b"/api/next"))
            following = await conn.answer()
            assert following.status == 200 and following.body == b"/api/next"


class TestStreamedResponse:
    async def test_chunked_for_http11(self, gw):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/stream") + get(b"/api/after"))
            answer = await conn.answer()
            assert answer.status == 200
            assert answer.get("transfer-encoding") == "chunked"
            assert answer.get("content-length") is None
            assert answer.body == b"part0;part1;part2;"
            assert (await conn.answer()).body == b"/api/after"


class TestRequestBodies:
    async def test_content_length_body(self, gw):
        data = bytes(range(256)) * 400
        async with connect(gw) as conn:
            await conn.send(request(b"POST", b"/api/body", body=data))
            answer = await conn.answer()
            assert answer.status == 200
            assert json.loads(answer.body) == {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }

    async def test_chunked_body_in_several_writes(self, gw):
        parts = [b"first part,", b"x" * 5000, b"last"]
        async with connect(gw) as conn:
            await conn.send(request(b"POST", b"/api/body", b"Transfer-Encoding: chunked\r\n"))
            for part in parts:
                await asyncio.sleep(0.02)
                await conn.send(b"%x\r\n%s\r\n" % (len(part), part))
            await conn.send(b"0\r\n\r\n")
            answer = await conn.answer()
            data = b"".join(parts)
            assert answer.status == 200
            assert json.loads(answer.body) == {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            await conn.send(get(b"/api/next"))
            assert (await conn.answer()).body == b"/api/next"

    async def test_expect_100_continue(self, gw):
        data = b"sent after the interim answer"
        async with connect(gw) as conn:
            head = request(b"POST", b"/api/body", b"Expect: 100-continue\r\n", body=data)
            await conn.send(head[: -len(data)])
            interim = await conn.answer()
            assert interim.version == b"HTTP/1.1" and interim.status == 100
            assert interim.headers == []
            await conn.send(data)
            answer = await conn.answer()
            assert answer.status == 200
            assert json.loads(answer.body)["sha256"] == hashlib.sha256(data).hexdigest()
            await conn.send(get(b"/api/next"))
            assert (await conn.answer()).body == b"/api/next"


def assert_problem(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status
    assert answer.get("content-type") == "application/problem+json"
    problem = json.loads(answer.body)
    assert problem["status"] == status and problem["code"] == code
    assert problem["request_id"] == answer.get("x-gateway-request-id")
    assert answer.get("server") == "gateway"
    return problem


class TestDenials:
    async def test_no_key(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/x", key=False))
            answer = await conn.answer()
            assert_problem(answer, 401, "unauthenticated")
            assert answer.get("www-authenticate") == 'Bearer realm="gateway", charset="UTF-8"'
            assert await conn.still_open()
        assert backend.seen == []

    async def test_wrong_key(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/x", b"Authorization: Bearer gwk_wrong\r\n", key=False))
            answer = await conn.answer()
            assert_problem(answer, 401, "unauthenticated")
            challenge = answer.get("www-authenticate") or ""
            assert challenge.startswith('Bearer realm="gateway"')
            assert 'error="invalid_token"' in challenge
        assert backend.seen == []

    async def test_post_without_key_keeps_the_connection(self, gw, backend):
        """The unread body is skipped, not parsed as the next request."""
        smuggled = get(b"/api/smuggled")
        async with connect(gw) as conn:
            await conn.send(request(b"POST", b"/api/x", body=smuggled, key=False))
            assert_problem(await conn.answer(), 401, "unauthenticated")
            await conn.send(get(b"/api/next"))
            following = await conn.answer()
            assert following.status == 200 and following.body == b"/api/next"
        assert backend.seen == [("GET", "/api/next")]

    async def test_address_not_on_the_allowlist(self, tmp_path, backend):
        allowlists = {
            "dashboard": {"enabled": False, "entries": []},
            "api": {"enabled": True, "entries": [{"ip": "127.0.0.3", "description": "t"}]},
        }
        files = gateway_files(tmp_path, api_upstream=backend.url, allowlists=allowlists)
        async with running_gateway(files) as gw, connect(gw, "127.0.0.2") as conn:
            await conn.send(get(b"/api/x"))
            assert_problem(await conn.answer(), 403, "ip_not_allowed")
            await conn.send(get(b"/api/y"))
            assert_problem(await conn.answer(), 403, "ip_not_allowed")
        assert backend.seen == []


def post(headers: bytes, rest: bytes) -> bytes:
    return b"POST /api/x HTTP/1.1\r\nHost: gw\r\n" + AUTH + headers + b"\r\n" + rest


# Refused by the parser: the gateway's short text with a request id, then the connection closes.
# Not pinned: the version of these answers' status line (HTTP/1.0 from aiohttp's side).
FRAMING = {
    "content-length-and-chunked": post(
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"
    ),
    "two-content-lengths": post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
    "chunked-twice": post(b"Transfer-Encoding: chunked\r\n" * 2, b"5\r\nhello\r\n0\r\n\r\n"),
    "bad-chunk-size": post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"),
    "bare-lf": get(b"/api/x").replace(b"\r\n", b"\n"),
    "obs-fold": get(b"/api/x", b"X-Folded: a\r\n b\r\n"),
    "two-hosts": get(b"/api/x", b"Host: other\r\n"),
}


async def assert_refused(conn: Conn, status: int) -> Answer:
    answer = await conn.answer()
    assert answer.version in (b"HTTP/1.0", b"HTTP/1.1")
    assert answer.status == status
    assert answer.get("x-gateway-request-id")
    assert answer.get("server") == "gateway"
    assert answer.get("content-type") == "text/plain; charset=utf-8"
    assert await conn.closed()
    return answer


class TestFraming:
    @pytest.mark.parametrize("raw", FRAMING.values(), ids=FRAMING.keys())
    async def test_400_and_nothing_forwarded(self, gw, backend, raw):
        async with connect(gw) as conn:
            await conn.send(raw + get(b"/api/after"))
            answer = await assert_refused(conn, 400)
            assert answer.body == b"The request could not be understood.\n"
        assert backend.seen == []

    @pytest.mark.parametrize(
        "codings",
        [
            b"Transfer-Encoding: gzip, chunked\r\n",
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        ],
        ids=["gzip-chunked", "gzip-then-chunked"],
    )
    async def test_transfer_codings_other_than_chunked_501(self, gw, backend, codings):
        """Forwarded as plain `chunked`, a gzip-coded body would reach the backend unlabelled."""
        async with connect(gw) as conn:
            await conn.send(post(codings, b"5\r\nhello\r\n0\r\n\r\n"))
            await assert_refused(conn, 501)
        assert backend.seen == []

    async def test_chunked_in_any_case_is_accepted(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(post(b"Transfer-Encoding: Chunked \r\n", b"5\r\nhello\r\n0\r\n\r\n"))
            assert (await conn.answer()).status == 200
        assert backend.seen == [("POST", "/api/x")]

    async def test_http2_request_line_505(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/x", version=b"HTTP/2.0"))
            answer = await assert_refused(conn, 505)
            assert answer.body == b"The gateway speaks HTTP/1.1.\n"
        assert backend.seen == []

    async def test_refusal_on_a_used_keep_alive_connection(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/good"))
            good = await conn.answer()
            assert good.status == 200 and good.body == b"/api/good"
            await conn.send(FRAMING["two-content-lengths"] + get(b"/api/no"))
            await assert_refused(conn, 400)
        assert backend.seen == [("GET", "/api/good")]


class TestHeadLimits:
    """Cases tests/web/test_limits.py leaves out: the exact header count, many small headers
    past 64 KiB, and keep-alive requests whose connection is closed after the 431."""

    async def test_header_line_of_9000_bytes(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/x", b"X-Big: " + b"a" * 9000 + b"\r\n") + get(b"/api/y"))
            await assert_refused(conn, 431)
        assert backend.seen == []

    async def test_128_headers_pass_129_do_not(self, gw, backend):
        def with_headers(path: bytes, total: int, key: bool) -> bytes:
            given = 2 if key else 1  # Host, Authorization
            fillers = b"".join(b"X-%d: a\r\n" % i for i in range(total - given))
            return get(path, fillers, key=key)

        async with connect(gw) as conn:
            # 128 to a page (the backend's parser would refuse 128 plus the gateway's own)
            await conn.send(with_headers(b"/_gateway/healthz", 128, key=False))
            assert (await conn.answer()).status == 200
            await conn.send(with_headers(b"/api/x", 129, key=True))
            await assert_refused(conn, 431)
        assert backend.seen == []

    async def test_head_over_64k_in_many_small_headers(self, gw, backend):
        fillers = b"".join(b"X-%d: %s\r\n" % (i, b"s" * 600) for i in range(115))
        async with connect(gw) as conn:
            await conn.send(get(b"/api/x", fillers) + get(b"/api/y"))
            await assert_refused(conn, 431)
        assert backend.seen == []


class TestUpstreamProblems:
    async def test_refused_connection_502_keeps_the_client_connection(self, tmp_path):
        files = gateway_files(tmp_path, api_upstream=f"http://127.0.0.1:{free_port()}")
        async with running_gateway(files) as gw, connect(gw) as conn:
            await conn.send(get(b"/api/x") + get(b"/api/y"))
            ids = set()
            for _ in range(2):
                problem = assert_problem(await conn.answer(), 502, "upstream_unavailable")
                ids.add(problem["request_id"])
            assert len(ids) == 2
            assert await conn.still_open()

    async def test_cut_body_closes_the_client_connection(self, tmp_path):
        requests = 0

        async def truncating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal requests
            await read_head(reader)
            requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 50)
            await writer.drain()

        async with raw_server(truncating) as url:
            files = gateway_files(tmp_path, api_upstream=url)
            async with running_gateway(files) as gw, connect(gw) as conn:
                await conn.send(get(b"/api/x") + get(b"/api/y"))
                head = await conn.answer(head_only=True)
                assert head.status == 200 and head.get("content-length") == "100"
                rest = await asyncio.wait_for(conn.reader.read(), WAIT)
                assert rest == b"a" * 50  # then closed: never a second response
        assert requests == 1

    async def test_read_timeout_504_keeps_the_client_connection(self, tmp_path, backend):
        files = gateway_files(tmp_path, api_upstream=backend.url)
        files.config["apps"]["protection-api"]["timeouts"] = {"read": "0.2s"}
        files.write()
        async with running_gateway(files) as gw, connect(gw) as conn:
            await conn.send(get(b"/api/slow/0.5") + get(b"/api/after"))
            assert_problem(await conn.answer(), 504, "upstream_timeout")
            after = await conn.answer()
            assert after.status == 200 and after.body == b"/api/after"


class TestClientGoesAway:
    async def test_close_while_the_backend_works(self, gw, backend):
        async with connect(gw) as conn:
            await conn.send(get(b"/api/slow/0.5"))
        async with connect(gw) as conn:
            await conn.send(get(b"/api/alive"))
            assert (await conn.answer()).body == b"/api/alive"
        record = await audited_request(gw.files, "/api/slow/0.5")
        assert record["decision"] == "allow" and record["method"] == "GET"
        assert record["status"] == 200  # the backend's answer, which found no one to read it
        assert (
            "the client closed the connection before the end of the response" in (record["reasons"])
        )
        assert ("GET", "/api/slow/0.5") in backend.seen
