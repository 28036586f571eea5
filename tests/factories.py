"""Builders shared by the tests: policy files on disk, a real echo backend, a real gateway.

Everything listens on 127.0.0.1 (or ::1) with an OS-chosen port; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from gateway.app import build_app, initial_holder
from gateway.policy.source import PolicyHolder, load
from gateway.services.passwords import hash_password
from gateway.web.listener import guard_for, start_gateway

PASSWORD = "correct-horse-battery-staple-42"
ROLES = {
    "viewer": {"allow": [{"methods": ["GET", "HEAD"]}]},
    "editor": {"allow": [{"methods": ["*"]}], "deny": [{"path": "/settings/"}]},
    "admin": {"allow": [{"methods": ["*"]}]},
    "writer": {"allow": [{"methods": ["*"]}]},
}


@functools.cache
def password_hash(password: str = PASSWORD) -> str:
    """argon2 is slow on purpose; one hash per distinct password per test run."""
    return hash_password(password)


def api_key(name: str) -> str:
    return f"gwk_test_{name}_key_0123456789abcdef"


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class GatewayFiles:
    """A config folder: gateway.yaml plus policies/*.yaml, written from plain dicts."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def config_file(self) -> Path:
        return self.root / "gateway.yaml"

    @property
    def audit_file(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    def write(self) -> GatewayFiles:
        (self.root / "policies").mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        for name, body in self.policies.items():
            self.write_policy(name, body)
        return self

    def write_policy(self, name: str, body: dict[str, Any] | str) -> None:
        """Atomic replace, as editors that write a temp file and rename do."""
        path = self.root / "policies" / f"{name}.yaml"
        text = body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def written_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a running gateway has finished writing to `path` (the audit file). The
    writer appends while tests read: a last line without its newline is still being written."""
    if not path.exists():
        return []
    text = path.read_bytes()
    return [json.loads(line) for line in text[: text.rfind(b"\n") + 1].splitlines() if line.strip()]


def gateway_files(
    root: Path,
    *,
    dashboard_upstream: str = "http://127.0.0.1:9",
    api_upstream: str = "http://127.0.0.1:9",
    users: dict[str, Any] | None = None,
    accounts: dict[str, Any] | None = None,
    allowlists: dict[str, Any] | None = None,
    protection: dict[str, Any] | None = None,
    security: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    apps: dict[str, Any] | None = None,
) -> GatewayFiles:
    """A typical deployment: `console` (dashboard, /) and `protection-api` (api, /api/)."""
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 8080},
        "prefix": "/_gateway",
        "state": "sqlite:///state/gateway.db",
        "secret_key_file": "state/gateway.key",
        "audit": {"path": "audit/audit.jsonl"},
        "policies": "policies",
        "upstream_timeouts": {"connect": "2s", "read": "5s"},
        "apps": apps
        or {
            "console": {
                "surface": "dashboard",
                "match": {"path": "/"},
                "upstream": dashboard_upstream,
            },
            "protection-api": {
                "surface": "api",
                "match": {"path": "/api/"},
                "upstream": api_upstream,
            },
        },
    }
    config.update(extra_config or {})
    if users is None:
        users = {
            "alice": {
                "email": "alice@example.com",
                "password_hash": password_hash(),
                "admin": True,
                "grants": {"console": "admin"},
            },
            "bob": {
                "email": "bob@example.com",
                "password_hash": password_hash(),
                "grants": {"console": "viewer"},
            },
        }
    if accounts is None:
        accounts = {
            "sync": {
                "key_sha256": key_sha256(api_key("sync")),
                "grants": {"protection-api": "writer"},
            },
        }
    policies = {
        "access": {
            "protection": protection or {"enabled": True},
            "allowlists": allowlists
            or {"dashboard": {"enabled": False}, "api": {"enabled": False}},
        },
        "people": {"users": users, "service_accounts": accounts, "roles": ROLES},
        "security": security or {"two_factor": {"enforce": "none"}},
    }
    return GatewayFiles(root, config, policies).write()


# -- the echo backend --------------------------------------------------------------------------


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        ws = web.WebSocketResponse(protocols=("chat", "echo"))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo:{msg.data}")
            elif msg.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws
    if request.path.startswith(("/download/", "/api/download/")):
        size = int(request.path.rsplit("/", 1)[1])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response
    if request.path.startswith(("/slow/", "/api/slow/")):
        await asyncio.sleep(float(request.path.rsplit("/", 1)[1]))
    received = 0
    digest = hashlib.sha256()
    async for chunk in request.content.iter_any():
        received += len(chunk)
        digest.update(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.split("?", 1)[0],
            "query": request.raw_path.partition("?")[2],
            "headers": [[k, v] for k, v in request.headers.items()],
            "received": received,
            "sha256": digest.hexdigest(),
        },
        headers={"Set-Cookie": "backend=1; Path=/", "X-Backend": "echo"},
    )


def echo_app() -> web.Application:
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


@contextlib.asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run an aiohttp app on a free port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port(host)
    await web.TCPSite(runner, host, port).start()
    try:
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Seen:
    """One request as a backend received it."""

    method: str
    path: str  # raw, with the query
    headers: dict[str, str]  # lower-case names; the last value of a repeated header


@contextlib.asynccontextmanager
async def recording_backend() -> AsyncIterator[tuple[str, list[Seen]]]:
    """A backend that answers "ok" and records what reached it; yields (base URL, records)."""
    seen: list[Seen] = []

    async def handler(request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        seen.append(Seen(request.method, request.raw_path, headers))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve(app) as url:
        yield url, seen


@dataclass
class RunningGateway:
    url: str
    host: str
    port: int
    holder: PolicyHolder
    app: web.Application
    files: GatewayFiles


@contextlib.asynccontextmanager
async def running_gateway(
    files: GatewayFiles,
    host: str = "127.0.0.1",
    *,
    watch_files: bool = True,
    limits: dict[str, Any] | None = None,
) -> AsyncIterator[RunningGateway]:
    """The gateway in this process, behind the production listener; `limits` override the
    listener's (gateway.web.listener.ConnectionGuard), e.g. a short head_timeout."""
    result = load(files.config_file)
    assert result.snapshot is not None, [str(p) for p in result.report.problems]
    holder = initial_holder(files.config_file, result)
    app = build_app(holder, watch_files=watch_files)
    # the production listener (gateway.web.listener): its limits apply in every test
    guard = guard_for(app, **limits) if limits else None
    runner, site = await start_gateway(app, host, 0, guard=guard)
    try:
        url = f"http://{'[' + host + ']' if ':' in host else host}:{site.port}"
        yield RunningGateway(url, host, site.port, holder, app, files)
    finally:
        await runner.cleanup()


def client(local_addr: str | None = None, **kwargs: Any) -> aiohttp.ClientSession:
    """A client session, optionally sending from another loopback address (127.0.0.2 ...)."""
    connector = aiohttp.TCPConnector(
        local_addr=(local_addr, 0) if local_addr else None, force_close=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        **kwargs,
    )


async def raw_request(host: str, port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes exactly as given; read until the server closes or the timeout."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def gateway_process(
    files: GatewayFiles,
    *,
    workers: int = 1,
    port: int | None = None,
    fd_limit: int | None = None,
    trust: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`gateway run` as a real child process; yields (base URL, process) once /healthz answers.
    `fd_limit`: the child's descriptor limit (soft and hard). `trust`: the config listens with
    TLS; the URL is https://localhost:PORT and readiness is checked trusting this context."""
    import resource
    import sys

    def limit_descriptors() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    port = port or free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--config",
        str(files.config_file),
        "--port",
        str(port),
        "--workers",
        str(workers),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=limit_descriptors if fd_limit is not None else None,
    )
    url = f"https://localhost:{port}" if trust else f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                if proc.returncode is not None:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise RuntimeError(f"gateway exited {proc.returncode}: {err.decode()[-2000:]}")
                try:
                    async with http.get(f"{url}/_gateway/readyz", ssl=trust or True) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("gateway did not become ready in 20 s")
        yield url, proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def write_country_mmdb(
    path: Path,
    blocks: dict[str, str],
    *,
    database_type: str = "GeoLite2-Country",
    key: str = "country",
) -> Path:
    """A real MaxMind-format Country database (mmdb-writer) mapping each network to an ISO
    code, written to a temporary name and renamed into place as geoipupdate does."""
    import os

    import netaddr
    from mmdb_writer import MMDBWriter

    writer = MMDBWriter(
        6, database_type, languages=["en"], description="test", ipv4_compatible=True
    )
    for network, iso in blocks.items():
        writer.insert_network(netaddr.IPSet([network]), {key: {"iso_code": iso}})
    tmp = path.with_suffix(".tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)
    return path
