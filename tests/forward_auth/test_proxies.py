"""Real nginx (auth_request) and real Caddy (forward_auth) in front, the gateway deciding
(docs/forward-auth.md). Each journey runs through both proxies with the shipped configurations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.backend import GatewayVerifier
from tests.factories import PASSWORD, api_key, client, raw_request
from tests.forward_auth.conftest import Backends, Front, caddy_front, nginx_front
from tests.web.test_signin import Form, Reply, audit_records, fetch, jar_cookie

PREFIX = "/_gateway"
CLIENT = "127.0.0.2"  # the browser; the proxies connect to the gateway from 127.0.0.1
IDENTITY = (
    "x-gateway-user",
    "x-gateway-email",
    "x-gateway-role",
    "x-gateway-auth",
    "x-gateway-request-id",
    "x-gateway-assertion",
)
FORGED = {
    "X-Gateway-User": "mallory",
    "X-Gateway-Email": "mallory@evil.example",
    "X-Gateway-Role": "admin",
    "X-Gateway-Auth": "password+totp",
    "X-Gateway-Assertion": "forged.token.value",
    "X_Gateway_User": "mallory",
}


@pytest.fixture(params=["nginx", "caddy"])
async def front(request, tmp_path, backends: Backends) -> AsyncIterator[Front]:
    make = nginx_front if request.param == "nginx" else caddy_front
    async with make(tmp_path, backends) as running:
        yield running


def kind(front: Front) -> str:
    return front.folder.name


async def sign_in(http: aiohttp.ClientSession, front: Front, user: str, next_: str) -> Reply:
    """The login form through the proxy, with the Origin a browser on the proxy's origin sends."""
    page = await fetch(http, "GET", f"{front.url}{PREFIX}/login?next={next_}")
    assert page.status == 200, page.status
    form = Form(page.text)
    return await fetch(
        http,
        "POST",
        f"{front.url}{PREFIX}/login",
        data={"username": user, "password": PASSWORD, "next": next_, "csrf_token": form.csrf},
        headers={"Origin": front.url},
    )


async def jwks(http: aiohttp.ClientSession, front: Front) -> dict[str, Any]:
    reply = await fetch(http, "GET", f"{front.url}{PREFIX}/jwks.json")
    assert reply.status == 200
    return reply.json()  # type: ignore[no-any-return]


