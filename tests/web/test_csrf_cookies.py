"""The gateway's forms and cookies against cross-site requests and cookie games, over real
sockets: CSRF Origin checks (scheme, host and port; `null` and ftp:// refused), a CSRF failure
on the login form that shows the form again, `__Host-` cookie names over TLS, and the session
cookie never reaching a backend, whatever spelling the client used."""

from __future__ import annotations

import json

import pytest

from tests.factories import client, gateway_files, raw_request, running_gateway, serve
from tests.web.test_signin import (
    LOGIN,
    PASSWORD,
    Form,
    counting_echo,
    fetch,
    quick_users,
    sign_in,
)


@pytest.fixture
async def gw(tmp_path):
    app, _hits = counting_echo()
    async with serve(app) as backend:
        files = gateway_files(
            tmp_path,
            users=quick_users(),
            dashboard_upstream=backend,
            extra_config={"trusted_proxies": ["127.0.0.2/32"]},
        )
        async with running_gateway(files, watch_files=False) as gw:
            yield gw


async def login_with_origin(gw, origin: str | None, via_tls_proxy: bool = False):
    """GET the form, then POST it with a valid token pair and the given Origin."""
    proxy = {"X-Forwarded-Proto": "https"} if via_tls_proxy else {}
    async with client("127.0.0.2" if via_tls_proxy else None) as http:
        page = await fetch(http, "GET", f"{gw.url}{LOGIN}", headers=proxy)
        name = "__Host-gateway_csrf" if via_tls_proxy else "gateway_csrf"
        headers = {**proxy, "Cookie": f"{name}={page.cookie_value(name)}"}
        if origin is not None:
            headers["Origin"] = origin
        data = {"username": "alice", "password": PASSWORD, "next": "/"}
        return await fetch(
            http,
            "POST",
            f"{gw.url}{LOGIN}",
            data={**data, "csrf_token": Form(page.text).csrf},
            headers=headers,
        )


class TestOrigin:
    async def test_same_origin_and_no_origin_pass(self, gw):
        assert (await login_with_origin(gw, f"http://127.0.0.1:{gw.port}")).status == 302
        assert (await login_with_origin(gw, None)).status == 302

    @pytest.mark.parametrize(
        "origin",
        [
            "null",
            "ftp://127.0.0.1:{port}",
            "https://127.0.0.1:{port}",  # the page is on http
            "http://127.0.0.1:1{port}",
            "http://127.0.0.1",
            "http://127.0.0.2:{port}",
            "http://evil.example",
            "http://127.0.0.1:{port}@evil.example",
            "",
        ],
    )
    async def test_refused(self, gw, origin):
        reply = await login_with_origin(gw, origin.format(port=gw.port))
        assert reply.status == 403
        assert "The form expired, please try again" in reply.text

    async def test_tls_origin_behind_trusted_proxy(self, gw):
        assert (await login_with_origin(gw, "null", via_tls_proxy=True)).status == 403
        assert (
            await login_with_origin(gw, f"http://127.0.0.1:{gw.port}", via_tls_proxy=True)
        ).status == 403
        ok = await login_with_origin(gw, f"https://127.0.0.1:{gw.port}", via_tls_proxy=True)
        assert ok.status == 302


class TestExpiredLoginForm:
    async def test_form_comes_back_and_works(self, gw):
        async with client() as http:
            data = {"username": "alice", "password": PASSWORD, "next": "/x", "csrf_token": "old"}
            reply = await fetch(http, "POST", f"{gw.url}{LOGIN}", data=data)
            assert reply.status == 403
            assert "The form expired, please try again" in reply.text
            assert "not allowed" not in reply.text
            form = Form(reply.text)
            assert form.csrf and 'value="alice"' in reply.text
            data = {"username": "alice", "password": PASSWORD, "next": "/x"}
            again = await fetch(
                http, "POST", f"{gw.url}{LOGIN}", data={**data, "csrf_token": form.csrf}
            )
            assert again.status == 302 and again.location == "/x"

    async def test_a_non_ascii_token_is_refused_not_an_error(self, gw):
        """hmac.compare_digest raises on non-ASCII str: the token is compared as bytes."""
        async with client() as http:
            await fetch(http, "GET", f"{gw.url}{LOGIN}")  # the CSRF cookie
            data = {"username": "alice", "password": PASSWORD, "next": "/x", "csrf_token": "é"}
            reply = await fetch(http, "POST", f"{gw.url}{LOGIN}", data=data)
            assert reply.status == 403
            assert "The form expired, please try again" in reply.text


