"""The dashboard sign-in journey over real HTTP: login form, CSRF, cookies, session, logout,
idle expiry, login regulation and `next` redirects (docs/http.md, docs/backends.md).

The helpers at the top are shared with the other sign-in test modules (2FA, password policy,
revocation, CLI): they speak plain HTTP to a real gateway and parse its plain HTML forms.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import pytest
from aiohttp import web
from argon2 import PasswordHasher
from multidict import CIMultiDictProxy

from gateway.backend import GatewayVerifier
from tests.factories import (
    PASSWORD,
    GatewayFiles,
    RunningGateway,
    client,
    echo_app,
    gateway_files,
    running_gateway,
    serve,
    written_records,
)

PREFIX = "/_gateway"
LOGIN = f"{PREFIX}/login"
SESSION_COOKIE = "gateway_session"
CSRF_COOKIE = "gateway_csrf"
GATEWAY_BIN = Path(sys.executable).parent / "gateway"
WRONG_LOGIN = "Wrong username or password."

# -- helpers shared by the sign-in test modules ----------------------------------------------


@functools.cache
def quick_hash(password: str = PASSWORD) -> str:
    """A real argon2id hash with low costs: tests that sign in many times stay fast.

    Tests about timing use the factories' hashes, which have the production parameters.
    """
    return PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(password)


def quick_users() -> dict[str, Any]:
    """The factories' alice (gateway admin, console admin) and bob (console viewer)."""
    return {
        "alice": {
            "email": "alice@example.com",
            "password_hash": quick_hash(),
            "admin": True,
            "grants": {"console": "admin"},
        },
        "bob": {
            "email": "bob@example.com",
            "password_hash": quick_hash(),
            "grants": {"console": "viewer"},
        },
    }


@dataclass
class Reply:
    """A response read to the end: status, headers, body."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    def set_cookie(self, name: str) -> str | None:
        """The raw Set-Cookie header for `name`, or None."""
        for header in self.headers.getall("Set-Cookie", []):
            if header.split("=", 1)[0].strip() == name:
                return header
        return None

    def cookie_value(self, name: str) -> str | None:
        header = self.set_cookie(name)
        if header is None:
            return None
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        return jar[name].value

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def is_echo(self) -> bool:
        """True if the echo backend answered (it reports what it received as JSON)."""
        return self.headers.get("X-Backend") == "echo"

    def backend_headers(self) -> dict[str, str]:
        """The headers the echo backend received, with lower-case names."""
        assert self.is_echo, (self.status, self.location, self.text[:300])
        return {k.lower(): v for k, v in self.json()["headers"]}


async def fetch(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Reply:
    async with http.request(method, url, allow_redirects=False, **kwargs) as r:
        return Reply(r.status, r.headers, await r.text())


@dataclass
class Form(HTMLParser):
    """The parts of a gateway page the tests look at."""

    text: str
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    label_for: set[str] = field(default_factory=set)
    forms: list[dict[str, str]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    recovery_codes: list[str] = field(default_factory=list)
    totp_secret: str | None = None
    svg: int = 0

    def __post_init__(self) -> None:
        HTMLParser.__init__(self)
        self.feed(self.text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and "name" in a:
            self.inputs.setdefault(a["name"], a)
        elif tag == "label" and "for" in a:
            self.label_for.add(a["for"])
        elif tag == "form":
            self.forms.append(a)
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "svg":
            self.svg += 1
        if "data-recovery-code" in a:
            self.recovery_codes.append(a["data-recovery-code"])
        if "data-totp-secret" in a:
            self.totp_secret = a["data-totp-secret"]

    @property
    def csrf(self) -> str:
        return self.inputs["csrf_token"]["value"]

    @property
    def error(self) -> str:
        """The text of the page's alert(s), whitespace collapsed."""
        start = self.text.find('role="alert"')
        if start < 0:
            return ""
        end = self.text.find("</div>", start)
        return " ".join(re.sub(r"<[^>]+>", " ", self.text[start + 13 : end]).split())


async def csrf_token(http: aiohttp.ClientSession, gw: RunningGateway) -> str:
    """A valid token for this client (the sign-out page always carries a form)."""
    reply = await fetch(http, "GET", f"{gw.url}{PREFIX}/logout")
    assert reply.status == 200, reply.status
    return Form(reply.text).csrf


