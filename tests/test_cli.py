"""The command line, run as a real process: exit codes, output, and audit verification."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from argon2 import PasswordHasher

from tests.factories import (
    api_key,
    client,
    echo_app,
    gateway_files,
    password_hash,
    running_gateway,
    serve,
)


def gateway(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


PRODUCTION_ALLOWLISTS = {
    "dashboard": {"enabled": True, "entries": [{"ip": "203.0.113.0/24"}]},
    "api": {"enabled": True, "entries": [{"ip": "203.0.113.0/24"}]},
}


LEGAL_CONTACT = {"name": "Dana Ops", "email": "dpo@example.com", "role": "DPO"}
NO_ADVICE = {
    "allowlists": PRODUCTION_ALLOWLISTS,
    "security": {"two_factor": {"enforce": "none"}, "legal_contacts": [LEGAL_CONTACT]},
    "extra_config": {"smtp": {"host": "127.0.0.1", "port": 25, "from": "gw@example.com"}},
}


def production_ready(tmp_path: Path, **overrides):  # type: ignore[no-untyped-def]
    """A deployment `gateway check` has no advice for: allowlists on, a secret key made, mail
    configured and a legal contact set."""
    files = gateway_files(tmp_path, **{**NO_ADVICE, **overrides})
    key = files.root / "state" / "gateway.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text("k" * 43 + "\n")
    key.chmod(0o600)
    return files


class TestCheck:
    """`gateway check`: 0 valid, 1 invalid, 3 valid with warnings; errors name file and line."""

    def test_valid(self, tmp_path):
        files = production_ready(tmp_path)
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "valid: 4 file(s), 2 app(s), 2 user(s), 1 service account(s)" in out.stdout

    def test_invalid(self, tmp_path):
        files = gateway_files(tmp_path)
        files.write_policy("security", "two_factor: {enforce: maybe}\n")
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 1
        assert (
            "security.yaml:1 two_factor.enforce: input should be 'all', 'admins' or 'none'"
            in out.stdout
        )

    def test_an_unreachable_store_is_named_without_its_password(self, tmp_path):
        files = gateway_files(
            tmp_path,
            extra_config={"state": "postgresql://gw:hunter2@127.0.0.1:1/gateway"},
            security={"two_factor": {"enforce": "admins"}},  # `check` then asks the store
        )
        out = gateway("check", "--config", str(files.config_file))
        assert "postgresql://gw:***@127.0.0.1:1/gateway" in out.stdout, out.stdout + out.stderr
        assert "not reachable" in out.stdout
        assert "hunter2" not in out.stdout + out.stderr

    def test_client_ip_lockout_warning(self, tmp_path):
        files = production_ready(tmp_path)
        out = gateway("check", "--config", str(files.config_file), "--client-ip", "192.0.2.7")
        assert out.returncode == 3, out.stdout
        assert "warning: 192.0.2.7 would be locked out of the dashboard surface" in out.stdout
        ok = gateway("check", "--config", str(files.config_file), "--client-ip", "203.0.113.9")
        assert ok.returncode == 0, ok.stdout

    def test_two_factor_without_enrolled_admin_warns(self, tmp_path):
        files = gateway_files(tmp_path, security={"two_factor": {"enforce": "all"}})
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 3
        assert "no gateway admin has enrolled 2FA yet" in out.stdout
        assert "Enforcement stays on" in out.stdout

    def test_production_surprises_each_with_a_fix(self, tmp_path):
        files = gateway_files(tmp_path, users={}, accounts={})
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 3, out.stdout
        assert "warning: both allowlists are disabled" in out.stdout
        assert "set enabled: true" in out.stdout
        assert "warning: no users and no service accounts: nobody can get through" in out.stdout
        assert "warning: no secret key yet" in out.stdout
        assert "several instances would each generate their own" in out.stdout
        assert not (files.root / "state" / "gateway.key").exists()

    def test_no_admin_and_protection_off(self, tmp_path):
        users = {"carol": {"password_hash": password_hash(), "grants": {"console": "viewer"}}}
        files = production_ready(tmp_path, users=users, protection={"enabled": False})
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 3, out.stdout
        assert "warning: protection.enabled is false" in out.stdout
        assert "warning: no user has admin: true" in out.stdout
        assert "both allowlists" not in out.stdout

    def test_secret_key_from_the_environment_is_enough(self, tmp_path):
        files = gateway_files(tmp_path, **NO_ADVICE)
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "check", "--config", str(files.config_file)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GATEWAY_SECRET_KEY": "k" * 43},
        )
        assert out.returncode == 0, out.stdout

    def test_missing_config_file(self, tmp_path):
        out = gateway("check", "--config", str(tmp_path / "nope.yaml"))
        assert out.returncode == 1
        assert "no such file" in out.stderr

    def test_usage_error_exit_2(self):
        assert gateway("check", "--bogus").returncode == 2


class TestExplain:
    """`gateway explain` prints the steps and exits 0 for allow, 1 for deny."""

    def test_allow_and_deny(self, tmp_path):
        files = gateway_files(tmp_path)
        config = str(files.config_file)
        out = gateway(
            "explain",
            "--config",
            config,
            "--surface",
            "api",
            "--ip",
            "127.0.0.1",
            "--account",
            "sync",
            "POST",
            "/api/things",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip().endswith("=> allow")
        assert "roles.writer.allow[0] allows POST /things" in out.stdout
        out = gateway(
            "explain",
            "--config",
            config,
            "--surface",
            "dashboard",
            "--ip",
            "10.1.1.1",
            "--user",
            "bob",
            "DELETE",
            "/reports",
        )
        assert out.returncode == 1
        assert out.stdout.strip().endswith("=> deny:forbidden")


class TestSecretsCommands:
    """hash-password and apikey create print exactly what the policy files need."""

    def test_hash_password_from_stdin(self):
        out = gateway("hash-password", stdin="s3cret pass phrase\n")
        assert out.returncode == 0
        digest = out.stdout.strip()
        assert digest.startswith("$argon2id$") and "\n" not in digest
        assert PasswordHasher().verify(digest, "s3cret pass phrase")

    def test_apikey_create(self):
        out = gateway("apikey", "create", "billing-sync")
        lines = out.stdout.splitlines()
        assert lines[0].startswith("key: ") and lines[1].startswith("key_sha256: ")
        key = lines[0].removeprefix("key: ")
        assert hashlib.sha256(key.encode()).hexdigest() == lines[1].removeprefix("key_sha256: ")
        assert len(key) >= 40


class TestAuditVerify:
    """`gateway audit verify` detects edited, deleted, reordered and truncated trails."""

    async def _trail(self, tmp_path: Path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw, client() as http:
                for i in range(12):
                    headers = {"Authorization": f"Bearer {api_key('sync')}"}
                    async with http.get(f"{gw.url}/api/{i}", headers=headers) as r:
                        assert r.status == 200
        return files

    async def test_untouched_then_tampered(self, tmp_path):
        files = await self._trail(tmp_path)
        config = str(files.config_file)
        path = files.audit_file
        ok = gateway("audit", "verify", "--config", config)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith("ok: ")
        original = path.read_text().splitlines(keepends=True)

        def verify_with(lines: list[str]) -> subprocess.CompletedProcess[str]:
            path.write_text("".join(lines))
            return gateway("audit", "verify", "--config", config)

        edited = list(original)
        record = json.loads(edited[5])
        record["status"] = 500
        edited[5] = json.dumps(record, separators=(",", ":")) + "\n"
        out = verify_with(edited)
        assert out.returncode == 1 and "line 6: " in out.stdout

        out = verify_with(original[:4] + original[5:])
        assert out.returncode == 1 and "missing" in out.stdout

        swapped = list(original)
        swapped[3], swapped[4] = swapped[4], swapped[3]
        out = verify_with(swapped)
        assert out.returncode == 1

        out = verify_with(original[:-3])
        assert out.returncode == 1 and "cut off the end" in out.stdout

        out = verify_with(original)
        assert out.returncode == 0

    async def test_tail(self, tmp_path):
        files = await self._trail(tmp_path)
        out = gateway("audit", "tail", "--config", str(files.config_file), "-n", "3")
        lines = [json.loads(x) for x in out.stdout.splitlines()]
        assert len(lines) == 3 and all("hash" in x for x in lines)


class TestKeys:
    """`gateway keys rotate` publishes a new signing key and retires the old one."""

    def test_rotate_immediately(self, tmp_path):
        files = gateway_files(tmp_path)
        config = str(files.config_file)
        first = gateway("keys", "list", "--config", config)
        assert first.returncode == 0, first.stderr
        assert "no signing keys yet" in first.stdout
        assert gateway("keys", "rotate", "--config", config).returncode == 0
        out = gateway("keys", "rotate", "--immediately", "--config", config)
        assert out.returncode == 0, out.stderr
        lines = [line for line in out.stdout.splitlines() if "EdDSA" in line]
        assert len(lines) == 2
        assert sorted(line.rsplit(" ", 1)[1] for line in lines) == ["active", "retired"]
        assert "signing_key.rotated" in files.audit_file.read_text()


class TestDefaultConfig:
    """Without --config every verb reads config/gateway.yaml from the working directory."""

    def test_each_verb_falls_back_to_the_default_path(self, tmp_path):
        for verb in (["check"], ["audit", "verify"], ["explain", "--ip", "1.2.3.4", "GET", "/"]):
            out = subprocess.run(
                [sys.executable, "-m", "gateway", *verb],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert out.returncode == 1, (verb, out.stderr)
            assert "config/gateway.yaml: no such file" in out.stdout + out.stderr, verb
            assert "Traceback" not in out.stderr
