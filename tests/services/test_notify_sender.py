"""The sender task with a real store and a real SMTP server on loopback: every notice arrives,
none twice, digests instead of floods, across SMTP outages, restarts, refusals and leases."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.policy.snapshot import Snapshot
from gateway.policy.source import load
from gateway.services.audit import AuditLog
from gateway.services.notify import Notifier, Sender
from gateway.services.store import StateStore
from tests.factories import free_port, gateway_files, password_hash, written_records
from tests.mail import FaultyHandler, MailSink, outbox_settled, sink, wait_async, wait_for
from tests.services.conftest import StoreBackend

KEY = b"notify-test-key-0123456789abcdef"
ADMINS = {
    "alice": {"email": "alice@example.com", "password_hash": password_hash(), "admin": True},
    "carol": {"email": "carol@example.com", "password_hash": password_hash(), "admin": True},
    "bob": {"email": "bob@example.com", "password_hash": password_hash()},
}
for _n in range(4):
    ADMINS[f"user{_n}"] = {"password_hash": password_hash()}


def snapshot_for(tmp_path: Path, smtp_port: int, *, coalesce: str = "2s", **smtp: Any) -> Snapshot:
    files = gateway_files(
        tmp_path,
        users=ADMINS,
        security={"two_factor": {"enforce": "none"}, "notifications": {"coalesce": coalesce}},
        extra_config={
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp_port,
                "from": "gateway@example.com",
                "timeout": "1s",
                "retry_max": "0.3s",
                **smtp,
            },
            "public_url": "https://dash.example.com",
        },
    )
    result = load(files.config_file)
    assert result.snapshot is not None, [str(p) for p in result.report.problems]
    return result.snapshot


def audit_records(path: Path, event: str) -> list[dict[str, Any]]:
    return [r for r in written_records(path) if r["event"] == event]


@contextlib.asynccontextmanager
async def running_sender(
    store: StateStore, snapshot: Snapshot, audit: AuditLog
) -> AsyncIterator[Sender]:
    sender = Sender(store, audit, lambda: snapshot, poll_interval=0.05)
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def digest_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("- ")]


class TestDelivery:
    """One notice, one mail: text and HTML, subject, link, Message-ID, audited without body."""

    async def test_a_failed_sign_in_mail(self, tmp_path: Path, store: StateStore) -> None:
        with sink() as server:
            snapshot = snapshot_for(tmp_path, server.port)
            async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
                notifier = Notifier(store)
                await notifier.login_failed(snapshot, "bob", "203.0.113.9", "FR", "wrong password")
                async with running_sender(store, snapshot, audit):
                    await wait_for(lambda: len(server.received) == 1)
                    await wait_async(lambda: outbox_settled(store))
            [mail] = server.received
        assert set(mail.rcpt_tos) == {"alice@example.com", "carol@example.com"}
        assert mail.subject == "[gateway] Failed sign-in for bob from 203.0.113.9 (FR)"
        text, html = mail.part("plain"), mail.part("html")
        assert "When: " in text and " UTC" in text
        assert "What to do:" in text
        assert "https://dash.example.com/_gateway/admin/users/bob" in text
        assert "<table>" in html and "203.0.113.9 (FR)" in html
        assert mail.message["Auto-Submitted"] == "auto-generated"
        assert re.fullmatch(r"<gateway\.\d+\.\d+@example\.com>", mail.message_id)
        [sent] = audit_records(tmp_path / "a.jsonl", "notification.sent")
        assert sent["kind"] == "login.failure" and sent["message_id"] == mail.message_id
        assert sent["recipients"] == ["alice@example.com", "carol@example.com"]
        assert "203.0.113.9" not in (tmp_path / "a.jsonl").read_text()  # never the body

    async def test_4xx_then_success(self, tmp_path: Path, store: StateStore) -> None:
        handler = FaultyHandler()
        handler.temporary_data = 2
        with sink(handler=handler) as server:
            snapshot = snapshot_for(tmp_path, server.port)
            async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
                await Notifier(store).test(snapshot, ["alice@example.com"])
                async with running_sender(store, snapshot, audit):
                    await wait_for(lambda: len(server.received) == 1)
                    await wait_async(lambda: outbox_settled(store))
        assert handler.data_attempts == 3
        [row] = await store.outbox_list("sent", 10)
        assert row.attempts == 3 and row.message_id == server.received[0].message_id
        assert len(audit_records(tmp_path / "a.jsonl", "notification.sent")) == 1

    async def test_5xx_for_one_recipient_the_others_get_it(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        handler = FaultyHandler()
        handler.refuse["carol@example.com"] = "550 5.1.1 No such user"
        with sink(handler=handler) as server:
            snapshot = snapshot_for(tmp_path, server.port)
            async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
                await Notifier(store).incident_opened(snapshot, "bob", ["FR", "BR"], [])
                async with running_sender(store, snapshot, audit):
                    await wait_for(lambda: len(server.received) == 1)
                    await wait_async(lambda: outbox_settled(store))
        assert server.received[0].rcpt_tos == ("alice@example.com",)
        [failed] = audit_records(tmp_path / "a.jsonl", "notification.failed")
        assert failed["recipients"] == ["carol@example.com"]
        assert failed["reply"] == "550 5.1.1 No such user"
        [row] = await store.outbox_list("sent", 10)
        assert row.last_error == "550 5.1.1 No such user"
        assert await store.outbox_list("pending", 10) == []

    async def test_a_notice_no_mail_can_be_made_of_does_not_block_the_rest(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        with sink() as server:
            snapshot = snapshot_for(tmp_path, server.port)
            await store.outbox_add("broken", ["alice@example.com"], {"facts": 5}, time.time())
            await Notifier(store).test(snapshot, ["alice@example.com"])
            async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
                async with running_sender(store, snapshot, audit):
                    await wait_async(lambda: outbox_settled(store))
        assert [m.subject for m in server.received] == [
            "[gateway] Test mail from the access gateway"
        ]
        [failed] = await store.outbox_list("failed", 10)
        assert failed.kind == "broken"


class TestFaults:
    """Outages and restarts delay mail, never lose or repeat it; bursts become digests."""

    async def test_burst_of_200_while_smtp_is_down_then_restart_then_smtp_back(
        self, tmp_path: Path, store_backend: StoreBackend
    ) -> None:
        port = free_port()
        snapshot = snapshot_for(tmp_path, port, coalesce="2s")
        audit_path = tmp_path / "a.jsonl"
        store = await store_backend.open()
        async with AuditLog(audit_path, KEY) as audit:
            notifier = Notifier(store)
            async with running_sender(store, snapshot, audit) as sender:
                for i in range(200):  # SMTP is down for the whole burst
                    user = f"user{i % 4}"
                    await notifier.login_failed(snapshot, user, f"198.51.100.{i % 7}", None, "x")
                await notifier.test(snapshot, ["alice@example.com"])
                await wait_for(lambda: sender.failing_since is not None)
            assert audit_records(audit_path, "notification.sent") == []
        await store.close()  # the gateway stops with mail pending ...

        store = await store_backend.open()  # ... and starts again, SMTP back up
        with MailSink(port) as server:
            async with AuditLog(audit_path, KEY) as audit:
                async with running_sender(store, snapshot, audit):
                    await wait_async(lambda: outbox_settled(store), timeout=30)
                    await asyncio.sleep(0.5)  # anything extra would show up now
            received = server.received
        # every notice arrives, none twice, in a handful of digests (per user: the batch that
        # was retrying when SMTP came back, and at most the windows the burst spanned)
        assert len({m.message_id for m in received}) == len(received)
        counted = sum(len(digest_lines(m.part("plain"))) or 1 for m in received)
        assert counted == 201
        assert len(received) <= 1 + 4 * 3, [m.subject for m in received]
        per_user = {f"user{n}": 0 for n in range(4)}
        for m in received:
            for user in per_user:
                if f" {user} " in m.subject + " ":
                    per_user[user] += len(digest_lines(m.part("plain"))) or 1
        assert per_user == {f"user{n}": 50 for n in range(4)}
        stats = await store.outbox_stats()
        assert (stats.pending, stats.failed, stats.sent) == (0, 0, 201)
        print(f"\nburst of 200 + 1 while SMTP down, restart, SMTP back: {len(received)} mails")

    async def test_a_brute_force_of_1000_sends_a_handful(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        """Bound: one mail at once, then one digest per `coalesce` window while it goes on."""
        coalesce = 5.0
        with sink() as server:
            snapshot = snapshot_for(tmp_path, server.port, coalesce=f"{coalesce}s")
            async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
                notifier = Notifier(store)
                async with running_sender(store, snapshot, audit):
                    started = time.monotonic()
                    await notifier.login_failed(snapshot, "bob", "203.0.113.9", None, "x")
                    await wait_for(lambda: len(server.received) == 1)
                    for i in range(999):
                        await notifier.login_failed(
                            snapshot, "bob", f"203.0.113.{i % 50}", None, "x"
                        )
                    lasted = time.monotonic() - started
                    await wait_async(lambda: outbox_settled(store), timeout=30)
            received = server.received
        first, *digests = received
        assert (
            first.subject == "[gateway] Failed sign-in for bob from 203.0.113.9 (country unknown)"
        )
        # A window's batch that caught a single failure goes out as a plain notice, not a
        # digest of one: count it as one.
        single = re.compile(r"\[gateway\] Failed sign-in for bob from [\d.]+ \(country unknown\)")
        digest = re.compile(r"\[gateway\] \d+ failed sign-ins for bob from \d+ addresses?")
        assert all(single.fullmatch(m.subject) or digest.fullmatch(m.subject) for m in digests)
        counted = [
            1 if single.fullmatch(m.subject) else len(digest_lines(m.part("plain")))
            for m in digests
        ]
        assert sum(counted) == 999
        assert 1 <= len(digests) <= math.ceil(lasted / coalesce) + 1
        print(f"\nbrute force of 1000 in {lasted:.1f} s: {len(received)} mails")

    async def test_concurrent_senders_send_each_notice_once(
        self, tmp_path: Path, store_backend: StoreBackend
    ) -> None:
        with sink() as server:
            snapshot = snapshot_for(tmp_path, server.port)
            stores = [await store_backend.open() for _ in range(3)]
            for i in range(60):
                await Notifier(stores[0]).test(snapshot, [f"r{i}@example.com"])
            async with contextlib.AsyncExitStack() as stack:
                for i, store in enumerate(stores):
                    audit = await stack.enter_async_context(AuditLog(tmp_path / f"a{i}.jsonl", KEY))
                    await stack.enter_async_context(running_sender(store, snapshot, audit))
                await wait_for(lambda: len(server.received) >= 60)
                await asyncio.sleep(0.5)
            recipients = [m.rcpt_tos[0] for m in server.received]
        assert len(recipients) == 60 and len(set(recipients)) == 60