async def post_form(
    http: aiohttp.ClientSession, gw: RunningGateway, page: str, data: dict[str, str]
) -> Reply:
    """POST a gateway form with a valid CSRF token."""
    token = await csrf_token(http, gw)
    return await fetch(http, "POST", f"{gw.url}{PREFIX}/{page}", data={**data, "csrf_token": token})


async def sign_in(
    http: aiohttp.ClientSession,
    gw: RunningGateway,
    user: str = "alice",
    password: str = PASSWORD,
    next_: str = "/",
) -> Reply:
    """POST the login form; the reply is the gateway's answer to the password step."""
    return await post_form(
        http, gw, "login", {"username": user, "password": password, "next": next_}
    )


def jar_cookie(http: aiohttp.ClientSession, name: str) -> str | None:
    for morsel in http.cookie_jar:
        if morsel.key == name:
            return morsel.value
    return None


def counting_echo() -> tuple[web.Application, list[str]]:
    """The echo backend plus a list of every request that reached it."""
    hits: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
        hits.append(f"{request.method} {request.path_qs}")
        return await handler(request)

    app = echo_app()
    app.middlewares.append(count)
    return app, hits


def audit_records(files: GatewayFiles) -> list[dict[str, Any]]:
    return written_records(files.audit_file)


async def wait_for_audit(
    files: GatewayFiles, event: str, count: int = 1, timeout: float = 3.0, **match: Any
) -> list[dict[str, Any]]:
    """The audit records of `event` (with `match` fields) once there are `count`; bounded wait."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            r
            for r in audit_records(files)
            if r["event"] == event and all(r.get(k) == v for k, v in match.items())
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def run_cli(files: GatewayFiles, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `gateway` command against the test's config, in a thread."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(GATEWAY_BIN), *args, "--config", str(files.config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def wait_for_generation(gw: RunningGateway, above: int, timeout: float = 10.0) -> None:
    """Wait until the hot reload has swapped in a snapshot newer than `above`."""
    deadline = time.monotonic() + timeout
    while gw.holder.current.generation <= above:
        assert time.monotonic() < deadline, "the policy change was not picked up in time"
        await asyncio.sleep(0.05)


def assert_login_redirect(reply: Reply) -> None:
    assert reply.status == 302, (reply.status, reply.text[:200])
    assert reply.location is not None and reply.location.startswith(LOGIN), reply.location
    assert not reply.is_echo


# -- tests ---------------------------------------------------------------------------------------


@pytest.fixture
async def backend():
    app, hits = counting_echo()
    async with serve(app) as url:
        yield url, hits


@pytest.fixture
async def gw(tmp_path, backend):
    files = gateway_files(tmp_path, dashboard_upstream=backend[0], users=quick_users())
    async with running_gateway(files, watch_files=False) as running:
        yield running


class TestUnauthenticated:
    """Without a session every dashboard request is sent to sign in, with a relative `next`."""

    async def test_get_redirects_to_login_with_next(self, gw, backend):
        async with client() as http:
            reply = await fetch(http, "GET", f"{gw.url}/reports/q1?year=2024&x=a%20b")
        assert reply.status == 302
        url = urlsplit(reply.location)
        assert (url.scheme, url.netloc, url.path) == ("", "", LOGIN)
        assert parse_qs(url.query)["next"] == ["/reports/q1?year=2024&x=a%20b"]
        assert backend[1] == []

    async def test_post_is_refused_not_forwarded(self, gw, backend):
        async with client() as http:
            reply = await fetch(http, "POST", f"{gw.url}/things", data={"a": "1"})
        assert reply.status == 401
        assert backend[1] == []


class TestLoginForm:
    """The login page is a plain labelled form with the section-10 names and a CSRF token."""

    async def test_fields_autocomplete_and_token(self, gw):
        async with client() as http:
            reply = await fetch(http, "GET", f"{gw.url}{LOGIN}?next=/reports")
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/html")
            form = Form(reply.text)
            assert form.forms == [{"method": "post", "action": LOGIN}]
            assert form.inputs["username"]["autocomplete"] == "username"
            assert form.inputs["password"]["autocomplete"] == "current-password"
            assert form.inputs["password"]["type"] == "password"
            assert form.inputs["next"]["value"] == "/reports"
            assert form.inputs["csrf_token"]["type"] == "hidden"
            assert len(form.csrf) >= 32
            for name in ("username", "password"):
                assert form.inputs[name]["id"] in form.label_for
            assert reply.set_cookie(CSRF_COOKIE) is not None
            assert jar_cookie(http, CSRF_COOKIE) is not None

    async def test_next_and_username_are_escaped(self, gw):
        target = '/x"><script>alert(1)</script>'
        async with client() as http:
            page = await fetch(http, "GET", f"{gw.url}{LOGIN}", params={"next": target})
            assert "<script>" not in page.text
            assert Form(page.text).inputs["next"]["value"] == target
            reply = await sign_in(http, gw, '"><script>alert(2)</script>', "x")
            assert reply.status == 401
            assert "<script>" not in reply.text


class TestLoginCsrf:
    """A login POST without the token that matches the client's CSRF cookie is refused."""

    @pytest.mark.parametrize("token", [None, "", "0" * 64, "forged"])
    async def test_missing_or_wrong_token(self, gw, token):
        async with client() as http:
            await fetch(http, "GET", f"{gw.url}{LOGIN}")  # gets the CSRF cookie
            data = {"username": "alice", "password": PASSWORD, "next": "/"}
            if token is not None:
                data["csrf_token"] = token
            reply = await fetch(http, "POST", f"{gw.url}{LOGIN}", data=data)
            assert reply.status == 403
            assert reply.set_cookie(SESSION_COOKIE) is None

    async def test_token_of_another_client(self, gw):
        async with client() as other, client() as http:
            foreign = await csrf_token(other, gw)
            await csrf_token(http, gw)
            data = {"username": "alice", "password": PASSWORD, "next": "/", "csrf_token": foreign}
            reply = await fetch(http, "POST", f"{gw.url}{LOGIN}", data=data)
            assert reply.status == 403
            assert reply.set_cookie(SESSION_COOKIE) is None

    async def test_cross_site_origin(self, gw):
        async with client() as http:
            token = await csrf_token(http, gw)
            data = {"username": "alice", "password": PASSWORD, "next": "/", "csrf_token": token}
            reply = await fetch(
                http,
                "POST",
                f"{gw.url}{LOGIN}",
                data=data,
                headers={"Origin": "https://evil.example"},
            )
            assert reply.status == 403


