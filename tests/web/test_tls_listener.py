"""TLS on the gateway's own port, through `gateway run` (uvloop): both sides of the front see
the connection as https: the api request it serves itself, and the sign-in page it hands to
aiohttp."""

from __future__ import annotations

import ssl

import aiohttp

from tests.factories import api_key, gateway_files, gateway_process, recording_backend
from tests.mail import self_signed


async def test_both_sides_of_the_front_see_https(tmp_path):
    cert, key = self_signed(tmp_path / "tls")
    trust = ssl.create_default_context(cafile=str(cert))
    async with recording_backend() as (backend, seen):
        files = gateway_files(
            tmp_path / "gw",
            api_upstream=backend,
            dashboard_upstream=backend,
            extra_config={"tls": {"cert": str(cert), "key": str(key)}},
        )
        async with (
            gateway_process(files, trust=trust) as (url, _proc),
            aiohttp.ClientSession() as http,
        ):
            # served by the front: the upstream hears that the client used https
            key_header = {"Authorization": f"Bearer {api_key('sync')}"}
            async with http.get(f"{url}/api/items", headers=key_header, ssl=trust) as r:
                assert r.status == 200 and await r.text() == "ok"
                assert r.headers["Server"] == "gateway"
            assert seen[-1].headers["x-forwarded-proto"] == "https"
            # handed to aiohttp: its cookies get the names and attributes only TLS allows
            async with http.get(f"{url}/_gateway/login", ssl=trust) as r:
                assert r.status == 200
                cookies = r.headers.getall("Set-Cookie")
            assert any(c.startswith("__Host-gateway_csrf=") and "Secure" in c for c in cookies)
