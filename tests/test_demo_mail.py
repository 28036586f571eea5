"""`gateway demo`: a newcomer toggles protection in the demo's YAML and sees the mail arrive on
the demo dashboard's mailbox page (the demo's own local SMTP sink)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from tests.factories import free_port
from tests.web.test_signin import Form


async def test_toggle_protection_and_read_the_mail(tmp_path: Path) -> None:
    port = free_port()
    output = tmp_path / "demo.log"  # a file, not a pipe: a full pipe would stall the demo
    with output.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--port",
            str(port),
            cwd=tmp_path,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            for _ in range(300):
                assert proc.returncode is None, output.read_text()[-3000:]
                try:
                    async with http.get(f"{base}/_gateway/login") as r:
                        token = Form(await r.text()).csrf
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the demo did not answer in 30 s")
            password = (tmp_path / ".demo" / "credentials.txt").read_text().split("bob: ")[1]
            form = {"username": "bob", "password": password.split()[0], "csrf_token": token}
            async with http.post(f"{base}/_gateway/login", data=form) as r:
                assert r.status == 200 and "Demo dashboard" in await r.text()

            access = tmp_path / ".demo" / "policies" / "access.yaml"
            access.write_text(
                access.read_text().replace(
                    "protection: {enabled: true", "protection: {enabled: false"
                )
            )
            for _ in range(300):
                async with http.get(f"{base}/mail") as r:
                    page = await r.text()
                if "Policy changed" in page:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("no mail on the demo's mailbox page within 30 s")
        assert "Policy changed: Global protection turned OFF" in page
        assert "alice@example.com" in page
        assert f"Open: {base}/_gateway/admin/" in page
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 60)  # a bound for a loaded machine
    banner = output.read_text()
    assert f"Mailbox       {base}/mail" in banner