class TestWrongCredentials:
    """A wrong password and an unknown user get the same answer, both after an argon2 check."""

    async def test_same_message_and_both_slow(self, tmp_path):
        files = gateway_files(tmp_path)  # production argon2 parameters
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            await sign_in(http, gw, "bob", "warm-up-" + PASSWORD)  # dummy hash built once
            started = time.perf_counter()
            wrong = await sign_in(http, gw, "alice", "not-" + PASSWORD)
            wrong_s = time.perf_counter() - started
            started = time.perf_counter()
            unknown = await sign_in(http, gw, "mallory", PASSWORD)
            unknown_s = time.perf_counter() - started
        assert wrong.status == unknown.status == 401
        # The same answer, and the same count of attempts left (counted per name, known or not).
        assert Form(wrong.text).error == Form(unknown.text).error
        assert Form(wrong.text).error.startswith(WRONG_LOGIN)
        assert wrong.set_cookie(SESSION_COOKIE) is None
        assert unknown.set_cookie(SESSION_COOKIE) is None
        assert wrong_s > 0.03 and unknown_s > 0.03, (wrong_s, unknown_s)
        # the form keeps the user name, not the password
        assert Form(wrong.text).inputs["username"]["value"] == "alice"
        assert "not-" + PASSWORD not in wrong.text

    async def test_oversized_input_is_a_plain_refusal(self, gw):
        async with client() as http:
            reply = await sign_in(http, gw, "alice", "x" * 5000)
            assert reply.status == 401
            assert Form(reply.text).error.startswith(WRONG_LOGIN)
            reply = await sign_in(http, gw, "a" * 5000, PASSWORD)
            assert reply.status == 401


