"""deploy/kubernetes and deploy/compose, checked offline (no cluster or container engine here):
the manifests against the Kubernetes schemas (kubernetes-validate), the compose file against the
Compose specification (check-jsonschema's vendored copy), the gateway config and policies they
carry against the gateway's own schemas, and the compose nginx.conf with `nginx -t`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.factories import free_port

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes" / "gateway.yaml"
COMPOSE = ROOT / "deploy" / "compose"
BIN = Path(sys.executable).parent


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=120, check=False
    )


def _schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((ROOT / "schema" / name).read_text()))


def _kube_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(KUBE.read_text()) if d]


class TestKubernetes:
    def test_manifests_are_valid_kubernetes(self) -> None:
        done = _run(BIN / "kubernetes-validate", "--strict", "-k", "1.30.0", KUBE)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("passed for resource") == 6, done.stdout

    def test_a_typo_is_caught(self, tmp_path: Path) -> None:
        """The validator really checks (strict: unknown fields are errors)."""
        broken = tmp_path / "broken.yaml"
        broken.write_text(KUBE.read_text().replace("readinessProbe:", "readinesProbe:"))
        done = _run(BIN / "kubernetes-validate", "--strict", "-k", "1.30.0", broken)
        assert done.returncode != 0
        assert "readinesProbe" in done.stdout + done.stderr

    def test_what_the_issue_asks_for(self) -> None:
        kinds = {d["kind"]: d for d in _kube_docs()}
        assert set(kinds) == {
            "ConfigMap",
            "Secret",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
        }
        pod = kinds["Deployment"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/_gateway/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/_gateway/healthz"
        assert kinds["Deployment"]["spec"]["replicas"] == 3
        assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 2

    def test_config_and_policies_match_the_gateway_schemas(self) -> None:
        maps = {d["metadata"]["name"]: d["data"] for d in _kube_docs() if d["kind"] == "ConfigMap"}
        config = yaml.safe_load(maps["gateway-config"]["gateway.yaml"])
        _schema("gateway.schema.json").validate(config)
        assert config["sessions"]["store"].startswith("redis://")
        assert config["state"].startswith("postgresql://")
        for text in maps["gateway-policies"].values():
            _schema("policy.schema.json").validate(yaml.safe_load(text))


class TestCompose:
    def test_compose_file_matches_the_compose_spec(self) -> None:
        done = _run(
            BIN / "check-jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            COMPOSE / "compose.yaml",
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def test_a_wrong_key_is_caught(self, tmp_path: Path) -> None:
        broken = tmp_path / "compose.yaml"
        broken.write_text((COMPOSE / "compose.yaml").read_text().replace("depends_on:", "depend:"))
        done = _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", broken)
        assert done.returncode != 0

    def test_three_gateways_behind_nginx(self) -> None:
        compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
        services = compose["services"]
        assert {"postgres", "redis", "nginx", "gateway-1", "gateway-2", "gateway-3"} <= set(
            services
        )
        audits = {s["volumes"][-1] for n, s in services.items() if n.startswith("gateway-")}
        assert len(audits) == 3  # each instance its own audit trail
        config = yaml.safe_load((COMPOSE / "gateway.yaml").read_text())
        _schema("gateway.schema.json").validate(config)
        nginx_ip = services["nginx"]["networks"]["default"]["ipv4_address"]
        assert config["trusted_proxies"] == [f"{nginx_ip}/32"]

    def test_nginx_conf_passes_nginx_t(self, tmp_path: Path) -> None:
        nginx = shutil.which("nginx")
        assert nginx, "nginx is missing: scripts/system-packages.sh installs it"
        conf = (COMPOSE / "nginx.conf").read_text()
        for i in (1, 2, 3):  # the compose service names do not resolve here
            conf = conf.replace(f"gateway-{i}:8080", f"127.0.0.1:{free_port()}")
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
        conf = f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\n" + conf.replace(
            "http {", f"http {{\n    client_body_temp_path {tmp_path}/body;", 1
        )
        (tmp_path / "nginx.conf").write_text(conf)
        done = _run(nginx, "-t", "-e", "stderr", "-p", tmp_path, "-c", tmp_path / "nginx.conf")
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", [KUBE, COMPOSE / "compose.yaml"])
def test_says_it_was_not_run_here(path: Path) -> None:
    assert "not run here" in path.read_text()
