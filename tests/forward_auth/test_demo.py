"""`gateway demo --forward-auth`: nginx in front, asking the demo gateway (auth_request)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from tests.factories import free_port


async def test_demo_behind_nginx(tmp_path: Path):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--forward-auth",
        "--port",
        str(port),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    banner: list[str] = []
    try:
        assert proc.stdout is not None
        while not any("Press Ctrl-C" in line for line in banner):  # ready: nginx is up
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "".join(banner)
            banner.append(line.decode())
        # Keep reading, so the demo's log lines can never fill the pipe and block it.
        drain = asyncio.create_task(proc.stdout.read())
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                assert proc.returncode is None, "".join(banner)
                try:
                    async with http.get(f"{base}/", allow_redirects=False) as r:
                        status, location = r.status, r.headers.get("Location")
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the demo did not answer through nginx in 30 s")
            assert (status, location) == (302, "/_gateway/login?next=%2F")
            credentials = (tmp_path / ".demo" / "credentials.txt").read_text()
            key = credentials.split("api key: ", 1)[1].split()[0]
            headers = {"Authorization": f"Bearer {key}"}
            async with http.get(f"{base}/api/status", headers=headers) as r:
                assert r.status == 200
                assert r.headers["Server"].startswith("nginx")
            async with http.get(f"{base}/api/status") as r:
                assert r.status == 401
        config = (tmp_path / ".demo" / "gateway.yaml").read_text()
        assert "trusted_proxies: [127.0.0.1/32]" in config
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)
    await drain
    assert any("forward-auth: nginx on" in line for line in banner)
    # nginx went with the demo: nothing listens on the port any more.
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        pass
    else:
        writer.close()
        raise AssertionError("nginx still running after the demo stopped")