class TestSuccessfulSignIn:
    """A correct password sends the user to `next` and the backend sees who they are."""

    async def test_sign_in_redirect_is_not_cacheable(self, gw):
        async with client() as http:
            reply = await sign_in(http, gw)
        assert reply.status == 302
        assert reply.set_cookie("gateway_session") is not None
        assert reply.headers["Cache-Control"] == "no-store"
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]

    async def test_redirect_to_next_and_identity_reaches_backend(self, gw, backend):
        async with client() as http:
            reply = await sign_in(http, gw, next_="/reports/q1?year=2024")
            assert reply.status == 302
            assert reply.location == "/reports/q1?year=2024"
            http.cookie_jar.update_cookies({"theme": "dark"})
            reply = await fetch(
                http, "GET", f"{gw.url}/reports/q1?year=2024", headers={"X-Gateway-User": "mallory"}
            )
            seen = reply.backend_headers()
            jwks = (await fetch(http, "GET", f"{gw.url}{PREFIX}/jwks.json")).json()
        assert reply.status == 200
        assert seen["x-gateway-user"] == "alice"
        assert seen["x-gateway-email"] == "alice@example.com"
        assert seen["x-gateway-role"] == "admin"
        assert seen["x-gateway-auth"] == "password"
        identity = GatewayVerifier(jwks=jwks, audience="console").verify(
            seen["x-gateway-assertion"]
        )
        assert (identity.user, identity.role, identity.auth) == ("alice", "admin", "password")
        assert SESSION_COOKIE not in seen.get("cookie", "")
        assert "gateway_csrf" not in seen.get("cookie", "")  # the CSRF cookie is ours too
        assert seen["cookie"] == "theme=dark"
        assert backend[1] == ["GET /reports/q1?year=2024"]

    async def test_viewer_role_and_login_page_when_signed_in(self, gw):
        async with client() as http:
            assert (await sign_in(http, gw, "bob")).status == 302
            seen = (await fetch(http, "GET", f"{gw.url}/")).backend_headers()
            assert (seen["x-gateway-user"], seen["x-gateway-role"]) == ("bob", "viewer")
            assert (await fetch(http, "POST", f"{gw.url}/x")).status == 403
            # the login page of a signed-in user goes on to `next`
            reply = await fetch(http, "GET", f"{gw.url}{LOGIN}?next=/a")
            assert (reply.status, reply.location) == (302, "/a")


class TestSessionCookie:
    """The session cookie is HttpOnly, SameSite=Lax, and Secure only when the client is on https."""

    async def test_flags_over_plain_http(self, gw):
        async with client() as http:
            reply = await sign_in(http, gw)
        cookie = reply.set_cookie(SESSION_COOKIE)
        assert cookie is not None, reply.headers
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert "httponly" in attrs
        assert "samesite=lax" in attrs
        assert "path=/" in attrs
        assert "secure" not in attrs
        assert len(reply.cookie_value(SESSION_COOKIE)) >= 40

    async def test_secure_behind_trusted_tls_proxy(self, tmp_path):
        files = gateway_files(
            tmp_path, users=quick_users(), extra_config={"trusted_proxies": ["127.0.0.1/32"]}
        )
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.20"}
            page = await fetch(http, "GET", f"{gw.url}{LOGIN}", headers=proxy)
            token = Form(page.text).csrf
            # over https the names carry the __Host- prefix (no sibling subdomain can set them)
            csrf_cookie, session_cookie = f"__Host-{CSRF_COOKIE}", f"__Host-{SESSION_COOKIE}"
            assert "secure" in page.set_cookie(csrf_cookie).lower()
            # the client jar keeps Secure cookies off plain http: send it as the browser would
            cookie = {"Cookie": f"{csrf_cookie}={page.cookie_value(csrf_cookie)}"}
            reply = await fetch(
                http,
                "POST",
                f"{gw.url}{LOGIN}",
                headers={**proxy, **cookie},
                data={"username": "alice", "password": PASSWORD, "next": "/", "csrf_token": token},
            )
            assert reply.status == 302
            attrs = [a.strip().lower() for a in reply.set_cookie(session_cookie).split(";")]
            assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(attrs)
            assert not any(a.startswith("domain") for a in attrs)

    async def test_https_claim_from_untrusted_peer_ignored(self, gw):
        async with client() as http:
            token = await csrf_token(http, gw)
            reply = await fetch(
                http,
                "POST",
                f"{gw.url}{LOGIN}",
                headers={"X-Forwarded-Proto": "https"},
                data={"username": "alice", "password": PASSWORD, "next": "/", "csrf_token": token},
            )
        assert reply.status == 302
        assert "secure" not in reply.set_cookie(SESSION_COOKIE).lower()


