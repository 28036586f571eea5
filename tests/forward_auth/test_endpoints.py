"""The authz endpoints called directly, as Traefik's forwardAuth calls them (Traefik is not
packaged here), and the answers' details: descriptions refused, metrics and audit by mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.backend import GatewayVerifier
from gateway.demo import front_proxy
from tests.factories import RunningGateway, api_key, client, running_gateway
from tests.forward_auth.conftest import Backends, forward_auth_files
from tests.web.test_signin import Form, Reply, audit_records, fetch

PREFIX = "/_gateway"
FORWARD_AUTH = f"{PREFIX}/authz/forward-auth"
AUTH_REQUEST = f"{PREFIX}/authz/auth-request"
IDENTITY = {
    "X-Gateway-User",
    "X-Gateway-Email",
    "X-Gateway-Role",
    "X-Gateway-Auth",
    "X-Gateway-Request-Id",
    "X-Gateway-Assertion",
}
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
async def gw(tmp_path: Path, backends: Backends) -> AsyncIterator[RunningGateway]:
    async with running_gateway(forward_auth_files(tmp_path, backends), watch_files=False) as gw:
        yield gw


def traefik(
    method: str, uri: str, *, host: str = "dash.example.com", **headers: str
) -> dict[str, str]:
    """The headers Traefik's forwardAuth sends (trustForwardHeader: false): the client's own
    headers, then X-Forwarded-For (the client), -Method, -Proto, -Host and -Uri."""
    return {
        "User-Agent": "Mozilla/5.0",
        "Accept": BROWSER,
        **headers,
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": uri,
    }


# https at the client (X-Forwarded-Proto from the trusted proxy): the __Host- names
CSRF = "__Host-gateway_csrf"
SESSION = "__Host-gateway_session"


async def session_cookie(gw: RunningGateway, user: str = "alice", then: str = "/") -> str:
    """Sign in as the proxy would route it: from the trusted peer, for the client 203.0.113.7."""
    via = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    async with client() as http:
        page = await fetch(http, "GET", f"{gw.url}{PREFIX}/login", headers=via)
        data = {"username": user, "password": "correct-horse-battery-staple-42"}
        reply = await fetch(
            http,
            "POST",
            f"{gw.url}{PREFIX}/login",
            data={**data, "csrf_token": Form(page.text).csrf},
            # The cookie is Secure (https at the client): the jar keeps it from plain http.
            headers={**via, "Cookie": f"{CSRF}={page.cookie_value(CSRF)}"},
        )
    assert reply.status == 302, reply.text[:300]
    assert reply.location == then
    assert "Secure" in (reply.set_cookie(SESSION) or "")
    return f"{SESSION}={reply.cookie_value(SESSION)}"


async def ask(gw: RunningGateway, headers: dict[str, str], path: str = FORWARD_AUTH) -> Reply:
    async with client() as http:  # from 127.0.0.1: the trusted proxy
        return await fetch(http, "GET", f"{gw.url}{path}", headers=headers)


async def records(gw: RunningGateway, count: int, **match: Any) -> list[dict[str, Any]]:
    for _ in range(60):
        found = [
            r
            for r in audit_records(gw.files)
            if r["event"] == "request" and all(r.get(k) == v for k, v in match.items())
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    return found


class TestTraefikShape:
    async def test_signed_in_user_gets_identity_headers(self, gw: RunningGateway):
        cookie = await session_cookie(gw)
        reply = await ask(gw, traefik("GET", "/reports?y=1", Cookie=cookie))
        assert reply.status == 200
        assert set(reply.headers) >= IDENTITY
        assert reply.headers["X-Gateway-User"] == "alice"
        assert reply.headers["X-Gateway-Path"] == "/reports"
        async with client() as http:
            jwks = (await fetch(http, "GET", f"{gw.url}{PREFIX}/jwks.json")).json()
        identity = GatewayVerifier(jwks=jwks, audience="console").verify(
            reply.headers["X-Gateway-Assertion"]
        )
        assert (identity.user, identity.email, identity.role) == (
            "alice",
            "alice@example.com",
            "admin",
        )
        (record,) = await records(gw, 1, mode="forward-auth", path="/reports")
        assert record["request_id"] == reply.headers["X-Gateway-Request-Id"]
        assert (record["client_ip"], record["decision"], record["status"]) == (
            "203.0.113.7",
            "allow",
            200,
        )

    async def test_browser_without_session_is_sent_to_sign_in(self, gw: RunningGateway):
        reply = await ask(gw, traefik("GET", "/reports/q1?year=2024"))
        assert reply.status == 302
        assert reply.location == f"{PREFIX}/login?next=%2Freports%2Fq1%3Fyear%3D2024"
        assert not (IDENTITY - {"X-Gateway-Request-Id"}) & set(reply.headers)

    async def test_api_answers_are_problem_json(self, gw: RunningGateway):
        missing = await ask(gw, traefik("GET", "/api/items"))
        assert missing.status == 401
        assert missing.headers["Content-Type"] == "application/problem+json"
        assert missing.json()["code"] == "unauthenticated"
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        viewer = traefik("POST", "/api/items", Authorization=f"Bearer {api_key('reader')}")
        denied = await ask(gw, viewer)
        assert denied.status == 403
        assert denied.json()["code"] == "forbidden"
        writer = traefik("POST", "/api/items", **{"X-API-Key": api_key("sync")})
        allowed = await ask(gw, writer)
        assert allowed.status == 200
        assert allowed.headers["X-Gateway-Auth"] == "api-key"
        assert "X-Gateway-Email" not in allowed.headers

    async def test_no_app_and_ambiguous_paths(self, gw: RunningGateway):
        assert (await ask(gw, traefik("GET", "/x/..;/admin"))).status == 400
        assert (await ask(gw, traefik("GET", "/a/%2fb"))).status == 400
        assert (await ask(gw, traefik("GET", "/../etc"))).status == 400

    async def test_path_not_in_normal_form_is_redirected_to_it(self, gw: RunningGateway):
        reply = await ask(gw, traefik("POST", "/reports//q1/./x/../%41?k=1"))
        assert reply.status == 308
        assert reply.location == "/reports/q1/A?k=1"

    async def test_gateway_pages_are_left_to_their_own_rules(self, gw: RunningGateway):
        reply = await ask(gw, traefik("GET", f"{PREFIX}/login"))
        assert reply.status == 200
        assert "X-Gateway-User" not in reply.headers

    @pytest.mark.parametrize(
        "broken",
        [
            {"X-Forwarded-Uri": ""},
            {"X-Forwarded-Uri": "http://evil.example/x"},
            {"X-Forwarded-Method": "GET /x"},
            {"X-Forwarded-Host": "a.example, b.example"},
            {"X-Forwarded-Host": "user@evil.example", "X-Forwarded-Uri": "//x"},
            {"X-Forwarded-Host": "dash example"},
        ],
    )
    async def test_a_broken_description_is_a_400(self, gw: RunningGateway, broken):
        reply = await ask(gw, {**traefik("GET", "/"), **broken})
        assert reply.status == 400

    async def test_a_repeated_description_is_a_400(self, gw: RunningGateway):
        async with client() as http:
            headers = [*traefik("GET", "/").items(), ("X-Forwarded-Uri", "/api/x")]
            reply = await fetch(http, "GET", f"{gw.url}{FORWARD_AUTH}", headers=headers)
        assert reply.status == 400


async def test_a_half_finished_sign_in_reaches_nothing(tmp_path: Path, backends: Backends):
    """Password accepted, 2FA enrollment still due: the session decides nothing yet."""
    files = forward_auth_files(tmp_path, backends, security={"two_factor": {"enforce": "all"}})
    async with running_gateway(files, watch_files=False) as gw:
        cookie = await session_cookie(gw, "bob", then=f"{PREFIX}/2fa/enroll")
        page = await ask(gw, traefik("GET", "/reports", Cookie=cookie))
        call = await ask(gw, traefik("DELETE", "/reports", Cookie=cookie))
    assert page.status == 302
    assert page.location == f"{PREFIX}/login?next=%2Freports"
    assert call.status == 401
    assert "X-Gateway-User" not in page.headers


class TestShippedTraefikConfig:
    """deploy/forward-auth/traefik-dynamic.yml asks the endpoint the tests above exercise,
    copies exactly the identity headers a 200 carries, and strips claims first."""

    @pytest.fixture
    def dynamic(self) -> dict[str, Any]:
        text = (front_proxy.DEPLOY / "traefik-dynamic.yml").read_text()
        return yaml.safe_load(text)["http"]  # type: ignore[no-any-return]

    async def test_forward_auth_middleware(self, gw: RunningGateway, dynamic: dict[str, Any]):
        auth = dynamic["middlewares"]["gateway-auth"]["forwardAuth"]
        assert auth["address"].endswith(FORWARD_AUTH)
        assert auth["trustForwardHeader"] is False
        cookie = await session_cookie(gw)
        answer = await ask(gw, traefik("GET", "/", Cookie=cookie))
        assert answer.status == 200
        sent = {h for h in answer.headers if h.lower().startswith("x-gateway-")}
        assert set(auth["authResponseHeaders"]) == IDENTITY == sent - {"X-Gateway-Path"}

    def test_claims_are_stripped_before_the_decision(self, dynamic: dict[str, Any]):
        stripped = dynamic["middlewares"]["gateway-strip-claims"]["headers"]
        names = {n for n, v in stripped["customRequestHeaders"].items() if v == ""}
        assert IDENTITY | {n.replace("-", "_") for n in IDENTITY} <= names
        routers = dynamic["routers"]
        assert routers["console"]["middlewares"][:2] == ["gateway-strip-claims", "gateway-auth"]
        assert routers["api"]["middlewares"] == [
            "gateway-strip-claims",
            "gateway-auth",
            "gateway-strip-credentials",
        ]
        credentials = dynamic["middlewares"]["gateway-strip-credentials"]["headers"]
        assert credentials["customRequestHeaders"] == {"Authorization": "", "X-API-Key": ""}

    def test_clients_cannot_reach_the_endpoint(self, dynamic: dict[str, Any]):
        routers = dynamic["routers"]
        closed, pages = routers["gateway-authz-closed"], routers["gateway-pages"]
        assert f"PathPrefix(`{PREFIX}/authz/`)" in closed["rule"]
        assert closed["priority"] > pages["priority"]
        assert closed["middlewares"] == ["gateway-authz-closed"]


class TestAuthRequest:
    def nginx(self, method: str, url: str, **headers: str) -> dict[str, str]:
        return {
            **headers,
            "X-Original-URL": url,
            "X-Original-Method": method,
            "X-Forwarded-For": "203.0.113.7",
        }

    async def test_answers(self, gw: RunningGateway):
        page = await ask(gw, self.nginx("GET", "http://dash.example.com/r?x=1"), AUTH_REQUEST)
        assert page.status == 401
        assert page.headers["X-Gateway-Login"] == f"{PREFIX}/login?next=%2Fr%3Fx%3D1"
        post = await ask(gw, self.nginx("POST", "http://dash.example.com/r"), AUTH_REQUEST)
        assert post.status == 401
        assert "X-Gateway-Login" not in post.headers
        key = {"X-API-Key": api_key("reader")}
        denied = await ask(gw, self.nginx("DELETE", "https://h/api/x", **key), AUTH_REQUEST)
        assert denied.status == 403
        cookie = await session_cookie(gw, "bob")
        allowed = await ask(
            gw, self.nginx("GET", "http://dash.example.com/a//b/../c", Cookie=cookie), AUTH_REQUEST
        )
        assert allowed.status == 200
        assert (allowed.headers["X-Gateway-User"], allowed.headers["X-Gateway-Path"]) == (
            "bob",
            "/a/c",
        )
        ambiguous = await ask(gw, self.nginx("GET", "http://h/a/%2e%2e/b"), AUTH_REQUEST)
        assert ambiguous.status == 400
        (record,) = await records(gw, 1, decision="deny:bad_request")
        assert (record["path"], record["mode"]) == ("/a/%2e%2e/b", "forward-auth")

    async def test_no_app_is_a_403_for_nginx(self, tmp_path: Path, backends: Backends):
        files = forward_auth_files(tmp_path, backends)
        files.config["apps"]["console"]["match"] = {"host": "dash.example.com", "path": "/"}
        files.write()
        async with running_gateway(files, watch_files=False) as gw:
            reply = await ask(gw, self.nginx("GET", "http://other.example/"), AUTH_REQUEST)
            assert reply.status == 403  # nginx acts on 401 and 403 only
            (record,) = await records(gw, 1, mode="forward-auth", path="/")
            assert record["decision"] == "deny:not_found"

    @pytest.mark.parametrize(
        ("url", "status"),
        [
            ("/relative", 400),
            ("ftp://h/x", 400),
            ("http://h,i/x", 400),
            ("http://h", 401),  # "/" on the dashboard, no session
            ("http://h?q=1", 401),
            ("http:///x", 401),  # an HTTP/1.0 client without Host, through nginx
        ],
    )
    async def test_urls(self, gw: RunningGateway, url: str, status: int):
        reply = await ask(gw, self.nginx("GET", url), AUTH_REQUEST)
        assert reply.status == status


async def test_metrics_are_labelled_by_mode(gw: RunningGateway):
    await ask(gw, TestAuthRequest().nginx("GET", "http://h/"), AUTH_REQUEST)
    async with client() as http:
        await fetch(http, "GET", f"{gw.url}/api/x")
        text = (await fetch(http, "GET", f"{gw.url}{PREFIX}/metrics")).text
    lines = [line for line in text.splitlines() if line.startswith("gateway_requests_total{")]
    assert any('mode="forward-auth"' in line and 'app="console"' in line for line in lines)
    assert any('mode="full-proxy"' in line and 'app="protection-api"' in line for line in lines)


async def test_csrf_origin_is_the_proxys_when_it_rewrites_host(gw: RunningGateway):
    """A proxy that sends its own Host says the browser's in X-Forwarded-Host."""
    async with client() as http:
        page = await fetch(
            http, "GET", f"{gw.url}{PREFIX}/login", headers={"X-Forwarded-Proto": "https"}
        )
        public = {
            "X-Forwarded-Host": "dash.example.com",
            "X-Forwarded-Proto": "https",
            "Cookie": f"{CSRF}={page.cookie_value(CSRF)}",
        }
        form = {
            "username": "alice",
            "password": "correct-horse-battery-staple-42",
            "csrf_token": Form(page.text).csrf,
        }
        wrong = await fetch(
            http,
            "POST",
            f"{gw.url}{PREFIX}/login",
            data=form,
            headers={**public, "Origin": f"http://127.0.0.1:{gw.port}"},
        )
        right = await fetch(
            http,
            "POST",
            f"{gw.url}{PREFIX}/login",
            data=form,
            headers={**public, "Origin": "https://dash.example.com"},
        )
    assert wrong.status == 403
    assert right.status == 302


async def test_untrusted_peer_gets_403_and_no_decision(gw: RunningGateway):
    async with client("127.0.0.5") as http:
        for path in (FORWARD_AUTH, AUTH_REQUEST):
            reply = await fetch(
                http, "GET", f"{gw.url}{path}", headers=traefik("GET", f"{PREFIX}/login")
            )
            assert reply.status == 403
    found = await records(gw, 2, decision="deny:forbidden")
    assert {r["client_ip"] for r in found} == {"127.0.0.5"}
