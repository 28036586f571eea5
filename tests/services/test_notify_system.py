"""System messages (section 7.3): each condition raised once (audited, mailed once), cleared,
and mailed again only when it comes back; the ones about mail and the store are never mailed."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.policy.source import PolicyHolder, load
from gateway.services.audit import AuditLog
from gateway.services.notify import Notifier, SystemMessages
from gateway.services.notify.sender import Sender
from gateway.services.store import StateStore
from tests.factories import free_port
from tests.mail import self_signed
from tests.services.test_notify_sender import KEY, audit_records, snapshot_for


def holder_for(tmp_path: Path, **config: object) -> PolicyHolder:
    snapshot = snapshot_for(tmp_path, free_port())
    files_config = snapshot.paths.config_file
    text = files_config.read_text()
    import yaml

    data = yaml.safe_load(text)
    data.update(config)
    files_config.write_text(yaml.safe_dump(data))
    result = load(files_config)
    assert result.snapshot is not None, [str(p) for p in result.report.problems]
    return PolicyHolder(files_config, result.snapshot)


async def pending_kinds(store: StateStore) -> list[str]:
    return [r.kind for r in await store.outbox_list("pending", 50)]


class TestConditions:
    """Certificates, GeoIP age and SMTP trouble become messages with what to do."""

    async def test_tls_certificate_expiring_within_14_days(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        cert, key = self_signed(tmp_path / "tls", days=3)
        holder = holder_for(tmp_path, tls={"cert": str(cert), "key": str(key)})
        async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
            system = SystemMessages(holder, store, audit, Notifier(store), None)
            await system.evaluate()
            await system.evaluate()  # still true: not mailed again
        [shown] = system.shown()
        assert shown["key"] == "tls_certificate"
        assert "expires in 2 days" in str(shown["text"]) or "expires in 3 days" in str(
            shown["text"]
        )
        assert await pending_kinds(store) == ["system.message"]
        [raised] = audit_records(tmp_path / "a.jsonl", "system.message")
        assert (raised["condition"], raised["state"], raised["mailed"]) == (
            "tls_certificate",
            "raised",
            True,
        )

    async def test_old_geoip_database_raise_clear_raise(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        database = tmp_path / "GeoLite2-Country.mmdb"
        database.write_bytes(b"not read here")
        old = time.time() - 61 * 86400
        import os

        os.utime(database, (old, old))
        holder = holder_for(tmp_path, geoip={"database": str(database)})
        async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
            system = SystemMessages(holder, store, audit, Notifier(store), None)
            await system.evaluate()
            os.utime(database)  # updated: the condition clears
            await system.evaluate()
            assert system.shown() == []
            os.utime(database, (old, old))  # and comes back: mailed again
            await system.evaluate()
        states = [r["state"] for r in audit_records(tmp_path / "a.jsonl", "system.message")]
        assert states == ["raised", "cleared", "raised"]
        assert await pending_kinds(store) == ["system.message", "system.message"]

    async def test_smtp_failing_is_shown_never_mailed(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        holder = holder_for(tmp_path)
        async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
            sender = Sender(store, audit, lambda: holder.current)
            sender.failing_since = time.time() - 11 * 60
            sender.last_error = "SMTPConnectError: connection refused"
            system = SystemMessages(holder, store, audit, Notifier(store), sender)
            await system.evaluate()
        [shown] = system.shown()
        assert shown["key"] == "smtp_failing" and shown["mailed"] is False
        assert "failing for 11 minutes" in str(shown["text"])
        assert await pending_kinds(store) == []
        assert await store.system_messages() == []

    async def test_several_processes_mail_once(self, tmp_path: Path, store: StateStore) -> None:
        cert, key = self_signed(tmp_path / "tls", days=1)
        holder = holder_for(tmp_path, tls={"cert": str(cert), "key": str(key)})
        async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
            for _process in range(3):
                await SystemMessages(holder, store, audit, Notifier(store), None).evaluate()
        assert await pending_kinds(store) == ["system.message"]
