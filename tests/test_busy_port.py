"""A port that another program holds: `gateway run` (one worker or several) and `gateway demo`
say so in one line and exit 1, instead of a traceback or a supervisor restarting workers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.factories import gateway_files


@pytest.fixture
def busy_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def gateway(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_on_a_busy_port(tmp_path, busy_port, workers):
    files = gateway_files(tmp_path)
    done = gateway(
        "run", "--config", str(files.config_file), "--port", str(busy_port), "--workers", workers
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    failures = [json.loads(line) for line in done.stderr.splitlines() if "listen_failed" in line]
    assert failures, done.stderr[-2000:]
    assert f"127.0.0.1:{busy_port}" in failures[0]["error"]
    assert "already in use" in failures[0]["error"]
    assert "worker_died" not in done.stderr


def test_demo_on_a_busy_port(tmp_path, busy_port):
    done = gateway("demo", "--port", str(busy_port), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "already in use" in line]
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("gateway demo: cannot listen on 127.0.0.1:")
