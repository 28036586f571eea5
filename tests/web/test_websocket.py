"""WebSockets through the gateway end when the access behind them ends, check Origin on the
dashboard surface, and reach the backend with the same Host as HTTP (docs/http.md)."""

from __future__ import annotations

import asyncio
import copy
import time

import aiohttp
import pytest
from aiohttp import web

from tests.factories import (
    api_key,
    client,
    gateway_files,
    raw_request,
    running_gateway,
    serve,
)
from tests.web.test_signin import (
    PREFIX,
    csrf_token,
    fetch,
    quick_users,
    run_cli,
    sign_in,
    wait_for_generation,
)

KEY = {"Authorization": f"Bearer {api_key('sync')}"}
POLICY_CLOSE = 1008


def ws_backend() -> tuple[web.Application, list[dict[str, str]]]:
    """Echoes text; records the handshake headers it received."""
    handshakes: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        handshakes.append({k.lower(): v for k, v in request.headers.items()})
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"host": request.headers.get("Host")})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo:{msg.data}")
        return ws

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, handshakes


@pytest.fixture
async def backend():
    app, handshakes = ws_backend()
    async with serve(app) as url:
        yield url, handshakes


@pytest.fixture
async def gw(tmp_path, backend):
    files = gateway_files(
        tmp_path, dashboard_upstream=backend[0], api_upstream=backend[0], users=quick_users()
    )
    async with running_gateway(files) as running:  # watches the policy files
        yield running


async def open_dashboard_ws(http: aiohttp.ClientSession, gw) -> aiohttp.ClientWebSocketResponse:  # type: ignore[no-untyped-def]
    ws = await http.ws_connect(f"{gw.url}/live", headers={"Origin": gw.url})
    await ws.send_str("hi")
    assert (await ws.receive_str(timeout=5)) == "echo:hi"
    return ws


async def assert_ended(ws: aiohttp.ClientWebSocketResponse, within: float) -> float:
    """The gateway closes the socket with 1008 within `within` seconds; returns how long."""
    started = time.monotonic()
    msg = await ws.receive(timeout=within)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    assert ws.close_code == POLICY_CLOSE, ws.close_code
    return time.monotonic() - started


def edit_people(gw, edit) -> int:  # type: ignore[no-untyped-def]
    before = gw.holder.current.generation
    people = copy.deepcopy(gw.files.policies["people"])
    edit(people)
    gw.files.policies["people"] = people
    gw.files.write_policy("people", people)
    return before


