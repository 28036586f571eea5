"""What a burst of sign-in attempts from one address costs everybody else.

A real gateway (in this process, real sockets, production argon2id parameters) gets a burst of
BURST concurrent wrong passwords for unknown names from 127.0.0.2; 50 ms later bob signs in from
127.0.0.3. Measured: bob's sign-in time alone, and during the burst, with

- `fair`: the gateway as it is: hashing on the sign-in guard's pool (as many threads as cores,
  at most 4), one job per client address at a time;
- `unbounded`: the reference, hashing on asyncio's default thread pool as before (every
  attempt hashes at once, so bob's hash shares the cores with the whole burst).

Rows are interleaved round by round; the table shows medians. Run:

    .venv/bin/python bench/signin_burst.py            # ROUNDS=5 BURST=16, about a minute

Everything listens on 127.0.0.1 and every loop is bounded by ROUNDS and BURST.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from gateway.app import build_app, initial_holder
from gateway.policy.source import load
from gateway.services.passwords import hash_password
from gateway.web.resources import SERVICES

ROUNDS = int(os.environ.get("ROUNDS", "5"))
BURST = int(os.environ.get("BURST", "16"))
PASSWORD = "correct-horse-battery-staple-42"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _files(root: Path) -> Path:
    (root / "policies").mkdir(parents=True)
    config = {
        "listen": {"host": "127.0.0.1", "port": 8080},
        "state": "sqlite:///state/gateway.db",
        "secret_key_file": "state/gateway.key",
        "audit": {"path": "audit/audit.jsonl"},
        "policies": "policies",
        "apps": {"console": {"surface": "dashboard", "upstream": "http://127.0.0.1:9"}},
    }
    (root / "gateway.yaml").write_text(yaml.safe_dump(config))
    policy = {
        "users": {"bob": {"password_hash": hash_password(PASSWORD), "grants": {"console": "v"}}},
        "roles": {"v": {"allow": [{"methods": ["GET"]}]}},
        "two_factor": {"enforce": "none"},
        # Enough allowance that every attempt of the burst is really checked.
        "login_regulation": {"max_failures": 10_000, "ip_max_failures": 100_000},
    }
    (root / "policies" / "policy.yaml").write_text(yaml.safe_dump(policy))
    return root / "gateway.yaml"


def _client(address: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _token(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/_gateway/logout") as r:
        text = await r.text()
    return text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


async def _post(http: aiohttp.ClientSession, url: str, form: dict[str, str]) -> int:
    async with http.post(f"{url}/_gateway/login", data=form, allow_redirects=False) as r:
        await r.read()
        return r.status


async def _round(url: str, burst: bool, n: int) -> tuple[float, float]:
    """(bob's sign-in seconds, the burst's seconds or 0)."""
    async with _client("127.0.0.2") as bad, _client("127.0.0.3") as good:
        token, good_token = await _token(bad, url), await _token(good, url)
        tasks = []
        started = time.perf_counter()
        if burst:
            for i in range(BURST):
                form = {"username": f"nobody{n}-{i}", "password": "guess", "csrf_token": token}
                tasks.append(asyncio.create_task(_post(bad, url, form)))
            await asyncio.sleep(0.05)
        form = {"username": "bob", "password": PASSWORD, "csrf_token": good_token}
        t0 = time.perf_counter()
        status = await _post(good, url, form)
        bob = time.perf_counter() - t0
        assert status == 302, status
        await asyncio.gather(*tasks)
        return bob, (time.perf_counter() - started) if burst else 0.0


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = _files(Path(tmp))
        result = load(config)
        assert result.snapshot is not None, [str(p) for p in result.report.problems]
        app = build_app(initial_holder(config, result), watch_files=False)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        guard = app[SERVICES].signin
        fair = guard.hash_work

        async def unbounded(client_ip, fn, *args):  # type: ignore[no-untyped-def]
            return await asyncio.to_thread(fn, *args)

        rows: dict[str, list[tuple[float, float]]] = {
            "alone": [],
            "burst, fair": [],
            "burst, unbounded": [],
        }
        try:
            await _round(url, False, -1)  # warm-up: the dummy hash, the store, the pages
            for n in range(ROUNDS):
                guard.hash_work = fair  # type: ignore[method-assign]
                rows["alone"].append(await _round(url, False, n))
                rows["burst, fair"].append(await _round(url, True, n))
                guard.hash_work = unbounded  # type: ignore[method-assign]
                rows["burst, unbounded"].append(await _round(url, True, n + 1000))
        finally:
            await runner.cleanup()
    print(f"bob's sign-in while {BURST} wrong passwords from one other address are checked")
    print(f"(medians of {ROUNDS} interleaved rounds, {os.cpu_count()} cores)\n")
    print("| hashing | bob's sign-in | burst done after |")
    print("|---|---|---|")
    for name, values in rows.items():
        bob = statistics.median(v[0] for v in values)
        burst = statistics.median(v[1] for v in values)
        print(
            f"| {name} | {bob * 1000:.0f} ms | {burst * 1000:.0f} ms |"
            if burst
            else f"| {name} | {bob * 1000:.0f} ms | - |"
        )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
