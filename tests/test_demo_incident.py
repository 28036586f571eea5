"""`gateway demo` shows a security incident out of the box: bob signed in from two countries
through the trusted proxy header (the bundled GeoIP table places the addresses)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from gateway.cli import main
from tests.factories import free_port


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
