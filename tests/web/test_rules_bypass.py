"""Role rules against backends that read a request differently, over raw sockets (section 4
steps 2 and 5): `;` path parameters, upper-case spellings of denied paths, method overrides.

`editor` may do anything but /settings/; `viewer` may only GET and HEAD. The recording backend
stands in for Tomcat/Spring (strip `;params`), case-insensitive routers and frameworks that
honour X-HTTP-Method-Override or `_method=`: nothing denied may reach it.
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

EDITOR = api_key("editor")
VIEWER = api_key("viewer")


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def request(target: bytes, key: str, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    return (
        method
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer "
        + key.encode()
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n"
        + extra
        + b"\r\n"
    )


@pytest.fixture
async def setup(tmp_path):
    async with recording_backend() as (backend, seen):
        files = gateway_files(
            tmp_path,
            api_upstream=backend,
            accounts={
                "editor": {
                    "key_sha256": key_sha256(EDITOR),
                    "grants": {"protection-api": "editor"},
                },
                "viewer": {
                    "key_sha256": key_sha256(VIEWER),
                    "grants": {"protection-api": "viewer"},
                },
            },
        )
        async with running_gateway(files) as gw:
            yield gw, seen


class TestPathParameters:
    @pytest.mark.parametrize(
        "target",
        [b"/api/settings;x/y", b"/api/x;jsessionid=1", b"/api/settings%3Bx/y", b"/api;/settings/"],
    )
    async def test_answered_400(self, setup, target):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, request(target, EDITOR))
        assert status_of(response) == 400, response[:300]
        assert seen == []

    async def test_semicolon_in_query_is_fine(self, setup):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, request(b"/api/x?a=1;b=2", EDITOR))
        assert status_of(response) == 200
        assert [(r.method, r.path) for r in seen] == [("GET", "/api/x?a=1;b=2")]


class TestDenyIgnoresCase:
    @pytest.mark.parametrize(
        "target", [b"/api/SETTINGS/", b"/api/Settings/users", b"/api/settings", b"/api/%53ettings/"]
    )
    async def test_denied(self, setup, target):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, request(target, EDITOR))
        assert status_of(response) == 403, response[:300]
        assert seen == []

    async def test_other_paths_pass(self, setup):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, request(b"/api/SETTINGSX/1", EDITOR))
        assert status_of(response) == 200
        assert [(r.method, r.path) for r in seen] == [("GET", "/api/SETTINGSX/1")]


class TestMethodOverride:
    @pytest.mark.parametrize(
        ("target", "extra"),
        [
            (b"/api/x", b"X-HTTP-Method-Override: DELETE\r\n"),
            (b"/api/x", b"x-http-method: delete\r\n"),
            (b"/api/x", b"X-Method-Override: PUT\r\n"),
            (b"/api/x", b"X-HTTP-Method-Override: GET\r\nX-HTTP-Method-Override: DELETE\r\n"),
            (b"/api/x?_method=DELETE", b""),
            (b"/api/x?a=1&_method=put", b""),
            (b"/api/x?_%6Dethod=DELETE", b""),
        ],
    )
    async def test_override_not_in_role_is_denied(self, setup, target, extra):
        gw, seen = setup
        response = await raw_request(gw.host, gw.port, request(target, VIEWER, extra=extra))
        assert status_of(response) == 403, response[:300]
        assert seen == []

    async def test_allowed_override_passes(self, setup):
        gw, seen = setup
        raw = request(b"/api/x?_method=HEAD", VIEWER, extra=b"X-HTTP-Method-Override: GET\r\n")
        assert status_of(await raw_request(gw.host, gw.port, raw)) == 200
        assert [(r.method, r.path) for r in seen] == [("GET", "/api/x?_method=HEAD")]

    async def test_real_method_must_be_allowed_too(self, setup):
        gw, seen = setup
        raw = request(b"/api/x", VIEWER, method=b"POST", extra=b"X-HTTP-Method-Override: GET\r\n")
        assert status_of(await raw_request(gw.host, gw.port, raw)) == 403
        assert seen == []
