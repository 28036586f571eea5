"""Per-surface allowlists decided on real TCP peers with different loopback source addresses."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.factories import (
    api_key,
    client,
    echo_app,
    gateway_files,
    raw_request,
    running_gateway,
    serve,
)

KEY = {"Authorization": f"Bearer {api_key('sync')}"}


def lists(dashboard: list[str] | None, api: list[str] | None) -> dict:
    def one(entries: list[str] | None) -> dict:
        if entries is None:
            return {"enabled": False, "entries": []}
        return {"enabled": True, "entries": [{"ip": e, "description": "t"} for e in entries]}

    return {"dashboard": one(dashboard), "api": one(api)}


async def api_status(gw, source: str | None) -> int:
    async with client(source) as http, http.get(f"{gw.url}/api/x", headers=KEY) as r:
        return r.status


async def dashboard_status(gw, source: str | None) -> int:
    async with client(source) as http, http.get(f"{gw.url}/", allow_redirects=False) as r:
        return r.status


class TestSurfaceAllowlists:
    """Each surface applies its own list to the real TCP peer address."""

    async def test_each_surface_its_own_list(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(
                tmp_path,
                dashboard_upstream=backend,
                api_upstream=backend,
                allowlists=lists(["127.0.0.2"], ["127.0.0.3/32"]),
            )
            async with running_gateway(files) as gw:
                # dashboard: .2 allowed (then sent to sign in), .3 refused
                assert await dashboard_status(gw, "127.0.0.2") == 302
                assert await dashboard_status(gw, "127.0.0.3") == 403
                # api: .3 allowed, .2 refused with problem+json
                assert await api_status(gw, "127.0.0.3") == 200
                async with (
                    client("127.0.0.2") as http,
                    http.get(f"{gw.url}/api/x", headers=KEY) as r,
                ):
                    assert r.status == 403
                    assert r.headers["Content-Type"] == "application/problem+json"
                    body = await r.json(content_type=None)
                    assert body["code"] == "ip_not_allowed"
                    assert r.headers["X-Gateway-Request-Id"] == body["request_id"]

    async def test_cidr_entries(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(
                tmp_path, api_upstream=backend, allowlists=lists(None, ["127.0.0.0/30"])
            )
            async with running_gateway(files) as gw:
                assert await api_status(gw, "127.0.0.2") == 200
                assert await api_status(gw, "127.0.0.3") == 200
                assert await api_status(gw, "127.0.0.4") == 403

    async def test_ipv6_peer(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(
                tmp_path, api_upstream=backend, allowlists=lists(None, ["::1/128"])
            )
            async with running_gateway(files, host="::1") as gw:
                assert await api_status(gw, None) == 200
            files = gateway_files(
                tmp_path, api_upstream=backend, allowlists=lists(None, ["127.0.0.1"])
            )
            async with running_gateway(files, host="::1") as gw:
                assert await api_status(gw, None) == 403

    async def test_disabled_list_and_protection_toggle(self, tmp_path):
        async with serve(echo_app()) as backend:
            allow = lists(None, ["127.0.0.9"])
            allow["api"]["enabled"] = False
            files = gateway_files(tmp_path, api_upstream=backend, allowlists=allow)
            async with running_gateway(files) as gw:
                assert await api_status(gw, "127.0.0.2") == 200
            files = gateway_files(
                tmp_path,
                api_upstream=backend,
                allowlists=lists(None, ["127.0.0.9"]),
                protection={"enabled": False},
            )
            async with running_gateway(files) as gw:
                assert await api_status(gw, "127.0.0.2") == 200

    async def test_monitor_mode_lets_through_and_audits(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(
                tmp_path,
                api_upstream=backend,
                allowlists=lists(None, ["127.0.0.9"]),
                protection={"enabled": True, "mode": {"dashboard": "enforce", "api": "monitor"}},
            )
            async with running_gateway(files) as gw:
                assert await api_status(gw, "127.0.0.2") == 200
            records = [json.loads(line) for line in files.audit_file.read_text().splitlines()]
            request = [r for r in records if r["event"] == "request"][-1]
            assert request["decision"] == "allow"
            assert request["monitor"] == ["deny:ip_not_allowed"]
            assert request["client_ip"] == "127.0.0.2"

    async def test_denial_is_audited(self, tmp_path):
        files = gateway_files(tmp_path, allowlists=lists(None, ["127.0.0.9"]))
        async with running_gateway(files) as gw:
            assert await api_status(gw, "127.0.0.5") == 403
        await asyncio.sleep(0)
        records = [json.loads(line) for line in files.audit_file.read_text().splitlines()]
        request = [r for r in records if r["event"] == "request"][-1]
        assert request["decision"] == "deny:ip_not_allowed"
        assert request["status"] == 403
        assert request["surface"] == "api" and request["app"] == "protection-api"


class TestForwardedHeaders:
    """Client-supplied address headers choose the client IP only when a trusted proxy sent them."""

    @pytest.mark.parametrize(
        "headers",
        [
            b"X-Forwarded-For: 127.0.0.9\r\n",
            b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 127.0.0.9\r\n",
            b"Forwarded: for=127.0.0.9\r\n",
            b"X-Real-IP: 127.0.0.9\r\n",
            b"Connection: X-Forwarded-For\r\nX-Forwarded-For: 127.0.0.9\r\n",
        ],
    )
    async def test_spoofing_from_untrusted_peer_is_ignored(self, tmp_path, headers):
        files = gateway_files(tmp_path, allowlists=lists(None, ["127.0.0.9"]))
        async with running_gateway(files) as gw:
            request = (
                b"GET /api/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                b"Authorization: Bearer " + api_key("sync").encode() + b"\r\n" + headers + b"\r\n"
            )
            response = await raw_request("127.0.0.1", gw.port, request)
            assert response.startswith(b"HTTP/1.1 403"), response[:200]

    async def test_trusted_proxy_right_most_untrusted(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(
                tmp_path,
                api_upstream=backend,
                allowlists=lists(None, ["198.51.100.7"]),
                extra_config={"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]},
            )
            async with running_gateway(files) as gw, client() as http:
                # the client claims 127.0.0.9 on the left; the proxies appended the real hops
                headers = {**KEY, "X-Forwarded-For": "198.51.100.99, 198.51.100.7, 10.1.2.3"}
                async with http.get(f"{gw.url}/api/x", headers=headers) as r:
                    assert r.status == 200
                    seen = dict((await r.json())["headers"])
                    assert seen["X-Forwarded-For"] == "198.51.100.7"
                headers = {**KEY, "X-Forwarded-For": "198.51.100.7, 203.0.113.5"}
                async with http.get(f"{gw.url}/api/x", headers=headers) as r:
                    assert r.status == 403
