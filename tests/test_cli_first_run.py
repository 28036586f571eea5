"""The command line as a first-time user meets it, run as real processes: read-only verbs create
nothing, missing files and wrong keys get one clear sentence (never a traceback), bad input
to `check` is an error like any other, and the secret-making verbs check what they are given."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from tests.factories import gateway_files, key_sha256
from tests.test_cli import TestAuditVerify, gateway


def created_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def no_traceback(out) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in out.stdout + out.stderr, out.stderr


class TestReadOnlyVerbsCreateNothing:
    """check, explain and audit verify/tail on a fresh folder leave it as they found it."""

    def test_on_a_fresh_folder(self, tmp_path):
        files = gateway_files(tmp_path, security={"two_factor": {"enforce": "all"}})
        before = created_files(tmp_path)
        config = str(files.config_file)
        check = gateway("check", "--config", config)
        assert check.returncode == 3, check.stdout  # still warns: nobody has enrolled 2FA
        assert "no gateway admin has enrolled 2FA yet" in check.stdout
        explain = gateway("explain", "--config", config, "--ip", "127.0.0.1", "GET", "/")
        assert explain.returncode == 1
        for verb in ("verify", "tail"):
            out = gateway("audit", verb, "--config", config)
            assert out.returncode == 1
            assert out.stderr.strip() == (
                f"no audit trail at {files.audit_file} yet: the gateway writes it once it runs"
            )
            no_traceback(out)
        assert created_files(tmp_path) == before

    async def test_verify_without_the_key_creates_none(self, tmp_path):
        files = await TestAuditVerify()._trail(tmp_path)
        key_file = tmp_path / "state" / "gateway.key"
        key_file.unlink()
        out = gateway("audit", "verify", "--config", str(files.config_file))
        assert out.returncode == 1
        assert "the trail can only be verified with the key that wrote it" in out.stderr
        assert not key_file.exists()


class TestAuditVerifyWrongKey:
    """A key that is not the trail's is named as such, not as every line forged."""

    async def test_another_key(self, tmp_path):
        files = await TestAuditVerify()._trail(tmp_path)
        other = base64.urlsafe_b64encode(os.urandom(32)).decode()
        (tmp_path / "state" / "gateway.key").write_text(other + "\n")
        out = gateway("audit", "verify", "--config", str(files.config_file))
        assert out.returncode == 1
        lines = out.stdout.splitlines()
        assert len(lines) == 2, out.stdout
        assert lines[0].startswith("none of the ")
        assert lines[0].endswith(
            "records verifies with this secret key: the key does not match this trail "
            "(check secret_key_file or GATEWAY_SECRET_KEY)"
        )


class TestCheckNeverTracebacks:
    """Whatever the files hold, `gateway check` answers with errors, exit 1."""

    def test_bad_input(self, tmp_path):
        files = gateway_files(tmp_path, dashboard_upstream="http://[::1:3002")
        files.write_policy(
            "bomb",
            "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
        )
        with (tmp_path / "policies" / "huge.yaml").open("wb") as f:
            f.truncate(17 * 1024 * 1024)
        (tmp_path / "policies" / "dir.yaml").mkdir()
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 1
        no_traceback(out)
        assert "apps.console.upstream: 'http://[::1:3002' is not a valid URL" in out.stdout
        # The config is broken, so the policies are not read yet: fix it and check again.
        files.config["apps"]["console"]["upstream"] = "http://127.0.0.1:3002"
        files.write()
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 1
        no_traceback(out)
        assert "bomb.yaml (top level): aliases expand to more than 100,000 values" in out.stdout
        assert "huge.yaml (top level): is 17.0 MiB; files over 16 MiB are refused" in out.stdout
        assert "dir.yaml (top level): is a folder, not a file" in out.stdout


class TestExplainUsage:
    """explain infers the surface from the app; a bad --ip is a usage error."""

    def test_surface_inferred_and_bad_ip(self, tmp_path):
        files = gateway_files(tmp_path)
        config = str(files.config_file)
        out = gateway(
            "explain", "--config", config, "--ip", "127.0.0.1", "--account", "sync", "GET", "/api/x"
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "surface api" in out.stdout and "note:" not in out.stdout
        bad = gateway("explain", "--config", config, "--ip", "300.1.1.1", "GET", "/")
        assert bad.returncode == 2
        assert "argument --ip: '300.1.1.1' is not an IP address" in bad.stderr
        no_traceback(bad)


class TestSecretsWithPolicy:
    """hash-password checks the policy given with --config; apikey create checks the name."""

    def test_hash_password_refuses_what_the_policy_refuses(self, tmp_path):
        files = gateway_files(tmp_path)
        config = str(files.config_file)
        out = gateway("hash-password", "--config", config, stdin="password\n")
        assert out.returncode == 1 and out.stdout == ""
        assert "refused by the password policy of" in out.stderr
        assert "Use at least 12 characters (this one has 8)." in out.stderr
        out = gateway("hash-password", "--config", config, stdin="Quarry-Marmot-Lantern-93\n")
        assert out.returncode == 0 and out.stdout.startswith("$argon2id$")
        named = gateway(
            "hash-password", "--config", config, "--user", "alice", stdin="alice-Marmot-93-xyz\n"
        )
        assert named.returncode == 1
        assert "Leave your username out of your password." in named.stderr

    def test_apikey_names(self, tmp_path):
        files = gateway_files(tmp_path)
        config = str(files.config_file)
        bad = gateway("apikey", "create", "bad name!")
        assert (
            bad.returncode == 2 and "'bad name!' is not a valid service account name" in bad.stderr
        )
        assert bad.stdout == ""
        for taken in ("sync", "Alice"):
            out = gateway("apikey", "create", taken, "--config", config)
            assert out.returncode == 1 and out.stdout == ""
            assert "is taken" in out.stderr
        out = gateway("apikey", "create", "billing-sync", "--config", config)
        assert out.returncode == 0
        key_line, digest_line = out.stdout.splitlines()
        digest = digest_line.removeprefix("key_sha256: ")
        assert key_sha256(key_line.removeprefix("key: ")) == digest
        assert f'  billing-sync:\n    key_sha256: "{digest}"\n' in out.stderr
