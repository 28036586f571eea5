"""The operator's kit in deploy/ is valid for the real tools that read it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.services.metrics import Metrics

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


def exported_metric_names() -> set[str]:
    """Every series name the gateway's /metrics can carry."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in Metrics().registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def referenced_metrics(expressions: list[str]) -> set[str]:
    return {name for e in expressions for name in re.findall(r"\bgateway_[a-z_]+\b", e)}


class TestPrometheusRules:
    """deploy/prometheus/alerts.yml: valid for promtool, unit-tested, and about real metrics."""

    def test_promtool_check_rules(self):
        done = subprocess.run(
            [tool("promtool"), "check", "rules", "alerts.yml"],
            cwd=DEPLOY / "prometheus",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def test_promtool_unit_tests(self):
        done = subprocess.run(
            [tool("promtool"), "test", "rules", "alerts.test.yml"],
            cwd=DEPLOY / "prometheus",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout

    def test_every_metric_exists(self):
        rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
        expressions = [r["expr"] for g in rules["groups"] for r in g["rules"]]
        used = referenced_metrics(expressions)
        assert used and used <= exported_metric_names(), used - exported_metric_names()

    def test_the_alerts_the_operators_need(self):
        text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
        for alert in (
            "GatewayPolicyRejected",
            "GatewayPolicyReloadFailures",
            "GatewayOutboxStuck",
            "GatewayUpstreamErrors",
            "GatewayHighLatency",
            "GatewayCertificateExpiring",
            "GatewayAuditNotWritable",
        ):
            assert f"alert: {alert}" in text


class TestGrafanaDashboard:
    """deploy/grafana/gateway.json: a dashboard whose panels query real metrics."""

    def test_panels_query_real_metrics(self):
        board = json.loads((DEPLOY / "grafana" / "gateway.json").read_text())
        targets = [t for p in board["panels"] for t in p["targets"]]
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
        used = referenced_metrics([t["expr"] for t in targets])
        assert used and used <= exported_metric_names(), used - exported_metric_names()
