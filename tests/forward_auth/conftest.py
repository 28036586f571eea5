"""Real nginx and Caddy in front of a real gateway and echo backends, all on loopback.

The proxies run the shipped configurations (deploy/forward-auth/) rendered by
gateway.demo.front_proxy with the test's addresses. The gateway trusts 127.0.0.1 only (the
proxies connect from there); test clients connect from 127.0.0.2 and up, so the client IP the
gateway decides on is the one the proxy reports, and a direct call from 127.0.0.5 comes from an
untrusted peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.demo import front_proxy
from tests.factories import (
    GatewayFiles,
    RunningGateway,
    api_key,
    free_port,
    gateway_files,
    key_sha256,
    running_gateway,
    serve,
)
from tests.web.test_signin import counting_echo, quick_hash, quick_users

PROXY_PEER = "127.0.0.1/32"


@dataclass
class Backends:
    console: str
    api: str
    console_hits: list[str]
    api_hits: list[str]

    @property
    def hits(self) -> list[str]:
        """Every request that reached either backend."""
        return self.console_hits + self.api_hits


@dataclass
class Front:
    """A proxy in front of the gateway."""

    url: str
    gateway: RunningGateway
    backends: Backends
    folder: Path

    @property
    def files(self) -> GatewayFiles:
        return self.gateway.files


def users() -> dict[str, Any]:
    people = quick_users()
    people["carol"] = {
        "email": "carol@example.com",
        "password_hash": quick_hash(),
        "grants": {"console": "editor"},
    }
    return people


def accounts() -> dict[str, Any]:
    return {
        "sync": {
            "key_sha256": key_sha256(api_key("sync")),
            "grants": {"protection-api": "writer"},
        },
        "reader": {
            "key_sha256": key_sha256(api_key("reader")),
            "grants": {"protection-api": "viewer"},
        },
    }


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    console, hits = counting_echo()
    api, api_hits = counting_echo()
    async with serve(console) as console_url, serve(api) as api_url:
        yield Backends(console_url, api_url, hits, api_hits)


def forward_auth_files(
    root: Path,
    backends: Backends,
    allowlists: dict[str, Any] | None = None,
    security: dict[str, Any] | None = None,
) -> GatewayFiles:
    return gateway_files(
        root,
        dashboard_upstream=backends.console,
        api_upstream=backends.api,
        users=users(),
        accounts=accounts(),
        allowlists=allowlists,
        security=security,
        extra_config={"trusted_proxies": [PROXY_PEER]},
    )


class PortTaken(RuntimeError):
    """The free port was taken by someone else before the proxy bound it."""


@contextlib.asynccontextmanager
async def process(argv: list[str], port: int, log: Path) -> AsyncIterator[None]:
    """A proxy process; ready once its port accepts connections; ended by its pid."""
    out = log.open("wb")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    out.close()
    try:
        for _ in range(200):
            if proc.returncode is not None:
                text = log.read_text()
                if "address already in use" in text.lower():
                    raise PortTaken(text[-500:])
                raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {text[-2000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            break
        else:
            raise RuntimeError(f"{argv[0]} did not listen in 10 s: {log.read_text()[-2000:]}")
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _hostport(url: str) -> str:
    return url.split("://", 1)[1]


@contextlib.asynccontextmanager
async def _front(
    kind: str, root: Path, backends: Backends, files: GatewayFiles, cache: bool
) -> AsyncIterator[Front]:
    async with running_gateway(files, watch_files=False) as gw:
        folder = root / kind
        for attempt in range(3):  # the machine is shared: a free port may be gone by bind time
            port = free_port()
            addresses = {
                "listen": f"127.0.0.1:{port}",
                "gateway": f"127.0.0.1:{gw.port}",
                "console": _hostport(backends.console),
                "api": _hostport(backends.api),
            }
            if kind == "nginx":
                argv = front_proxy.nginx_argv(
                    front_proxy.render_nginx(folder, **addresses, cache=cache)
                )
            else:
                argv = front_proxy.caddy_argv(front_proxy.render_caddyfile(folder, **addresses))
            try:
                async with process(argv, port, folder / f"{kind}.log"):
                    yield Front(f"http://127.0.0.1:{port}", gw, backends, folder)
                return
            except PortTaken:
                if attempt == 2:
                    raise


@contextlib.asynccontextmanager
async def nginx_front(
    root: Path, backends: Backends, *, cache: bool = False, allowlists: dict[str, Any] | None = None
) -> AsyncIterator[Front]:
    files = forward_auth_files(root / "gw", backends, allowlists)
    async with _front("nginx", root, backends, files, cache) as front:
        yield front


@contextlib.asynccontextmanager
async def caddy_front(
    root: Path, backends: Backends, *, allowlists: dict[str, Any] | None = None
) -> AsyncIterator[Front]:
    files = forward_auth_files(root / "gw", backends, allowlists)
    async with _front("caddy", root, backends, files, False) as front:
        yield front
