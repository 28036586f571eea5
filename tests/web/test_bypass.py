"""Path-normalisation and Host bypass attempts, sent byte-for-byte over a raw socket.

The classes behind published CVEs of Envoy, Traefik, Pomerium and oauth2-proxy: dot-segments,
encoded dots, slashes and backslashes, `..;`, NUL, fragments, double slashes, case tricks and
Host header games. The service account may read /api/public/ only; whatever the bytes, nothing
may reach /api/admin/ or the host-bound `internal` app, and what reaches the backend is exactly
the path the gateway authorised.
"""

from __future__ import annotations

import contextlib

import pytest
from aiohttp import web

from tests.factories import (
    api_key,
    gateway_files,
    key_sha256,
    raw_request,
    running_gateway,
    serve,
)

KEY = api_key("limited")
ROLES_EXTRA = {"limited": {"allow": [{"methods": ["GET"], "path": "/public/"}]}}

# (raw request target, allowed status codes)
ATTEMPTS = [
    ("/api/public/../admin/secret", {403}),
    ("/api/public/%2e%2e/admin/secret", {400}),
    ("/api/public/%2E%2E/admin/secret", {400}),
    ("/api/public/.%2e/admin/secret", {400}),
    ("/api/public/%2e./admin/secret", {400}),
    ("/api/public/..%2Fadmin/secret", {400}),
    ("/api/public/..%2fadmin/secret", {400}),
    ("/api/public%2F..%2Fadmin/secret", {400}),
    ("/api/public/..%5Cadmin/secret", {400}),
    ("/api/public/..\\admin/secret", {400}),
    ("/api/public\\..\\admin\\secret", {400}),
    ("/api/public/..;/admin/secret", {400}),
    ("/api/public/.;/../admin/secret", {400}),
    ("/api/public/..;foo=bar/admin/secret", {400}),
    ("//api/admin/secret", {403}),
    ("/api//admin/secret", {403}),
    ("/api/./admin/secret", {403}),
    ("/api/public/./../admin/secret", {403}),
    ("/api%2Fadmin/secret", {400}),
    ("/api%2e/admin/secret", {302}),  # segment "api." is not "api": the dashboard app, sign in
    ("/api../admin/secret", {302}),
    ("/api./admin/secret", {302}),
    ("/API/admin/secret", {302}),  # paths are case-sensitive: not the api app
    ("/api/public/%00/../../admin/secret", {400}),
    ("/api/public/x%00", {400}),
    ("/api/public/x#/../../admin/secret", {400}),
    ("/api/public/x%23/../../admin/secret", {403}),
    ("/api/public/%c0%ae%c0%ae/admin/secret", {400}),
    ("/api/public/%e0%80%ae%e0%80%ae/admin/secret", {400}),
    ("/api/public/%252e%252e/admin/secret", {200}),  # decoded once only: a harmless name
    ("/../api/admin/secret", {400}),
    ("/api/public/../../admin/secret", {302}),  # climbs to /admin/secret: dashboard app
    ("/api/public/../../../admin/secret", {400}),
    ("/api/%61dmin/secret", {403}),  # %61 = "a": decoded, then denied like /api/admin
    ("/api/public/%2e", {400}),
    ("http://internal.example.com/secret", {400}),  # absolute-form is refused
    ("*", {400}),
]


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@contextlib.asynccontextmanager
async def recording_backend():
    seen: list[tuple[str, str]] = []
    headers: list[list[tuple[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Host", ""), request.raw_path))
        headers.append(list(request.headers.items()))
        return web.json_response({"path": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve(app) as url:
        yield url, seen, headers


@pytest.fixture
async def setup(tmp_path):
    async with recording_backend() as (backend, seen, headers):
        files = gateway_files(
            tmp_path,
            dashboard_upstream=backend,
            api_upstream=backend,
            accounts={
                "limited": {"key_sha256": key_sha256(KEY), "grants": {"protection-api": "limited"}}
            },
            apps={
                "console": {"surface": "dashboard", "match": {"path": "/"}, "upstream": backend},
                "protection-api": {
                    "surface": "api",
                    "match": {"path": "/api/"},
                    "upstream": backend,
                },
                "internal": {
                    "surface": "api",
                    "match": {"host": "internal.example.com", "path": "/"},
                    "upstream": backend,
                },
            },
        )
        files.policies["people"]["roles"].update(ROLES_EXTRA)
        files.write()
        async with running_gateway(files) as gw:
            gw.backend_headers = headers  # type: ignore[attr-defined]
            yield gw, seen


def _request(target: str, host: bytes = b"gateway.test", extra: bytes = b"") -> bytes:
    return (
        b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nConnection: close\r\n" + extra + b"\r\n"
    )


def _assert_nothing_forbidden_reached(seen: list[tuple[str, str]]) -> None:
    for host, path in seen:
        assert "admin" not in path.lower() or path.startswith("/api/public/"), (host, path)
        assert "internal" not in host.lower(), (host, path)


class TestPathBypass:
    """No spelling of a path reaches a path or app the role does not allow."""

    async def test_control_request_reaches_backend(self, setup):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, _request("/api/public/x"))
        assert _status(response) == 200
        assert seen == [("gateway.test", "/api/public/x")]

    @pytest.mark.parametrize(("target", "statuses"), ATTEMPTS, ids=[a[0] for a in ATTEMPTS])
    async def test_attempt(self, setup, target, statuses):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, _request(target))
        assert _status(response) in statuses, response[:300]
        _assert_nothing_forbidden_reached(seen)
        if _status(response) == 200:
            assert [p for _, p in seen] == ["/api/public/%252e%252e/admin/secret"]
        else:
            assert seen == []

    async def test_forwarded_path_is_the_normalised_one(self, setup):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, _request("/api//public/./a/../b%7E"))
        assert _status(response) == 200
        assert [p for _, p in seen] == ["/api/public/b~"]


class TestHostBypass:
    """Hosts match case-insensitively and without port; ambiguous Host headers are refused."""

    @pytest.mark.parametrize(
        "host", [b"internal.example.com", b"INTERNAL.Example.COM", b"internal.example.com:8080"]
    )
    async def test_host_bound_app_matched_in_any_spelling(self, setup, host):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, _request("/api/public/x", host=host))
        # the key has no grant on `internal`: 403, and the request never fell through to
        # the host-less protection-api app
        assert _status(response) == 403
        assert seen == []

    async def test_several_host_headers_refused(self, setup):
        gw, seen = setup
        response = await raw_request(
            gw.host, gw.port, _request("/api/public/x", extra=b"Host: internal.example.com\r\n")
        )
        assert _status(response) == 400
        assert seen == []

    async def test_identity_headers_never_reach_backend(self, setup):
        gw, _seen = setup
        extra = (
            b"X-Gateway-User: root\r\nx-gateway-role: admin\r\nX_Gateway_User: root\r\n"
            b"X-GATEWAY-AUTH: password+totp\r\nX-Real-IP: 10.0.0.1\r\n"
            b"Connection: X-Gateway-User\r\n"
        )
        response = await raw_request(gw.host, gw.port, _request("/api/public/x", extra=extra))
        assert _status(response) == 200
        received = gw.backend_headers[-1]
        names = [name.lower() for name, _ in received]
        assert "x_gateway_user" not in names and "x-real-ip" not in names
        gateway_headers = {n.lower(): v for n, v in received if n.lower().startswith("x-gateway-")}
        assert gateway_headers["x-gateway-user"] == "limited"
        assert gateway_headers["x-gateway-role"] == "limited"
        assert gateway_headers["x-gateway-auth"] == "api-key"
        assert names.count("x-gateway-user") == 1 and names.count("x-gateway-role") == 1
        assert dict((n.lower(), v) for n, v in received)["x-forwarded-for"] == "127.0.0.1"