class TestSessionFixation:
    """Signing in always issues a new session id; the id the client had before stops working."""

    async def test_planted_id_is_replaced(self, gw):
        async with client() as http:
            http.cookie_jar.update_cookies({SESSION_COOKIE: "attacker-chosen-id-" + "x" * 30})
            reply = await sign_in(http, gw)
            assert reply.status == 302
            new = reply.cookie_value(SESSION_COOKIE)
            assert new and not new.startswith("attacker-chosen-id")

    async def test_id_changes_at_each_sign_in_and_old_id_dies(self, gw):
        async with client() as first:
            reply = await sign_in(first, gw, next_="/one")
            old = reply.cookie_value(SESSION_COOKIE)
            assert (await fetch(first, "GET", f"{gw.url}/one")).is_echo
            # the same browser signs in again (e.g. as another user) carrying the old cookie
            reply = await sign_in(first, gw, "bob")
            new = reply.cookie_value(SESSION_COOKIE)
            assert new and new != old
            seen = (await fetch(first, "GET", f"{gw.url}/")).backend_headers()
            assert seen["x-gateway-user"] == "bob"
        async with client() as replay:
            replay.cookie_jar.update_cookies({SESSION_COOKIE: old})
            assert_login_redirect(await fetch(replay, "GET", f"{gw.url}/one"))

    async def test_half_way_session_is_replaced(self, tmp_path):
        """With 2FA due, the password step creates a session; signing in again replaces it."""
        files = gateway_files(
            tmp_path, users=quick_users(), security={"two_factor": {"enforce": "all"}}
        )
        enroll = f"{PREFIX}/2fa/enroll"
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            reply = await sign_in(http, gw)
            assert reply.location == enroll
            before = reply.cookie_value(SESSION_COOKIE)
            assert before
            assert (await fetch(http, "GET", f"{gw.url}{enroll}")).status == 200
            reply = await sign_in(http, gw)  # start again from the login page
            after = reply.cookie_value(SESSION_COOKIE)
            assert after and after != before
            assert (await fetch(http, "GET", f"{gw.url}{enroll}")).status == 200
            async with client() as replay:
                replay.cookie_jar.update_cookies({SESSION_COOKIE: before})
                assert_login_redirect(await fetch(replay, "GET", f"{gw.url}{enroll}"))


class TestLogout:
    """Signing out (a POST with the CSRF token) ends the session on the server."""

    async def test_logout_ends_session(self, gw, backend):
        async with client() as http:
            await sign_in(http, gw)
            sid = jar_cookie(http, SESSION_COOKIE)
            assert (await fetch(http, "GET", f"{gw.url}/")).is_echo
            page = await fetch(http, "GET", f"{gw.url}{PREFIX}/logout")
            form = Form(page.text)
            assert form.forms[0]["action"] == f"{PREFIX}/logout"
            # without the token nothing happens
            assert (await fetch(http, "POST", f"{gw.url}{PREFIX}/logout")).status == 403
            assert (await fetch(http, "GET", f"{gw.url}/")).is_echo
            reply = await fetch(
                http, "POST", f"{gw.url}{PREFIX}/logout", data={"csrf_token": form.csrf}
            )
            assert reply.status == 200
            assert "signed out" in reply.text
            assert_login_redirect(await fetch(http, "GET", f"{gw.url}/"))
        async with client() as replay:  # the old id is dead on the server, not only in the jar
            replay.cookie_jar.update_cookies({SESSION_COOKIE: sid})
            assert_login_redirect(await fetch(replay, "GET", f"{gw.url}/"))
        await wait_for_audit(gw.files, "session.revoked", principal="alice")


