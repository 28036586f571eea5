"""A real cluster for the tests: scripts/cluster.sh starts N `gateway run` processes and nginx
in front, on the machine's PostgreSQL (a schema of the test's own) and Redis (a key prefix of
the test's own, or a redis-server of the test's own), with a config the test writes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.factories import GatewayFiles, echo_app, gateway_files, serve
from tests.redis_server import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster.sh"
POSTGRES = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Node:
    """What the sign-in helpers need of a gateway: its base URL and its files."""

    url: str
    files: GatewayFiles


@dataclass
class Cluster:
    dir: Path
    files: GatewayFiles
    url: str  # nginx
    nodes: list[Node]  # each instance directly

    def pid(self, i: int) -> int:
        return int((self.dir / "run" / f"gateway-{i + 1}.pid").read_text())

    def kill(self, i: int) -> None:
        os.kill(self.pid(i), signal.SIGKILL)

    def audit(self) -> list[dict[str, Any]]:
        """Every record of the cluster's audit file (each instance writes its own chain)."""
        path = self.dir / "audit" / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line]

    @property
    def lb(self) -> Node:
        return Node(self.url, self.files)


def _psql(sql: str) -> None:
    subprocess.run(["psql", POSTGRES, "-q", "-c", sql], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def echo_backend() -> Iterator[str]:
    """The factories' echo backend on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    started: list[str] = []
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        async with serve(echo_app()) as url:
            started.append(url)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "echo backend did not start"
    try:
        yield started[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def cluster(
    root: Path,
    *,
    backend: str,
    instances: int = 3,
    sessions: str | None = None,
    **files_options: Any,
) -> Iterator[Cluster]:
    """Start a cluster with its own PostgreSQL schema and Redis key prefix; stop and clean up."""
    schema = f"c_{secrets.token_hex(6)}"
    prefix = f"gwtest:{schema}:"
    sessions = sessions or REDIS_URL
    separator = "&" if "?" in POSTGRES else "?"
    state = f"{POSTGRES}{separator}search_path={schema}"
    _psql(f"CREATE SCHEMA {schema}")
    config = {
        "state": state,
        "sessions": {"store": sessions, "key_prefix": prefix},
        "trusted_proxies": ["127.0.0.1/32"],
        "secret_key_file": "../state/gateway.key",
        "audit": {"path": "../audit/audit.jsonl"},
    }
    config.update(files_options.pop("extra_config", {}))
    files = gateway_files(
        root / "config", dashboard_upstream=backend, extra_config=config, **files_options
    )
    command = [str(SCRIPT), "--dir", str(root), "--instances", str(instances), "--port", "0"]
    try:
        done = subprocess.run(
            [*command, "--state", state, "--sessions", sessions],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr + _logs(root)
        url = done.stdout.strip().splitlines()[-1].rstrip("/")
        run = root / "run"
        ports = [(run / f"gateway-{i + 1}.port").read_text().strip() for i in range(instances)]
        nodes = [Node(f"http://127.0.0.1:{p}", files) for p in ports]
        yield Cluster(root, files, url, nodes)
    finally:
        subprocess.run([*command, "--stop"], capture_output=True, timeout=120, check=False)
        _psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        client = redis.Redis.from_url(sessions)
        with contextlib.suppress(redis.RedisError):
            keys = list(client.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                client.delete(*keys)
        client.close()


async def audit_verify(files: GatewayFiles) -> subprocess.CompletedProcess[str]:
    """`gateway audit verify` of the cluster's trail, against the heads in its state store."""
    import sys

    command = [sys.executable, "-m", "gateway", "audit", "verify", "--config"]
    return await asyncio.to_thread(
        subprocess.run,
        [*command, str(files.config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _logs(root: Path) -> str:
    out = []
    for path in sorted((root / "log").glob("*.log")):
        out.append(f"--- {path.name}\n{path.read_text()[-3000:]}")
    return "\n".join(out)
