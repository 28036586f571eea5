"""`client_ip_header` (docs/configuration.md): from a trusted proxy only the one header it names
is read, never the other one, which a client can send through a proxy that does not rewrite it."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.policy.ipset import CompiledIPSet
from gateway.web.client_ip import resolve_client
from tests.factories import api_key, gateway_files, raw_request, running_gateway

ALLOWED = "198.51.100.7"


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def api_status(gw, headers: bytes) -> int:
    raw = (
        b"GET /api/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nAuthorization: Bearer "
        + api_key("sync").encode()
        + b"\r\n"
        + headers
        + b"\r\n"
    )
    return status_of(await raw_request("127.0.0.1", gw.port, raw))


def files_with(tmp_path, header: str | None):
    extra = {"trusted_proxies": ["127.0.0.1/32"]}
    if header is not None:
        extra["client_ip_header"] = header
    return gateway_files(
        tmp_path,
        api_upstream="http://127.0.0.1:9",  # reaching the upstream answers 502
        allowlists={
            "dashboard": {"enabled": False},
            "api": {"enabled": True, "entries": [{"ip": ALLOWED, "description": "partner"}]},
        },
        extra_config=extra,
    )


@pytest.mark.parametrize("header", ["forwarded", "Forwarded"])
async def test_forwarded_proxy_ignores_x_forwarded_for(tmp_path, header):
    async with running_gateway(files_with(tmp_path, header)) as gw:
        # the proxy wrote Forwarded; the client's own X-Forwarded-For passed through
        spoof = b"X-Forwarded-For: " + ALLOWED.encode() + b"\r\nForwarded: for=203.0.113.5\r\n"
        assert await api_status(gw, spoof) == 403
        real = b"X-Forwarded-For: 203.0.113.5\r\nForwarded: for=" + ALLOWED.encode() + b"\r\n"
        assert await api_status(gw, real) == 502  # allowed, then the upstream is down


async def test_default_reads_only_x_forwarded_for(tmp_path):
    async with running_gateway(files_with(tmp_path, None)) as gw:
        assert await api_status(gw, b"Forwarded: for=" + ALLOWED.encode() + b"\r\n") == 403
        assert await api_status(gw, b"X-Forwarded-For: " + ALLOWED.encode() + b"\r\n") == 502


def test_scheme_comes_from_the_same_header():
    trusted = CompiledIPSet.build(["127.0.0.1/32"])
    headers = CIMultiDictProxy(
        CIMultiDict(
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-For": "203.0.113.9",
                "Forwarded": 'for="[2001:db8::1]:443";proto=http',
            }
        )
    )
    via_forwarded = resolve_client("127.0.0.1", headers, trusted, "forwarded")
    assert (via_forwarded.text, via_forwarded.proto) == ("2001:db8::1", "http")
    via_xff = resolve_client("127.0.0.1", headers, trusted, "x-forwarded-for")
    assert (via_xff.text, via_xff.proto) == ("203.0.113.9", "https")


def test_unknown_header_name_is_a_validation_error(tmp_path):
    from gateway.policy.source import load

    files = files_with(tmp_path, "x-real-ip")
    result = load(files.config_file)
    assert result.snapshot is None
    assert any("client_ip_header" in str(p) for p in result.report.errors)
