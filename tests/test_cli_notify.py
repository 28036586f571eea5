"""`gateway notify test`, `gateway outbox`, `gateway retention run`, `gateway audit verify` over
rotated files, and the notification warnings of `gateway check`: the real command line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.factories import gateway_files, password_hash
from tests.mail import FaultyHandler, sink
from tests.test_cli import NO_ADVICE, gateway, production_ready

SMTP = {"host": "127.0.0.1", "from": "gateway@example.com", "timeout": "2s", "retry_max": "1s"}


def with_smtp(tmp_path: Path, port: int, **security: object):  # type: ignore[no-untyped-def]
    return gateway_files(
        tmp_path,
        security={"two_factor": {"enforce": "none"}, **security},
        extra_config={"smtp": {**SMTP, "port": port}},
    )


class TestNotifyTest:
    """A test mail goes out now and says so; a refusal is reported and the exit code is 1."""

    def test_to_every_admin_then_to_an_address(self, tmp_path: Path) -> None:
        with sink() as server:
            files = with_smtp(tmp_path, server.port)
            out = gateway("notify", "test", "--config", str(files.config_file))
            assert out.returncode == 0, out.stdout + out.stderr
            assert out.stdout.startswith("sent: <gateway.")
            assert "to alice@example.com" in out.stdout
            out = gateway(
                "notify", "test", "--to", "ops@example.com", "--config", str(files.config_file)
            )
            assert out.returncode == 0, out.stderr
            got = server.received
        assert [m.rcpt_tos for m in got] == [("alice@example.com",), ("ops@example.com",)]
        assert got[0].subject == "[gateway] Test mail from the access gateway"

    def test_a_refused_recipient_is_given_up_and_listed(self, tmp_path: Path) -> None:
        handler = FaultyHandler()
        handler.refuse["nobody@example.com"] = "550 5.1.1 No such user"
        with sink(handler=handler) as server:
            files = with_smtp(tmp_path, server.port)
            out = gateway(
                "notify", "test", "--to", "nobody@example.com", "--config", str(files.config_file)
            )
        assert out.returncode == 1
        assert out.stdout.startswith("failed: <gateway.") and "550 5.1.1" in out.stdout
        listing = gateway("outbox", "--config", str(files.config_file))
        assert listing.returncode == 0
        assert "pending: 0; given up: 1; sent: 0" in listing.stdout
        assert "failed   test" in listing.stdout and "[550 5.1.1 No such user]" in listing.stdout

    def test_without_smtp(self, tmp_path: Path) -> None:
        files = gateway_files(tmp_path)
        out = gateway("notify", "test", "--config", str(files.config_file))
        assert out.returncode == 1 and "no smtp:" in out.stderr


class TestRetentionRun:
    """`retention run` purges now and `audit verify` still passes over what remains."""

    def test_old_rotated_files_go_and_verify_passes(self, tmp_path: Path) -> None:
        files = gateway_files(tmp_path, security={"retention": {"audit_days": 30}})
        assert gateway("user", "unlock", "bob", "--config", str(files.config_file)).returncode == 0
        audit = files.audit_file
        old_day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).date().isoformat()
        rotated = audit.with_name(f"{audit.name}.{old_day}")
        audit.rename(rotated)  # as the daily rotation would have named it
        assert gateway("user", "unlock", "bob", "--config", str(files.config_file)).returncode == 0
        out = gateway("retention", "run", "--config", str(files.config_file))
        assert out.returncode == 0, out.stderr
        assert f"audit files: 1 removed ({old_day} to {old_day})" in out.stdout
        assert not rotated.exists()
        verify = gateway("audit", "verify", "--config", str(files.config_file))
        assert verify.returncode == 0, verify.stdout


class TestCheckWarnings:
    """`gateway check` exits 3 when notifications cannot reach anyone or no legal contact is set."""

    def test_no_advice_when_mail_and_legal_contacts_are_set(self, tmp_path: Path) -> None:
        out = gateway("check", "--config", str(production_ready(tmp_path).config_file))
        assert out.returncode == 0, out.stdout

    def test_notifications_without_smtp(self, tmp_path: Path) -> None:
        files = production_ready(tmp_path, extra_config={})
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 3
        assert "warning: notifications.enabled is true but gateway.yaml has no smtp:" in out.stdout

    def test_no_admin_email_and_no_legal_contact(self, tmp_path: Path) -> None:
        users = {"root": {"password_hash": password_hash(), "admin": True}}
        files = production_ready(
            tmp_path, users=users, security={"two_factor": {"enforce": "none"}}
        )
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 3
        assert "warning: notifications.enabled is true but no gateway admin has an email" in (
            out.stdout
        )
        assert "warning: no legal_contacts:" in out.stdout

    def test_notifications_off_needs_no_smtp(self, tmp_path: Path) -> None:
        security = {**NO_ADVICE["security"], "notifications": {"enabled": False}}  # type: ignore[dict-item]
        files = production_ready(tmp_path, extra_config={}, security=security)
        out = gateway("check", "--config", str(files.config_file))
        assert out.returncode == 0, out.stdout