class TestSessionEnds:
    """Each way a session or grant ends closes the open socket."""

    async def test_sign_out_closes_at_once(self, gw):
        async with client() as http:
            assert (await sign_in(http, gw)).status == 302
            ws = await open_dashboard_ws(http, gw)
            token = await csrf_token(http, gw)
            reply = await fetch(
                http, "POST", f"{gw.url}{PREFIX}/logout", data={"csrf_token": token}
            )
            assert reply.status == 200
            assert await assert_ended(ws, within=2) < 2
            await ws.close()

    async def test_revoke_sessions_cli_closes_within_seconds(self, gw):
        async with client() as http, client() as other:
            assert (await sign_in(http, gw)).status == 302
            assert (await sign_in(other, gw, "bob")).status == 302
            ws = await open_dashboard_ws(http, gw)
            bobs = await open_dashboard_ws(other, gw)
            # Another process, as on another instance: only the store knows.
            result = await run_cli(gw.files, "user", "revoke-sessions", "alice")
            assert result.returncode == 0, result.stderr
            await assert_ended(ws, within=10)
            await bobs.send_str("still")
            assert (await bobs.receive_str(timeout=5)) == "echo:still"  # others stay
            await ws.close()
            await bobs.close()

    async def test_user_removed_by_reload(self, gw):
        async with client() as http:
            assert (await sign_in(http, gw)).status == 302
            ws = await open_dashboard_ws(http, gw)
            before = edit_people(gw, lambda p: p["users"].pop("alice"))
            await wait_for_generation(gw, before)
            assert await assert_ended(ws, within=2) < 2
            await ws.close()

    async def test_grant_withdrawn_by_reload(self, gw):
        async with client() as http:
            ws = await http.ws_connect(f"{gw.url}/api/live", headers=KEY)
            await ws.send_str("x")
            assert (await ws.receive_str(timeout=5)) == "echo:x"
            before = edit_people(
                gw, lambda p: p["service_accounts"]["sync"].__setitem__("grants", {})
            )
            await wait_for_generation(gw, before)
            assert await assert_ended(ws, within=2) < 2
            await ws.close()

    async def test_role_changed_by_reload(self, gw):
        async with client() as http:
            assert (await sign_in(http, gw)).status == 302
            ws = await open_dashboard_ws(http, gw)
            before = edit_people(
                gw, lambda p: p["users"]["alice"]["grants"].__setitem__("console", "viewer")
            )
            await wait_for_generation(gw, before)
            await assert_ended(ws, within=2)
            await ws.close()

    async def test_unrelated_reload_keeps_the_socket(self, gw):
        async with client() as http:
            assert (await sign_in(http, gw)).status == 302
            ws = await open_dashboard_ws(http, gw)
            before = edit_people(gw, lambda p: p["users"].pop("bob"))
            await wait_for_generation(gw, before)
            await asyncio.sleep(0.3)
            await ws.send_str("again")
            assert (await ws.receive_str(timeout=5)) == "echo:again"
            await ws.close()


def handshake(path: str, origin: str | None, extra: bytes = b"") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1".encode(),
        b"Host: dash.example.com",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}".encode())
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\nConnection: close\r\n\r\n"


class TestOrigin:
    """Dashboard WebSocket handshakes from another origin are refused before the session."""

    @pytest.mark.parametrize(
        "origin",
        [
            "https://evil.example",
            "http://dash.example.com.evil.example",
            "https://dash.example.com",  # another scheme
            "http://dash.example.com:8080",  # another port
            "ftp://dash.example.com",
            "null",
            None,
        ],
    )
    async def test_foreign_origin_403(self, gw, origin):
        response = await raw_request(gw.host, gw.port, handshake("/live", origin))
        assert response.startswith(b"HTTP/1.1 403"), response[:80]

    async def test_same_origin_passes(self, gw):
        async with client() as http:
            assert (await sign_in(http, gw)).status == 302
            host = gw.url.split("://", 1)[1]
            ws = await http.ws_connect(f"{gw.url}/live", headers={"Origin": f"http://{host}"})
            await ws.send_str("ok")
            assert (await ws.receive_str(timeout=5)) == "echo:ok"
            await ws.close()
        # Not signed in, same origin (Host without port: port 80): sent to sign in, not 403.
        response = await raw_request(
            gw.host, gw.port, handshake("/live", "http://dash.example.com")
        )
        assert response.startswith(b"HTTP/1.1 302"), response[:80]

    async def test_api_surface_needs_no_origin(self, gw):
        async with client() as http, http.ws_connect(f"{gw.url}/api/live", headers=KEY) as ws:
            await ws.send_str("p")
            assert (await ws.receive_str(timeout=5)) == "echo:p"


class TestHost:
    """The WebSocket handshake reaches the backend with the Host HTTP requests get."""

    async def test_same_host_as_http(self, gw, backend):
        _, seen = backend
        async with client() as http:
            async with http.get(f"{gw.url}/api/h", headers=KEY) as r:
                http_host = (await r.json())["host"]
            async with http.ws_connect(f"{gw.url}/api/live", headers=KEY) as ws:
                await ws.send_str("h")
                await ws.receive_str(timeout=5)
        assert http_host == f"127.0.0.1:{gw.port}"
        assert seen[-1]["host"] == http_host
        assert "authorization" not in seen[-1]  # the API key stays at the gateway
