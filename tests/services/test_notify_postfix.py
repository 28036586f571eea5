"""The notification pipeline against Debian's Postfix: its `smtp-sink` test server (package
postfix, see scripts/system-packages.sh), an SMTP implementation independent of aiosmtpd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.services.audit import AuditLog
from gateway.services.notify import Notifier
from gateway.services.store import StateStore
from tests.factories import free_port
from tests.mail import outbox_settled, wait_async
from tests.services.test_notify_sender import KEY, running_sender, snapshot_for

SMTP_SINK = "/usr/sbin/smtp-sink"


@contextlib.asynccontextmanager
async def postfix_sink(*extra: str) -> AsyncIterator[tuple[int, Path]]:
    """smtp-sink on a free loopback port; yields (port, folder with one file per mail)."""
    assert shutil.which(SMTP_SINK), "Postfix's smtp-sink is missing: run scripts/system-packages.sh"
    # smtp-sink drops to `nobody` when started as root: a folder it can reach and write
    folder = Path(tempfile.mkdtemp(prefix="gateway-smtp-sink-"))
    folder.chmod(0o777)
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = await asyncio.create_subprocess_exec(
        SMTP_SINK,
        *user,
        *extra,
        "-d",
        f"{folder}/%H%M%S.",
        f"127.0.0.1:{port}",
        "10",
    )
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        yield port, folder
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


async def test_a_notice_through_postfix(tmp_path: Path, store: StateStore) -> None:
    async with postfix_sink() as (port, folder):
        snapshot = snapshot_for(tmp_path, port)
        async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
            await Notifier(store).login_failed(snapshot, "bob", "203.0.113.9", "FR", "x")
            async with running_sender(store, snapshot, audit):
                await wait_async(lambda: outbox_settled(store))
        [dump] = list(folder.iterdir())
        text = dump.read_text()
    [row] = await store.outbox_list("sent", 10)
    assert f"Message-ID: {row.message_id}" in text
    assert "Subject: [gateway] Failed sign-in for bob from 203.0.113.9 (FR)" in text
    assert "X-Rcpt-Args: <alice@example.com>" in text and "<carol@example.com>" in text


async def test_postfix_soft_refusal_is_retried_hard_refusal_given_up(
    tmp_path: Path, store: StateStore
) -> None:
    async with postfix_sink("-r", "data") as (port, _):  # 4xx to DATA
        snapshot = snapshot_for(tmp_path, port)
        async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
            await Notifier(store).test(snapshot, ["alice@example.com"])
            async with running_sender(store, snapshot, audit) as sender:
                await wait_async(lambda: _attempted(store, 2))
                assert sender.failing_since is not None
    async with postfix_sink("-f", "rcpt") as (port, _):  # 5xx to RCPT
        snapshot = snapshot_for(tmp_path, port)
        async with AuditLog(tmp_path / "a.jsonl", KEY) as audit:
            async with running_sender(store, snapshot, audit):
                await wait_async(lambda: outbox_settled(store))
    [row] = await store.outbox_list("failed", 10)
    assert row.last_error is not None and row.last_error.startswith("5")


async def _attempted(store: StateStore, times: int) -> bool:
    rows = await store.outbox_list("pending", 10)
    return bool(rows) and rows[0].attempts >= times
