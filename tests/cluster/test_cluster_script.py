"""scripts/cluster.sh as a person runs it: with nothing answering on the PostgreSQL and Redis
ports it starts both (scratch, no persistence), writes the demo config, starts three instances
and nginx, prints the URL; `--stop` stops exactly what it started and nothing else."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.cluster.harness import SCRIPT, Node, _logs
from tests.factories import GatewayFiles, client, free_port
from tests.web.test_signin import PREFIX, fetch, sign_in


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


async def test_start_everything_then_stop_exactly_that(tmp_path) -> None:
    pg_port, redis_port = free_port(), free_port()
    command = [str(SCRIPT), "--dir", str(tmp_path), "--port", "0"]
    ports = ["--pg-port", str(pg_port), "--redis-port", str(redis_port)]
    shared_before = subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True)
    try:
        done = subprocess.run(
            [*command, *ports], capture_output=True, text=True, timeout=180, check=False
        )
        assert done.returncode == 0, done.stderr + _logs(tmp_path)
        url = done.stdout.strip().splitlines()[-1].rstrip("/")
        assert "starting a scratch one" in done.stderr  # PostgreSQL
        assert "starting one without persistence" in done.stderr  # Redis
        assert _listening(pg_port) and _listening(redis_port)
        run = tmp_path / "run"
        pids = {p.name: int(p.read_text()) for p in run.glob("*.pid")}
        assert {"gateway-1.pid", "gateway-2.pid", "gateway-3.pid", "nginx.pid"} <= set(pids)
        assert all(_alive(pid) for pid in pids.values())

        # Sign in through nginx with the demo's viewer, whose password the script wrote down.
        credentials = (tmp_path / "config" / "credentials.txt").read_text()
        password = credentials.split("bob: ", 1)[1].split()[0]
        lb = Node(url, GatewayFiles(tmp_path / "config"))
        async with client() as http:
            assert (await sign_in(http, lb, "bob", password)).status == 302
            for _ in range(3):
                reply = await fetch(http, "GET", f"{url}/")
                assert reply.status == 200 and "bob" in reply.text
            assert (await fetch(http, "GET", f"{url}{PREFIX}/readyz")).status == 200

        again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 1 and "still running" in again.stderr
    finally:
        stop = subprocess.run(
            [*command, "--stop"], capture_output=True, text=True, timeout=120, check=False
        )
    assert stop.returncode == 0, stop.stderr
    assert not any(_alive(pid) for pid in pids.values())
    assert not _listening(pg_port) and not _listening(redis_port)
    assert not list(run.glob("*.pid"))
    # The machine's own Redis was not touched.
    shared_after = subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True)
    assert shared_after.stdout == shared_before.stdout