class TestHostPrefix:
    async def test_tls_names_and_attributes(self, gw):
        reply = await login_with_origin(gw, None, via_tls_proxy=True)
        assert reply.status == 302
        cookie = reply.set_cookie("__Host-gateway_session")
        assert cookie is not None, reply.headers
        attrs = {a.strip().lower() for a in cookie.split(";")}
        assert {"secure", "path=/", "httponly"} <= attrs
        assert not any(a.startswith("domain") for a in attrs)
        assert reply.set_cookie("gateway_session") is None

    async def test_plain_name_is_not_read_over_tls(self, gw):
        """A cookie without the prefix could have been planted by a sibling subdomain."""
        proxy = {"X-Forwarded-Proto": "https"}
        async with client("127.0.0.2") as http:
            page = await fetch(http, "GET", f"{gw.url}{LOGIN}")  # plain http: plain name
            headers = {**proxy, "Cookie": f"gateway_csrf={page.cookie_value('gateway_csrf')}"}
            data = {"username": "alice", "password": PASSWORD, "next": "/"}
            reply = await fetch(
                http,
                "POST",
                f"{gw.url}{LOGIN}",
                data={**data, "csrf_token": Form(page.text).csrf},
                headers=headers,
            )
        assert reply.status == 403


SPELLINGS = [
    "gateway_session={sid}",
    "gateway_session ={sid}",
    " gateway_session = {sid}",
    "GATEWAY_SESSION={sid}",
    "__Host-gateway_session={sid}",
    "__Secure-gateway_session={sid}",
    "gateway.session={sid}",
    "gateway%5Fsession={sid}",
    "gateway session={sid}",
    'gateway_session="{sid}"',
    "a=1; gateway_session={sid}; b=2",
]


class TestSessionCookieStripped:
    """Signed in with the session cookie, plus another spelling of it that a backend (PHP maps
    "." and " " to "_" and decodes names; others ignore case or the prefixes) may read as ours:
    the backend never receives the session id."""

    @pytest.mark.parametrize("spelling", SPELLINGS)
    async def test_backend_never_sees_the_session(self, gw, spelling):
        sid = await session_id(gw)
        cookie = b"gateway_session=" + sid.encode() + b"; " + spelling.format(sid=sid).encode()
        for raw in (
            get_page(b"Cookie: " + cookie + b"\r\n"),
            # the spelling on a second Cookie line, which aiohttp does not read but backends may
            get_page(
                b"Cookie: gateway_session="
                + sid.encode()
                + b"\r\nCookie: "
                + spelling.format(sid=sid).encode()
                + b"\r\n"
            ),
        ):
            response = await raw_request(gw.host, gw.port, raw)
            assert response.startswith(b"HTTP/1.1 200"), response[:300]
            seen = json.loads(response.split(b"\r\n\r\n", 1)[1])
            assert sid not in json.dumps(seen["headers"])

    async def test_space_before_equals_authenticates_as_aiohttp_reads_it_and_is_stripped(self, gw):
        sid = await session_id(gw)
        raw = get_page(b"Cookie: theme=dark; gateway_session =" + sid.encode() + b"\r\n")
        response = await raw_request(gw.host, gw.port, raw)
        assert response.startswith(b"HTTP/1.1 200"), response[:300]
        seen = json.loads(response.split(b"\r\n\r\n", 1)[1])
        assert sid not in json.dumps(seen["headers"])
        assert ["Cookie", "theme=dark"] in seen["headers"]


async def session_id(gw) -> str:
    async with client() as http:
        reply = await sign_in(http, gw)
    sid = reply.cookie_value("gateway_session")
    assert sid
    return sid


def get_page(extra: bytes) -> bytes:
    return b"GET /page HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n" + extra + b"\r\n"
