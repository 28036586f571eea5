"""Forward-auth questions about API requests are answered by the front itself
(gateway/web/front/authz.py); any other question by aiohttp's side. Both must give the same
answer and the same audit record. An auth request with a body always goes to aiohttp's side,
so each question is asked both ways and the answers compared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import RunningGateway, api_key, client, running_gateway
from tests.forward_auth.conftest import Backends, forward_auth_files
from tests.forward_auth.test_endpoints import AUTH_REQUEST, FORWARD_AUTH, traefik
from tests.web.test_signin import Reply, audit_records, fetch

# headers that differ between two answers by nature
VARYING = {"date", "x-gateway-request-id", "content-length"}
AUDITED = ("mode", "method", "path", "surface", "app", "principal", "auth", "decision", "status")


@pytest.fixture
async def gw(tmp_path: Path, backends: Backends) -> AsyncIterator[RunningGateway]:
    async with running_gateway(forward_auth_files(tmp_path, backends), watch_files=False) as gw:
        yield gw


def nginx(method: str, url: str, **headers: str) -> dict[str, str]:
    return {
        **headers,
        "X-Original-URL": url,
        "X-Original-Method": method,
        "X-Forwarded-For": "203.0.113.7",
    }


QUESTIONS = {
    "auth-request allowed": (
        AUTH_REQUEST,
        nginx("GET", "https://h/api/x?q=1", **{"X-API-Key": api_key("sync")}),
    ),
    "auth-request no key": (AUTH_REQUEST, nginx("GET", "https://h/api/x")),
    "auth-request wrong key": (
        AUTH_REQUEST,
        nginx("GET", "https://h/api/x", Authorization="Bearer gwk_not_a_key"),
    ),
    "auth-request role denies": (
        AUTH_REQUEST,
        nginx("DELETE", "https://h/api/x", **{"X-API-Key": api_key("reader")}),
    ),
    "forward-auth allowed": (
        FORWARD_AUTH,
        traefik("POST", "/api/items", Authorization=f"Bearer {api_key('sync')}"),
    ),
    "forward-auth no key": (FORWARD_AUTH, traefik("GET", "/api/items")),
    "forward-auth role denies": (
        FORWARD_AUTH,
        traefik("POST", "/api/items", Authorization=f"Bearer {api_key('reader')}"),
    ),
}


async def ask(gw: RunningGateway, path: str, headers: dict[str, str], *, body: bool) -> Reply:
    async with client() as http:  # from 127.0.0.1: the trusted proxy
        return await fetch(
            http, "GET", f"{gw.url}{path}", headers=headers, data=b"x" if body else None
        )


async def record_of(gw: RunningGateway, request_id: str) -> dict[str, Any]:
    for _ in range(60):
        for record in audit_records(gw.files):
            if record.get("request_id") == request_id:
                return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no audit record for {request_id}")


def comparable(reply: Reply) -> tuple[int, dict[str, str], str]:
    headers = {k.lower(): v for k, v in reply.headers.items() if k.lower() not in VARYING}
    headers.pop("x-gateway-assertion", None)  # a token: checked for presence below
    text = reply.text
    if reply.headers.get("Content-Type") == "application/problem+json":
        text = text.replace(reply.headers["X-Gateway-Request-Id"], "RID")
    return reply.status, headers, text


@pytest.mark.parametrize("question", QUESTIONS.values(), ids=QUESTIONS.keys())
async def test_front_and_aiohttp_answer_alike(gw: RunningGateway, question):
    path, headers = question
    front = await ask(gw, path, headers, body=False)
    behind = await ask(gw, path, headers, body=True)
    assert comparable(front) == comparable(behind)
    assert ("X-Gateway-Assertion" in front.headers) == ("X-Gateway-Assertion" in behind.headers)
    first = await record_of(gw, front.headers["X-Gateway-Request-Id"])
    second = await record_of(gw, behind.headers["X-Gateway-Request-Id"])
    assert first["mode"] == "forward-auth"
    assert {k: first.get(k) for k in AUDITED} == {k: second.get(k) for k in AUDITED}
    assert first["reasons"] == second["reasons"]


async def test_no_decision_for_a_peer_that_is_not_a_trusted_proxy(gw: RunningGateway):
    """The front decides only for trusted proxies; anyone else gets aiohttp's 403."""
    path, headers = QUESTIONS["auth-request allowed"]
    async with client("127.0.0.5") as http:
        reply = await fetch(http, "GET", f"{gw.url}{path}", headers=headers)
    assert reply.status == 403
    assert "X-Gateway-User" not in reply.headers
