"""The sender task: takes due notifications from the outbox and mails them (section 7.2).

Each process runs one. A claim leases a due group (one notification, or every due row of one
coalesce key: a digest) to this process, so with several processes or instances on one store
each notification is sent by one of them. A process killed mid-send leaves its lease to run
out; another process then sends the rows again, with the same Message-ID, so a copy that did
get through the first time is recognisable.

Per group: connection trouble, TLS, AUTH or 4xx -> retry later with exponential backoff and
jitter (never given up: an outage delays mail, never loses it); 5xx for a recipient -> that
recipient is given up (`notification.failed`), the others still get it; each delivery is
audited as `notification.sent` with kind, recipients and Message-ID, never the body. Nothing
the sender audits is ever mailed (mail about mail never triggers mail).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from gateway.policy.schema import Smtp
from gateway.policy.snapshot import Snapshot
from gateway.services.notify.mailer import (
    Mailer,
    MailPermanentError,
    MailTemporaryError,
    SmtpMailer,
)
from gateway.services.notify.messages import build_message, compose, message_id
from gateway.services.store import OutboxRecord, StateStore, StoreError

if TYPE_CHECKING:
    from gateway.services.audit import AuditLog
    from gateway.services.metrics import Metrics

log = structlog.get_logger("gateway.notify")

RETRY_INITIAL = 5.0
POLL_INTERVAL = 1.0
STATS_INTERVAL = 10.0


def public_base(snapshot: Snapshot) -> str | None:
    url = snapshot.config.public_url
    return None if url is None else url.rstrip("/") + snapshot.prefix


def lease_for(smtp: Smtp) -> float:
    """Long enough for one send (connect, TLS, AUTH, envelope, data) to finish or time out."""
    return max(5.0, 4 * smtp.timeout)


class Sender:
    def __init__(
        self,
        store: StateStore,
        audit: AuditLog,
        snapshot: Callable[[], Snapshot],
        *,
        metrics: Metrics | None = None,
        mailer: Mailer | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.store = store
        self.audit = audit
        self.snapshot = snapshot
        self.metrics = metrics
        self.clock = clock
        self.poll_interval = poll_interval
        self.owner = f"{secrets.token_hex(6)}"
        self.failing_since: float | None = None  # first temporary failure since the last success
        self.last_error: str | None = None
        self._fixed_mailer = mailer
        self._mailer: tuple[Smtp, Mailer] | None = None
        self._wake = asyncio.Event()
        self._last_stats = 0.0

    def wake(self) -> None:
        self._wake.set()

    def _mailer_for(self, snapshot: Snapshot) -> Mailer | None:
        if self._fixed_mailer is not None:
            return self._fixed_mailer
        smtp = snapshot.config.smtp
        if smtp is None:
            return None
        if self._mailer is None or self._mailer[0] != smtp:
            self._mailer = (smtp, SmtpMailer(smtp, snapshot.paths.config_dir))
        return self._mailer[1]

    async def run(self) -> None:
        """Send what is due, then wait for a wake-up (a local enqueue) or the poll interval."""
        while True:
            try:
                sent = 0
                while await self.send_one():
                    sent += 1
                await self._update_stats(force=sent > 0)
            except StoreError as exc:
                log.error("outbox_unavailable", error=str(exc))
            except Exception:
                log.exception("sender_error")
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def send_one(self) -> bool:
        """Claim and handle one due group; False when nothing was due."""
        snapshot = self.snapshot()
        mailer = self._mailer_for(snapshot)
        if mailer is None:
            return False
        smtp = snapshot.config.smtp
        sender = smtp.sender if smtp is not None else "gateway@localhost"
        lease = lease_for(smtp) if smtp is not None else 60.0
        rows = await self.store.outbox_claim(self.owner, self.clock(), lease)
        if not rows:
            return False
        await self._deliver(rows, mailer, sender, snapshot)
        return True

    async def _deliver(
        self, rows: list[OutboxRecord], mailer: Mailer, sender: str, snapshot: Snapshot
    ) -> None:
        ids = [r.id for r in rows]
        kind = rows[0].kind
        recipients = sorted({r for row in rows for r in row.recipients})
        mid = message_id(rows, sender)
        try:
            mail = compose(rows, public_base(snapshot))
            message = build_message(
                mail, sender=sender, recipients=recipients, message_id=mid, at=self.clock()
            )
        except Exception as exc:  # a row no mail can be made of must not block the outbox
            log.exception("notification_unrenderable", kind=kind, ids=ids)
            await self.store.outbox_finish(ids, self.owner, "failed", self.clock(), mid, repr(exc))
            self._audit_failed(kind, rows, recipients, mid, "could not be rendered")
            return
        try:
            delivery = await mailer.send(message, recipients)
        except MailTemporaryError as exc:
            await self._retry(rows, str(exc), None)
            return
        except MailPermanentError as exc:
            await self.store.outbox_finish(ids, self.owner, "failed", self.clock(), mid, str(exc))
            self._audit_failed(kind, rows, recipients, mid, str(exc))
            self._succeeded()  # the server answered: SMTP itself works
            return
        self._succeeded()
        if delivery.accepted:
            self.audit.record(
                "notification.sent",
                flush=True,
                kind=kind,
                recipients=delivery.accepted,
                message_id=mid,
                notifications=len(rows),
            )
            if self.metrics is not None:
                self.metrics.notifications_sent.labels(kind).inc()
        for recipient, reply in delivery.permanent.items():
            self._audit_failed(kind, rows, [recipient], mid, reply)
        if delivery.temporary:
            await self._retry(
                rows, "; ".join(delivery.temporary.values()), sorted(delivery.temporary)
            )
            return
        state = "sent" if delivery.accepted else "failed"
        error = "; ".join(delivery.permanent.values()) or None
        await self.store.outbox_finish(ids, self.owner, state, self.clock(), mid, error)

    def _audit_failed(
        self, kind: str, rows: list[OutboxRecord], recipients: list[str], mid: str, reply: str
    ) -> None:
        self.audit.record(
            "notification.failed",
            flush=True,
            kind=kind,
            recipients=recipients,
            message_id=mid,
            notifications=len(rows),
            reply=reply,
        )
        if self.metrics is not None:
            self.metrics.notifications_failed.labels(kind).inc()

    async def _retry(
        self, rows: list[OutboxRecord], error: str, recipients: list[str] | None
    ) -> None:
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
            log.warning("smtp_failing", error=error)
        self.last_error = error
        smtp = self.snapshot().config.smtp
        ceiling = smtp.retry_max if smtp is not None else 600.0
        attempts = max(r.attempts for r in rows)
        delay = min(ceiling, RETRY_INITIAL * 2**attempts)
        delay = random.uniform(delay / 2, delay)
        await self.store.outbox_retry(
            [r.id for r in rows], self.owner, now + delay, error, recipients
        )

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            log.info("smtp_recovered", failing_for_s=round(self.clock() - self.failing_since))
        self.failing_since = None

    async def _update_stats(self, force: bool = False) -> None:
        now = self.clock()
        if self.metrics is None or (not force and now - self._last_stats < STATS_INTERVAL):
            return
        self._last_stats = now
        stats = await self.store.outbox_stats()
        self.metrics.outbox_pending.set(stats.pending)
        oldest = 0.0 if stats.oldest_pending_at is None else now - stats.oldest_pending_at
        self.metrics.outbox_oldest_pending.set(max(0.0, oldest))
