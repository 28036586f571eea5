"""The operator's kit in deploy/ is valid for the real tools that read it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: scripts/system-packages.sh installs it"
    return path


class TestSystemdUnit:
    """deploy/systemd/gateway.service passes `systemd-analyze verify` without a warning."""

    def test_verify(self, tmp_path):
        gateway = Path(sys.executable).with_name("gateway")
        assert gateway.exists()
        unit = (DEPLOY / "systemd" / "gateway.service").read_text()
        assert "/opt/gateway/bin/gateway run" in unit
        (tmp_path / "gateway.service").write_text(
            unit.replace("/opt/gateway/bin/gateway", str(gateway))
        )
        done = subprocess.run(
            [tool("systemd-analyze"), "verify", str(tmp_path / "gateway.service")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "gateway.service" not in done.stderr, done.stderr

    def test_hardening_options_present(self):
        unit = (DEPLOY / "systemd" / "gateway.service").read_text()
        for option in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
            "UMask=0077",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ):
            assert option in unit, option


class TestLogrotate:
    """deploy/logrotate/gateway parses, and never touches the audit trail."""

    def test_debug_run(self, tmp_path):
        conf = (DEPLOY / "logrotate" / "gateway").read_text()
        local = conf.replace("/var/log/gateway", str(tmp_path)).replace("su root root", "")
        (tmp_path / "gateway.log").write_text("{}\n")
        (tmp_path / "audit.jsonl").write_text("{}\n")
        (tmp_path / "conf").write_text(local)
        done = subprocess.run(
            [tool("logrotate"), "-d", "-s", str(tmp_path / "state"), str(tmp_path / "conf")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert "error" not in out.lower(), out
        assert "considering log " + str(tmp_path / "gateway.log") in out
        assert "audit.jsonl" not in out, out
