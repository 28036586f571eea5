"""Forwarding: streamed bodies in bounded memory, WebSocket, hop-by-hop headers, upstream errors."""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
import pytest
from aiohttp import web

from tests.factories import (
    api_key,
    client,
    echo_app,
    free_port,
    gateway_files,
    gateway_process,
    peak_rss_mib,
    raw_request,
    running_gateway,
    serve,
)

KEY = {"Authorization": f"Bearer {api_key('sync')}"}
GIB = 1024**3


async def _body(size: int, chunk: int = 1 << 20):
    block = b"y" * chunk
    sent = 0
    while sent < size:
        part = block[: min(chunk, size - sent)]
        sent += len(part)
        yield part


class TestStreaming:
    """1 GiB each way passes through a real gateway process whose memory stays bounded."""

    async def test_large_download_and_upload_bounded_memory(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with gateway_process(files) as (url, proc), aiohttp.ClientSession() as http:
                baseline = peak_rss_mib(proc.pid)
                received = 0
                async with http.get(f"{url}/api/download/{GIB}", headers=KEY) as r:
                    assert r.status == 200
                    assert r.headers["Content-Length"] == str(GIB)
                    async for chunk in r.content.iter_chunked(1 << 20):
                        received += len(chunk)
                assert received == GIB
                expected = hashlib.sha256()
                async for part in _body(GIB):
                    expected.update(part)
                async with http.post(
                    f"{url}/api/upload",
                    headers={**KEY, "Content-Length": str(GIB)},
                    data=_body(GIB),
                ) as r:
                    assert r.status == 200
                    echo = await r.json()
                assert echo["received"] == GIB
                assert echo["sha256"] == expected.hexdigest()
                peak = peak_rss_mib(proc.pid)
                # A buffered body would add 1024 MiB; streaming adds a few socket buffers.
                assert peak - baseline < 100, (baseline, peak)

    async def test_chunked_upload_without_length(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with (
                running_gateway(files) as gw,
                client() as http,
                http.post(f"{gw.url}/api/up", headers=KEY, data=_body(5_000_000, 65536)) as r,
            ):
                assert r.status == 200
                assert (await r.json())["received"] == 5_000_000


class TestWebSocket:
    """WebSocket upgrades are proxied both ways, with the subprotocol passed through."""

    async def test_echo_through_gateway(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with (
                running_gateway(files) as gw,
                client() as http,
                http.ws_connect(f"{gw.url}/api/ws", headers=KEY, protocols=("echo",)) as ws,
            ):
                assert ws.protocol == "echo"
                await ws.send_str("hello")
                assert (await ws.receive_str(timeout=5)) == "echo:hello"
                await ws.send_bytes(b"\x00\x01")
                assert (await ws.receive_bytes(timeout=5)) == b"\x00\x01"

    async def test_websocket_needs_authentication(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw, client() as http:
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await http.ws_connect(f"{gw.url}/api/ws")
                assert err.value.status == 401


class TestHeaders:
    """Hop-by-hop headers go, end-to-end headers and the request id come through."""

    async def test_request_headers_to_backend(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw, client() as http:
                headers = {
                    **KEY,
                    "Connection": "keep-alive, X-Custom-Hop",
                    "X-Custom-Hop": "1",
                    "Keep-Alive": "timeout=5",
                    "X-End-To-End": "kept",
                    "Accept-Encoding": "br",
                    "TE": "trailers",
                }
                async with http.get(f"{gw.url}/api/h?x=1", headers=headers) as r:
                    seen = {k.lower(): v for k, v in (await r.json())["headers"]}
                    request_id = r.headers["X-Gateway-Request-Id"]
                    assert r.headers["X-Backend"] == "echo"
                    assert "backend=1" in r.headers.getall("Set-Cookie")[0]
                assert "x-custom-hop" not in seen and "keep-alive" not in seen
                assert "te" not in seen
                assert seen["x-end-to-end"] == "kept"
                assert seen["accept-encoding"] == "br"
                assert seen["x-gateway-request-id"] == request_id
                assert seen["x-forwarded-proto"] == "http"
                assert seen["x-forwarded-host"] == f"127.0.0.1:{gw.port}"
                assert seen["host"] == f"127.0.0.1:{gw.port}"
                assert "user-agent" in seen  # the client's, not one added by the gateway

    async def test_query_string_forwarded_verbatim(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw:
                raw = (
                    b"GET /api/q?a=%2F..%2F&b=c%20d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Authorization: Bearer " + api_key("sync").encode() + b"\r\n\r\n"
                )
                response = await raw_request(gw.host, gw.port, raw)
                assert b'"query": "a=%2F..%2F&b=c%20d"' in response


class TestUpstreamFailures:
    """Upstream down gives 502, slow upstream 504, with the gateway's own short answer."""

    async def test_upstream_down_502(self, tmp_path):
        files = gateway_files(tmp_path, api_upstream=f"http://127.0.0.1:{free_port()}")
        async with running_gateway(files) as gw, client() as http:
            async with http.get(f"{gw.url}/api/x", headers=KEY) as r:
                assert r.status == 502
                assert (await r.json(content_type=None))["code"] == "upstream_unavailable"
            async with http.get(f"{gw.url}/x", allow_redirects=False) as r:
                assert r.status == 302  # the dashboard still asks for sign-in first

    async def test_upstream_timeout_504(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            files.config["apps"]["protection-api"]["timeouts"] = {"read": "0.5s"}
            files.write()
            async with running_gateway(files) as gw, client() as http:
                async with http.get(f"{gw.url}/api/slow/3", headers=KEY) as r:
                    assert r.status == 504
                    body = await r.json(content_type=None)
                    assert body["code"] == "upstream_timeout"
                    assert r.headers["X-Gateway-Request-Id"] == body["request_id"]

    async def test_dashboard_error_page_is_html(self, tmp_path):
        files = gateway_files(tmp_path)
        async with running_gateway(files) as gw, client() as http:
            async with http.get(f"{gw.url}/_gateway/nothing-here") as r:
                assert r.status == 404
                assert r.headers["Content-Type"].startswith("text/html")
                text = await r.text()
                assert "Not found" in text and r.headers["X-Gateway-Request-Id"] in text


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _unused() -> None:  # keeps web imported for type checkers in this module
    await asyncio.sleep(0)
    _ = web


class TestMidStreamFailures:
    """A failure after the status line never produces a second response on the connection."""

    async def test_truncated_upstream_body_cuts_the_connection(self, tmp_path):
        async def truncating(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n"
                + b"a" * 50
            )
            await writer.drain()
            writer.close()

        port = free_port()
        server = await asyncio.start_server(truncating, "127.0.0.1", port)
        async with server:
            files = gateway_files(tmp_path, api_upstream=f"http://127.0.0.1:{port}")
            async with running_gateway(files) as gw:
                raw = (
                    b"GET /api/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    + api_key("sync").encode()
                    + b"\r\n\r\n"  # keep-alive: a desync would show a second response
                )
                response = await raw_request(gw.host, gw.port, raw)
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert body == b"a" * 50  # then the connection was closed: no "HTTP/1.1 500" after it
        assert b"HTTP/1.1" not in body

    async def test_client_disconnect_is_not_an_error(self, tmp_path, caplog):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw:
                reader, writer = await asyncio.open_connection(gw.host, gw.port)
                writer.write(
                    b"GET /api/download/200000000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    + api_key("sync").encode()
                    + b"\r\n\r\n"
                )
                await writer.drain()
                await reader.readexactly(100_000)
                writer.transport.abort()
                await asyncio.sleep(0.5)
        records = [json.loads(x) for x in files.audit_file.read_text().splitlines()]
        request = next(r for r in records if r["event"] == "request")
        assert request["status"] == 200
        assert (
            "the client closed the connection before the end of the response"
            in (request["reasons"])
        )
        assert "unhandled_error" not in caplog.text


def _echoed_headers(response: bytes) -> dict[str, list[str]]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


class TestClaimsAndCredentials:
    """Every spelling of an identity or address header is dropped; the API key never leaves."""

    async def test_every_spelling_of_claims_dropped(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw:
                raw = (
                    b"GET /api/h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"X-API-Key: " + api_key("sync").encode() + b"\r\n"
                    b"X-Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n"
                    b"X-Forwarded_Proto: https\r\nx_forwarded_host: evil\r\n"
                    b"FORWARDED: for=6.6.6.6\r\nx-REAL-ip: 6.6.6.6\r\n"
                    b"X_Gateway_User: root\r\nx-gateway-ROLE: admin\r\n"
                    b"X-Gateway_Assertion: forged\r\nX-Forwarded-Prefix: /evil\r\n"
                    b"Transfer_Encoding: chunked\r\n\r\n"
                )
                seen = _echoed_headers(await raw_request(gw.host, gw.port, raw))
        for name in seen:
            assert "_" not in name, name
        assert seen["x-forwarded-for"] == ["127.0.0.1"]
        assert seen["x-forwarded-proto"] == ["http"]
        assert seen["x-forwarded-host"] == ["x"]
        assert seen["x-gateway-user"] == ["sync"]
        assert seen["x-gateway-role"] == ["writer"]
        assert "forwarded" not in seen and "x-real-ip" not in seen
        assert "x-forwarded-prefix" not in seen
        assert seen["x-gateway-assertion"] != ["forged"]

    @pytest.mark.parametrize("carrier", ["Authorization: Bearer", "X-API-Key:", "x-api-key:"])
    async def test_api_key_header_removed(self, tmp_path, carrier):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw:
                raw = (
                    b"GET /api/h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    + f"{carrier} {api_key('sync')}\r\n\r\n".encode()
                )
                response = await raw_request(gw.host, gw.port, raw)
        seen = _echoed_headers(response)
        assert "authorization" not in seen and "x-api-key" not in seen
        assert api_key("sync").encode() not in response
        assert seen["x-gateway-auth"] == ["api-key"]


class TestResponseCookies:
    """A backend cannot set the gateway's own cookies, in any spelling."""

    async def test_own_cookies_stripped_from_set_cookie(self, tmp_path):
        async def planting(request: web.Request) -> web.Response:
            response = web.Response(text="ok")
            for line in (
                "gateway_session=planted; Path=/",
                "__Host-gateway_session=planted; Path=/; Secure",
                "GATEWAY_SESSION=planted",
                " gateway_csrf =planted",
                "__Secure-Gateway_Csrf=planted; Secure",
                "backend=1; Path=/",
                "gateway_sessionx=kept",
            ):
                response.headers.add("Set-Cookie", line)
            return response

        app = web.Application()
        app.router.add_get("/{tail:.*}", planting)
        async with serve(app) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw:
                raw = (
                    b"GET /api/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: "
                    + api_key("sync").encode()
                    + b"\r\n\r\n"
                )
                response = await raw_request(gw.host, gw.port, raw)
        head = response.partition(b"\r\n\r\n")[0].decode()
        cookies = [
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("set-cookie:")
        ]
        assert cookies == ["backend=1; Path=/", "gateway_sessionx=kept"], cookies


class TestExpectContinue:
    """A backend that never answers `100 Continue` does not hold the request past its timeout."""

    async def test_backend_without_100_continue(self, tmp_path):
        async def no_interim(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
            writer.close()

        port = free_port()
        server = await asyncio.start_server(no_interim, "127.0.0.1", port)
        async with server:
            files = gateway_files(tmp_path, api_upstream=f"http://127.0.0.1:{port}")
            files.config["apps"]["protection-api"]["timeouts"] = {"read": "10s"}
            files.write()
            async with running_gateway(files) as gw:
                reader, writer = await asyncio.open_connection(gw.host, gw.port)
                writer.write(
                    b"POST /api/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                    b"Expect: 100-continue\r\nConnection: close\r\nX-API-Key: "
                    + api_key("sync").encode()
                    + b"\r\n\r\n"
                )
                await writer.drain()
                started = asyncio.get_running_loop().time()
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
                assert interim.startswith(b"HTTP/1.1 100"), interim
                writer.write(b"hello")
                await writer.drain()
                response = await asyncio.wait_for(reader.read(), 15)
                elapsed = asyncio.get_running_loop().time() - started
                writer.close()
        assert response.startswith(b"HTTP/1.1 200"), response[:100]
        assert response.endswith(b"hello")
        assert elapsed < 8  # the read timeout (10 s) never ran out; generous for a loaded machine