async def raw_get(front: Front, target: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """GET with the target exactly as given (no client-side normalising).

    -> status, Location, the whole answer (head and body)."""
    port = int(front.url.rsplit(":", 1)[1])
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    answer = await raw_request("127.0.0.1", port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    head = answer.partition(b"\r\n\r\n")[0]
    status = int(head.split(b" ", 2)[1])
    location = ""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode().partition(":")
        if name.lower() == "location":
            location = value.strip()
    return status, location, answer


async def request_records(front: Front, count: int, **match: Any) -> list[dict[str, Any]]:
    """The gateway's `request` records with `match` fields once there are `count` (bounded)."""
    for _ in range(60):
        found = [
            r
            for r in audit_records(front.files)
            if r["event"] == "request" and all(r.get(k) == v for k, v in match.items())
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return found


class TestSignInThroughTheProxy:
    async def test_sign_in_identity_and_assertion_at_the_backend(self, front: Front):
        async with client(CLIENT) as http:
            first = await fetch(http, "GET", f"{front.url}/reports/q1?year=2024")
            assert first.status == 302
            url = urlsplit(first.location or "")
            assert (url.scheme, url.netloc, url.path) == ("", "", f"{PREFIX}/login")
            assert parse_qs(url.query)["next"] == ["/reports/q1?year=2024"]

            done = await sign_in(http, front, "alice", "/reports/q1?year=2024")
            assert done.status == 302, done.text[:300]
            assert done.location == "/reports/q1?year=2024"
            assert jar_cookie(http, "gateway_session")

            http.cookie_jar.update_cookies({"theme": "dark"})
            reply = await fetch(http, "GET", f"{front.url}{done.location}", headers=FORGED)
            seen = reply.backend_headers()
            keys = await jwks(http, front)
        assert reply.status == 200
        assert reply.json()["path"] == "/reports/q1"
        assert reply.json()["query"] == "year=2024"
        assert seen["x-gateway-user"] == "alice"
        assert seen["x-gateway-email"] == "alice@example.com"
        assert seen["x-gateway-role"] == "admin"
        assert seen["x-gateway-auth"] == "password"
        assert "x_gateway_user" not in seen
        assert seen["x-forwarded-for"] == CLIENT
        assert seen["cookie"] == "theme=dark"  # the gateway's cookies stay with the gateway
        identity = GatewayVerifier(jwks=keys, audience="console").verify(
            seen["x-gateway-assertion"]
        )
        assert (identity.user, identity.role, identity.auth) == ("alice", "admin", "password")
        assert front.backends.console_hits == ["GET /reports/q1?year=2024"]

        decided = await request_records(front, 2, mode="forward-auth", path="/reports/q1")
        # One record per decision: the page load sent to sign in, then the allowed one.
        assert [r["decision"] for r in decided] == ["deny:unauthenticated", "allow"]
        allowed = decided[-1]
        assert (allowed["principal"], allowed["client_ip"], allowed["method"]) == (
            "alice",
            CLIENT,
            "GET",
        )
        assert allowed["request_id"] == seen["x-gateway-request-id"]

    async def test_sign_out_through_the_proxy_ends_access_at_once(self, front: Front):
        async with client(CLIENT) as http:
            assert (await sign_in(http, front, "bob", "/")).status == 302
            assert (await fetch(http, "GET", f"{front.url}/r")).status == 200
            page = await fetch(http, "GET", f"{front.url}{PREFIX}/logout")
            out = await fetch(
                http,
                "POST",
                f"{front.url}{PREFIX}/logout",
                data={"csrf_token": Form(page.text).csrf},
                headers={"Origin": front.url},
            )
            assert out.status in (200, 302, 303)
            after = await fetch(http, "GET", f"{front.url}/r")
        assert after.status == 302
        assert front.backends.console_hits == ["GET /r"]

    async def test_post_without_session_is_a_401_not_a_redirect(self, front: Front):
        async with client(CLIENT) as http:
            reply = await fetch(http, "POST", f"{front.url}/things", data={"a": "1"})
        assert reply.status == 401
        assert front.backends.hits == []

    async def test_login_post_from_another_origin_is_refused(self, front: Front):
        async with client(CLIENT) as http:
            page = await fetch(http, "GET", f"{front.url}{PREFIX}/login")
            reply = await fetch(
                http,
                "POST",
                f"{front.url}{PREFIX}/login",
                data={
                    "username": "alice",
                    "password": PASSWORD,
                    "csrf_token": Form(page.text).csrf,
                },
                headers={"Origin": "http://evil.example"},
            )
        assert reply.status == 403
        assert not jar_cookie(http, "gateway_session")


class TestWebSockets:
    async def test_signed_in_websocket_through_the_proxy(self, front: Front):
        async with client(CLIENT) as http:
            assert (await sign_in(http, front, "bob", "/")).status == 302
            ws_url = front.url.replace("http://", "ws://") + "/live"
            async with http.ws_connect(ws_url, origin=front.url) as ws:
                await ws.send_str("hi")
                assert (await ws.receive_str()) == "echo:hi"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url, origin="http://evil.example")
        assert refused.value.status == 403  # the same Origin check as in full-proxy mode
        assert front.backends.console_hits == ["GET /live"]
        (record,) = await request_records(front, 1, mode="forward-auth", decision="deny:forbidden")
        assert record["reasons"] == ["WebSocket handshake from another origin"]


class TestApiSurface:
    async def test_key_identity_and_the_key_is_not_forwarded(self, front: Front):
        async with client(CLIENT) as http:
            headers = {"Authorization": f"Bearer {api_key('sync')}", **FORGED}
            reply = await fetch(http, "POST", f"{front.url}/api/items?x=1", headers=headers)
            seen = reply.backend_headers()
            keys = await jwks(http, front)
        assert reply.status == 200
        assert (seen["x-gateway-user"], seen["x-gateway-role"], seen["x-gateway-auth"]) == (
            "sync",
            "writer",
            "api-key",
        )
        assert "x-gateway-email" not in seen  # service accounts have none; the forged one is gone
        assert "authorization" not in seen and "x-api-key" not in seen
        identity = GatewayVerifier(jwks=keys, audience="protection-api").verify(
            seen["x-gateway-assertion"]
        )
        assert identity.user == "sync"
        assert front.backends.api_hits == ["POST /api/items?x=1"]

    async def test_401_and_403(self, front: Front):
        async with client(CLIENT) as http:
            missing = await fetch(http, "GET", f"{front.url}/api/items")
            wrong = await fetch(
                http, "GET", f"{front.url}/api/items", headers={"X-API-Key": "nope"}
            )
            viewer = {"X-API-Key": api_key("reader")}
            read = await fetch(http, "GET", f"{front.url}/api/items", headers=viewer)
            write = await fetch(http, "DELETE", f"{front.url}/api/items/1", headers=viewer)
        assert missing.status == wrong.status == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert "invalid_token" not in missing.headers["WWW-Authenticate"]
        assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        assert read.status == 200
        assert write.status == 403
        assert front.backends.api_hits == ["GET /api/items"]


class TestPathTricks:
    """The decision is taken on the normalised path, and that is the path the backend gets."""

    async def _session(self, front: Front, user: str) -> dict[str, str]:
        async with client(CLIENT) as http:
            assert (await sign_in(http, front, user, "/")).status == 302
            return {"Cookie": f"gateway_session={jar_cookie(http, 'gateway_session')}"}

    async def _follow(self, front: Front, target: str, headers: dict[str, str]) -> int:
        """Caddy's answer to a path not in normal form is a 308 to it: follow that once."""
        status, location, _ = await raw_get(front, target, headers)
        if status == 308:
            assert kind(front) == "caddy"
            assert location.startswith("/") and not location.startswith("//")
            status, _, _ = await raw_get(front, location, headers)
        return status

    async def test_the_backend_gets_the_path_decided_on(self, front: Front):
        cookie = await self._session(front, "carol")  # editor: everything but /settings/
        status = await self._follow(front, "/reports//q1/./x/../y%41?k=%2e", cookie)
        assert status == 200
        assert front.backends.console_hits == ["GET /reports/q1/yA?k=%2e"]

    @pytest.mark.parametrize(
        "target",
        ["/reports/../settings/x", "//settings//x", "/reports/%2e%2e/settings/", "/settings"],
    )
    async def test_a_denied_path_stays_denied_however_spelled(self, front: Front, target: str):
        cookie = await self._session(front, "carol")
        status = await self._follow(front, target, cookie)
        assert status in (400, 403, 500), status  # nginx answers an auth 400 as 500
        assert front.backends.hits == []

    @pytest.mark.parametrize("target", ["/x/..;/settings/", "/a/%2fsettings", "/a%5c..%5csettings"])
    async def test_ambiguous_paths_never_reach_the_backend(self, front: Front, target: str):
        cookie = await self._session(front, "carol")
        status, _, _ = await raw_get(front, target, cookie)
        assert status == (500 if kind(front) == "nginx" else 400)
        assert front.backends.hits == []


class TestAllowlistOnTheReportedClientIp:
    @pytest.fixture(params=["nginx", "caddy"])
    async def guarded(self, request, tmp_path, backends: Backends) -> AsyncIterator[Front]:
        make = nginx_front if request.param == "nginx" else caddy_front
        allow = {
            "dashboard": {
                "enabled": True,
                "entries": [{"ip": "127.0.0.2", "description": "office"}],
            },
            "api": {"enabled": True, "entries": [{"ip": "127.0.0.2"}]},
        }
        async with make(tmp_path, backends, allowlists=allow) as running:
            yield running

    async def test_client_ip_is_what_the_proxy_saw(self, guarded: Front):
        spoof = {"X-Forwarded-For": CLIENT, "X-Real-IP": CLIENT, "Forwarded": f"for={CLIENT}"}
        key = {"X-API-Key": api_key("sync")}
        async with client("127.0.0.3") as http:
            page = await fetch(http, "GET", f"{guarded.url}/", headers=spoof)
            login = await fetch(http, "GET", f"{guarded.url}{PREFIX}/login", headers=spoof)
            api = await fetch(http, "GET", f"{guarded.url}/api/x", headers={**spoof, **key})
        async with client(CLIENT) as http:
            allowed_page = await fetch(http, "GET", f"{guarded.url}/")
            allowed_api = await fetch(http, "GET", f"{guarded.url}/api/x", headers=key)
        assert (page.status, login.status, api.status) == (403, 403, 403)
        assert allowed_page.status == 302
        assert allowed_api.status == 200
        assert guarded.backends.hits == ["GET /api/x"]
        records = await request_records(guarded, 5)
        refused = [r for r in records if r["decision"] == "deny:ip_not_allowed"]
        assert {r["client_ip"] for r in refused} == {"127.0.0.3"}


async def test_a_client_cannot_describe_its_own_request(front: Front):
    """The proxy writes the description; a client's X-Original-* / X-Forwarded-* are replaced."""
    lies = {
        "X-Original-URL": f"http://127.0.0.1{PREFIX}/login",
        "X-Original-Method": "GET",
        "X-Forwarded-Uri": f"{PREFIX}/login",
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Host": "elsewhere.example",
    }
    async with client(CLIENT) as http:
        page = await fetch(http, "GET", f"{front.url}/secret", headers=lies)
        call = await fetch(http, "DELETE", f"{front.url}/secret", headers=lies)
    assert page.status == 302
    assert page.location == f"{PREFIX}/login?next=%2Fsecret"
    assert call.status == 401
    assert front.backends.hits == []


class TestDirectCalls:
    """The authz endpoints answer trusted proxies only; the proxies never expose them."""

    async def test_untrusted_peer_is_refused(self, front: Front):
        gw = front.gateway
        described = {
            "X-Original-URL": "http://dash.example.com/",
            "X-Original-Method": "GET",
            "X-Forwarded-Method": "GET",
            "X-Forwarded-Host": "dash.example.com",
            "X-Forwarded-Uri": "/",
            "X-Forwarded-Proto": "http",
            "X-API-Key": api_key("sync"),
        }
        async with client("127.0.0.5") as http:
            for name in ("auth-request", "forward-auth"):
                reply = await fetch(
                    http, "GET", f"{gw.url}{PREFIX}/authz/{name}", headers=described
                )
                assert reply.status == 403
                assert "x-gateway-user" not in {k.lower() for k in reply.headers}
        # Through the proxy, however the path is spelled, a client gets no decision.
        for name in ("auth-request", "forward-auth"):
            for spelling in (
                f"{PREFIX}/authz/{name}",
                f"{PREFIX}//authz/{name}",
                f"{PREFIX}/./authz/{name}",
                f"{PREFIX}/%61uthz/{name}",
                f"/x/..{PREFIX}/authz/{name}",
            ):
                status, _, answer = await raw_get(front, spelling, described)
                assert status in (302, 308, 400, 404), (spelling, status)
                assert b"x-gateway-user" not in answer.lower()


async def test_nginx_auth_cache_asks_the_gateway_once(tmp_path, backends: Backends):
    """With the optional 5 s cache, repeated identical requests are decided once."""
    async with nginx_front(tmp_path, backends, cache=True) as front:
        key = {"X-API-Key": api_key("sync")}
        async with client(CLIENT) as http:
            replies = [
                await fetch(http, "GET", f"{front.url}/api/cached", headers=key) for _ in range(3)
            ]
            other = await fetch(http, "GET", f"{front.url}/api/cached", headers={"X-API-Key": "no"})
        assert [r.status for r in replies] == [200, 200, 200]
        assert other.status == 401  # another key is another cache entry
        assert all(r.backend_headers()["x-gateway-user"] == "sync" for r in replies)
        records = await request_records(front, 2, mode="forward-auth", path="/api/cached")
        assert [r["decision"] for r in records] == ["allow", "deny:unauthenticated"]