class TestIdleTimeout:
    """A session unused for longer than sessions.idle_timeout is over; an active one is not."""

    async def test_idle_session_sent_to_login(self, tmp_path):
        files = gateway_files(
            tmp_path, users=quick_users(), extra_config={"sessions": {"idle_timeout": "2s"}}
        )
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            await sign_in(http, gw)
            assert (await fetch(http, "GET", f"{gw.url}/")).status != 302
            await asyncio.sleep(3)
            assert_login_redirect(await fetch(http, "GET", f"{gw.url}/"))

    async def test_active_session_stays(self, tmp_path):
        files = gateway_files(
            tmp_path, users=quick_users(), extra_config={"sessions": {"idle_timeout": "2s"}}
        )
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            await sign_in(http, gw)
            for _ in range(4):  # 3.2 s of activity, never 2 s idle
                await asyncio.sleep(0.8)
                reply = await fetch(http, "GET", f"{gw.url}/")
                assert reply.status != 302, "an active session expired"


class TestMaxAge:
    """A session ends sessions.max_age after sign-in, however active it is."""

    async def test_active_session_ends_at_max_age(self, tmp_path):
        lifetimes = {"sessions": {"idle_timeout": "30m", "max_age": "2s"}}
        files = gateway_files(tmp_path, users=quick_users(), extra_config=lifetimes)
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            await sign_in(http, gw)
            assert (await fetch(http, "GET", f"{gw.url}/")).status != 302
            for _ in range(5):
                await asyncio.sleep(0.5)
                reply = await fetch(http, "GET", f"{gw.url}/")
            assert_login_redirect(reply)


REGULATION = {
    "two_factor": {"enforce": "none"},
    "login_regulation": {"max_failures": 3, "ip_max_failures": 3, "window": "10m", "ban": "15m"},
}


class TestLoginRegulation:
    """Repeated failures ban the user and the client IP; bans are audited and lifted by the CLI."""

    async def test_user_ban_and_cli_unlock(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=REGULATION)
        async with running_gateway(files, watch_files=False) as gw:
            async with client("127.0.0.2") as http:
                for _ in range(3):
                    assert (await sign_in(http, gw, "alice", "bad-" + PASSWORD)).status == 401
                reply = await sign_in(http, gw, "alice", PASSWORD)
                assert reply.status == 429
                assert "Too many failed attempts" in Form(reply.text).error
                assert reply.set_cookie(SESSION_COOKIE) is None
            async with client("127.0.0.3") as http:  # the user is banned from everywhere
                assert (await sign_in(http, gw, "alice", PASSWORD)).status == 429
                # but bob from another IP is fine
                assert (await sign_in(http, gw, "bob", PASSWORD)).status == 302
            failures = await wait_for_audit(files, "login.failure", 3, principal="alice")
            assert len(failures) == 3
            assert all(f["client_ip"] == "127.0.0.2" for f in failures)
            assert all(PASSWORD not in json.dumps(f) for f in failures)
            banned = await wait_for_audit(files, "login.banned", principal="alice")
            assert banned and banned[0]["decision"] == "deny:too_many_attempts"

            done = await run_cli(files, "user", "unlock", "alice")
            assert done.returncode == 0, done.stderr
            # It says what it lifted, and that the address ban still applies.
            lines = done.stdout.splitlines()
            assert lines[0] == "alice: sign-in ban lifted; 3 failed attempt(s) cleared"
            assert "Still paused for every user signing in from these addresses" in lines[1]
            assert lines[2].startswith("  127.0.0.2 until ")
            assert lines[3] == "Lift one with: gateway unlock --ip ADDRESS"
            async with client("127.0.0.3") as http:
                assert (await sign_in(http, gw, "alice", PASSWORD)).status == 302
            async with client("127.0.0.2") as http:  # the IP ban stays
                assert (await sign_in(http, gw, "alice", PASSWORD)).status == 429

            done = await run_cli(files, "unlock", "--ip", "127.0.0.2")
            assert done.returncode == 0, done.stderr
            assert done.stdout == "127.0.0.2: sign-in ban lifted; 3 failed attempt(s) cleared\n"
            async with client("127.0.0.2") as http:
                assert (await sign_in(http, gw, "alice", PASSWORD)).status == 302
            unlocked = await wait_for_audit(files, "login.unlocked", 2)
            assert [r.get("address") for r in unlocked] == [None, "127.0.0.2"]

            done = await run_cli(files, "unlock", "--ip", "not-an-address")
            assert done.returncode == 2 and "not an IP address" in done.stderr

    async def test_ip_ban_across_user_names(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=REGULATION)
        async with running_gateway(files, watch_files=False) as gw:
            async with client("127.0.0.4") as http:
                for name in ("nobody", "carol", "dave"):
                    assert (await sign_in(http, gw, name, PASSWORD)).status == 401
                assert (await sign_in(http, gw, "bob", PASSWORD)).status == 429
            async with client("127.0.0.5") as http:
                assert (await sign_in(http, gw, "bob", PASSWORD)).status == 302
            banned = await wait_for_audit(files, "login.banned", client_ip="127.0.0.4")
            assert banned and banned[0]["principal"] is None
            unknown = await wait_for_audit(files, "login.failure", 3, client_ip="127.0.0.4")
            assert {r["principal"] for r in unknown} == {None}


