"""What the gateway's own answers say about it and to whom: no Server header naming versions,
and an API 401 written for programs that tells a missing key from a wrong or expired one
(RFC 6750 `error="invalid_token"`)."""

from __future__ import annotations

import json

import pytest

from tests.factories import api_key, gateway_files, key_sha256, raw_request, running_gateway


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers, body


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{extra}\r\n".encode()


@pytest.fixture
async def gw(tmp_path):
    files = gateway_files(
        tmp_path,
        accounts={
            "sync": {
                "key_sha256": key_sha256(api_key("sync")),
                "grants": {"protection-api": "writer"},
            },
            "old": {
                "key_sha256": key_sha256(api_key("old")),
                "grants": {"protection-api": "writer"},
                "expires": "2020-01-31",
            },
        },
    )
    async with running_gateway(files) as gw:
        yield gw


@pytest.mark.parametrize(
    "raw",
    [
        get("/_gateway/healthz"),
        get("/_gateway/login"),
        get("/"),
        get("/api/x"),
        get("/nothing%2f"),
    ],
)
async def test_no_server_versions(gw, raw):
    _status, headers, _body = parse(await raw_request(gw.host, gw.port, raw))
    assert headers.get("server", "") == "gateway"


async def test_missing_key(gw):
    status, headers, body = parse(await raw_request(gw.host, gw.port, get("/api/x")))
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="gateway", charset="UTF-8"'
    problem = json.loads(body)
    assert problem["title"] == "Unauthorized"
    assert "Authorization: Bearer" in problem["detail"]
    assert "sign" not in json.dumps(problem).lower()


@pytest.mark.parametrize(
    "header", [f"Authorization: Bearer {api_key('nobody')}", f"X-API-Key: {api_key('old')}"]
)
async def test_wrong_or_expired_key(gw, header):
    raw = get("/api/x", header + "\r\n")
    status, headers, body = parse(await raw_request(gw.host, gw.port, raw))
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert headers["www-authenticate"].startswith('Bearer realm="gateway"')
    assert json.loads(body)["detail"] == "The API key is not valid or has expired."
