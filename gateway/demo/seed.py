"""The demo's security incident, out of the box: bob signs in from two countries.

The demo gateway trusts this machine as a proxy, so two ordinary sign-ins over HTTP that carry
`X-Forwarded-For` with two public addresses (that the bundled GeoIP table places in the
Netherlands and in Australia) go through the real sign-in path: recorded, judged, an incident
opened, audited and mailed to the demo's mailbox. Done once per demo folder (a marker file in
its state folder); delete .demo to see it again.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.web.csrf import FIELD as CSRF_FIELD

# Public addresses with a stable registration (RIPE NCC and APNIC's own networks), allowed on
# the demo's dashboard allowlist so the seeded sign-ins get through.
SIGN_INS = (
    ("193.0.6.139", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/130.0 [demo: Amsterdam]"),
    ("202.12.29.205", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5) Safari/604.1 [demo: Brisbane]"),
)
USER = "bob"
MARKER = "demo-incident-seeded"


async def seed_incident(gateway_url: str, state_dir: Path, password: str) -> bool:
    """Sign bob in from both addresses unless done before; True when it was done now."""
    if _done(state_dir):
        return False
    for ip, agent in SIGN_INS:
        await _sign_in(gateway_url, ip, agent, password)
    _mark_done(state_dir)
    return True


async def _sign_in(gateway_url: str, ip: str, agent: str, password: str) -> None:
    headers = {"X-Forwarded-For": ip, "User-Agent": agent}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(headers=headers, cookie_jar=jar) as http:
        async with http.get(f"{gateway_url}/_gateway/login") as r:
            page = await r.text()
        token = page.split(f'name="{CSRF_FIELD}" value="', 1)[1].split('"', 1)[0]
        form = {"username": USER, "password": password, "next": "/", CSRF_FIELD: token}
        login = f"{gateway_url}/_gateway/login"
        async with http.post(login, data=form, allow_redirects=False) as r:
            if r.status != 302:
                raise RuntimeError(f"demo sign-in from {ip} answered {r.status}")


def _done(state_dir: Path) -> bool:
    return (state_dir / MARKER).exists()


def _mark_done(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / MARKER).write_text("bob signed in from NL and AU; delete .demo to redo\n")