EVIL_NEXT = [
    "//evil.example/x",
    "https://evil.example/x",
    "/\\evil.example",
    "\\/evil.example",
    "javascript:alert(1)",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "http:evil.example",
    "/\t/evil.example",
    "/%09/evil.example",
    " //evil.example",
    "///evil.example",
    "HTTPS://evil.example",
    "data:text/html,hi",
]


class TestOpenRedirects:
    """After sign-in the Location is always a path on this site, whatever `next` said.

    One gateway and a loop over the targets: every sign-in costs an argon2 check.
    """

    async def test_next_posted_with_the_login_form(self, gw):
        for target in EVIL_NEXT:
            async with client() as http:
                reply = await sign_in(http, gw, next_=target)
            assert reply.status == 302, target
            assert_same_site(reply.location, target)

    async def test_next_in_the_login_page_query(self, gw):
        async with client() as http:
            for target in EVIL_NEXT:
                page = await fetch(http, "GET", f"{gw.url}{LOGIN}", params={"next": target})
                assert_same_site(Form(page.text).inputs["next"]["value"], target)
            page = await fetch(http, "GET", f"{gw.url}{LOGIN}", params={"next": EVIL_NEXT[0]})
            form = Form(page.text)
            reply = await fetch(
                http,
                "POST",
                f"{gw.url}{LOGIN}",
                data={
                    "username": "alice",
                    "password": PASSWORD,
                    "csrf_token": form.csrf,
                    "next": form.inputs["next"]["value"],
                },
            )
            assert_same_site(reply.location, EVIL_NEXT[0])
            # signed in: the login page redirects to `next` at once, just as safely
            for target in [*EVIL_NEXT, f"{gw.url}/reports"]:
                again = await fetch(http, "GET", f"{gw.url}{LOGIN}", params={"next": target})
                assert again.status == 302, target
                assert_same_site(again.location, target)

    async def test_absolute_url_of_our_own_host(self, gw):
        async with client() as http:
            reply = await sign_in(http, gw, next_=f"{gw.url}/reports")
        assert_same_site(reply.location, "own host")

    async def test_plain_paths_are_kept(self, gw):
        async with client() as http:
            await sign_in(http, gw)
            for target in ["/reports/q1", "/a?b=c&d=%2F", "/%7Euser/", "/a%2Fb"]:
                reply = await fetch(http, "GET", f"{gw.url}{LOGIN}", params={"next": target})
                assert_same_site(reply.location, target)
                # aiohttp may decode characters that need no escaping ("%7E" -> "~")
                assert unquote(reply.location) == unquote(target)


def assert_same_site(location: str | None, target: str) -> None:
    why = f"next={target!r} gave Location {location!r}"
    assert location is not None, why
    assert location.startswith("/"), why
    assert not location.startswith(("//", "/\\")), why
    assert "\\" not in location and "\t" not in location, why
    url = urlsplit(location)
    assert (url.scheme, url.netloc) == ("", ""), why
