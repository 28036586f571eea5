"""Redis for the tests: a key prefix of their own on the machine's shared Redis (cleaned up
afterwards), or a separate `redis-server` of their own on a free port (to stop and restart it
without touching the shared one).

The shared server is GATEWAY_TEST_REDIS (default redis://127.0.0.1:6379/0); tests FAIL when it
is unreachable, and when `redis-server` is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from tests.factories import free_port

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@contextlib.asynccontextmanager
async def redis_prefix(url: str = REDIS_URL) -> AsyncIterator[str]:
    """A fresh key prefix on the shared Redis; every key under it is deleted afterwards."""
    prefix = f"gwtest:{secrets.token_hex(6)}:"
    client = aioredis.Redis.from_url(url)
    try:
        try:
            await client.ping()
        except Exception as exc:
            raise AssertionError(f"Redis at {url} is not reachable: {exc!r}") from exc
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@dataclass
class RedisServer:
    """A `redis-server` of the test's own, without persistence (like a typical session cache)."""

    root: Path
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server)"
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "redis-server exited"
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@contextlib.asynccontextmanager
async def redis_server(root: Path, *extra: str) -> AsyncIterator[RedisServer]:
    server = RedisServer(root, extra=extra)
    server.start()
    try:
        await server.wait_ready()
        yield server
    finally:
        server.stop()
