"""`gateway demo` shows a security incident out of the box: bob signed in from two countries
through the trusted proxy header (the bundled GeoIP table places the addresses), and alice, the
demo's admin, sees the banner, the incident and "Mark as safe" right after her first sign-in."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pyotp

from gateway.cli import main
from tests.factories import free_port
from tests.web.test_signin import Form


async def first_sign_in_as_alice(http: aiohttp.ClientSession, base: str, password: str) -> None:
    """Password, then the 2FA enrollment the demo enforces for admins, as a newcomer does."""
    async with http.get(f"{base}/_gateway/login") as r:
        token = Form(await r.text()).csrf
    form = {"username": "alice", "password": password, "next": "/", "csrf_token": token}
    async with http.post(f"{base}/_gateway/login", data=form) as r:
        enroll = Form(await r.text())  # redirected to 2fa/enroll
    assert enroll.totp_secret, "the enrollment page shows the secret"
    code = pyotp.TOTP(enroll.totp_secret).now()
    data = {"code": code, "csrf_token": enroll.csrf}
    async with http.post(f"{base}/_gateway/2fa/enroll", data=data) as r:
        assert r.status == 200 and Form(await r.text()).recovery_codes
    async with http.get(f"{base}/_gateway/2fa/continue") as r:
        assert r.status == 200


async def test_the_demo_opens_an_incident_once(tmp_path: Path, capsys) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", "--port", str(port),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                assert proc.returncode is None, await proc.stdout.read()  # type: ignore[union-attr]
                try:
                    async with http.get(f"http://127.0.0.1:{port}/_gateway/healthz") as r:
                        if (
                            r.status == 200
                            and (tmp_path / ".demo/state/demo-incident-seeded").exists()
                        ):
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the demo did not seed its incident in 30 s")
        base = f"http://127.0.0.1:{port}"
        credentials = (tmp_path / ".demo" / "credentials.txt").read_text()
        password = credentials.split("alice: ", 1)[1].split()[0]
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            await first_sign_in_as_alice(http, base, password)
            async with http.get(f"{base}/_gateway/admin/") as r:
                home = await r.text()
            assert "New security incidents detected: 1 open incident." in home
            async with http.get(f"{base}/_gateway/admin/users/bob") as r:
                bob = await r.text()
            assert "Mark as safe" in bob and "193.0.6.139" in bob and "202.12.29.205" in bob
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
    banner = (await proc.stdout.read()).decode()  # type: ignore[union-attr]
    assert "bob signs in from two countries" in banner
    assert "Demo incident: bob signed in from the Netherlands and Australia." in banner

    config = ["--config", str(tmp_path / ".demo" / "gateway.yaml")]
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["incidents", "--open", *config]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 and rows[1].split()[:4] == ["1", "open", "bob", "AU,NL"]
    assert await asyncio.to_thread(main, ["logins", "bob", *config]) == 0
    logins = capsys.readouterr().out
    assert "193.0.6.139    NL" in logins and "202.12.29.205  AU" in logins
