"""Host header canonicalisation over raw sockets (docs/http.md, request path step 2).

A host-bound app `internal` (admin.example) that the key has no grant on, and a host-less app
`public` that it may use, both in front of a name-based backend that records the Host it gets.
Whatever the spelling of admin.example, the request must be matched to `internal` (403) or
refused (400); it must never fall through to `public` and reach the backend as admin.example.
"""

from __future__ import annotations

import pytest

from tests.factories import (
    api_key,
    gateway_files,
    key_sha256,
    raw_request,
    recording_backend,
    running_gateway,
)

KEY = api_key("limited")


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def request(host: bytes | None, extra: bytes = b"") -> bytes:
    host_line = b"Host: " + host + b"\r\n" if host is not None else b""
    return (
        b"GET /x HTTP/1.1\r\n" + host_line + b"Authorization: Bearer " + KEY.encode() + b"\r\n"
        b"Connection: close\r\n" + extra + b"\r\n"
    )


@pytest.fixture
async def setup(tmp_path):
    async with recording_backend() as (backend, seen):
        files = gateway_files(
            tmp_path,
            accounts={"limited": {"key_sha256": key_sha256(KEY), "grants": {"public": "admin"}}},
            apps={
                "internal": {
                    "surface": "api",
                    "match": {"host": "admin.example", "path": "/"},
                    "upstream": backend,
                },
                "public": {"surface": "api", "match": {"path": "/"}, "upstream": backend},
                "console": {"surface": "dashboard", "match": {"path": "/ui/"}, "upstream": backend},
            },
        )
        async with running_gateway(files) as gw:
            yield gw, seen


class TestCanonicalMatch:
    @pytest.mark.parametrize(
        "host",
        [
            b"admin.example",
            b"ADMIN.Example",
            b"admin.example.",
            b"Admin.Example.:8080",
            b"admin.example:80",
        ],
    )
    async def test_every_spelling_reaches_the_host_bound_app(self, setup, host):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, request(host))
        assert status_of(response) == 403, response[:300]
        assert seen == []

    @pytest.mark.parametrize(
        ("host", "forwarded"),
        [
            (b"Public.Example.", "public.example"),
            (b"public.example.:8080", "public.example:8080"),
            (b"[0:0::1]:8080", "[::1]:8080"),
            (b"127.0.0.1", "127.0.0.1"),
        ],
    )
    async def test_backend_receives_the_canonical_host(self, setup, host, forwarded):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, request(host))
        assert status_of(response) == 200, response[:300]
        assert seen[-1].headers["host"] == forwarded
        assert seen[-1].headers["x-forwarded-host"] == forwarded


class TestInvalidHost:
    @pytest.mark.parametrize(
        "host",
        [
            b"user@admin.example",
            b"admin.example@public.example",
            b"admin.example,public.example",
            b"admin.example public.example",
            b"\xc3\xa4dmin.example",
            b"admin..example",
            b"admin.example..",
            b"admin.example:99999",
            b"admin.example:",
            b"admin.example:8o",
            b"127.1",
            b"0x7f.0.0.1",
            b"[::1",
            b"[::1]x",
            b"admin_example/x",
        ],
    )
    async def test_answered_400(self, setup, host):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, request(host))
        assert status_of(response) == 400, response[:300]
        assert b"x-gateway-request-id" in response.lower()
        assert seen == []

    async def test_several_host_headers_refused(self, setup):
        gw, seen = setup
        raw = request(b"public.example", extra=b"Host: admin.example\r\n")
        assert status_of(await raw_request(gw.host, gw.port, raw)) == 400
        assert seen == []

    async def test_gateway_pages_refuse_it_too(self, setup):
        gw, _seen = setup
        raw = b"GET /_gateway/login HTTP/1.1\r\nHost: a@b\r\nConnection: close\r\n\r\n"
        assert status_of(await raw_request(gw.host, gw.port, raw)) == 400
