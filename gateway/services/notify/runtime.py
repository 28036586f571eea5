"""Wiring of notifications into a running gateway process: called from app.py in a few lines.

`start(services)` creates the notifier, the sender and the system messages and returns the
background tasks (sender, system message evaluation, password expiry reminders, retention);
`after_reload(...)` queues the policy-change mail and re-evaluates the system messages.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from gateway.policy.diff import PolicyDiff
from gateway.policy.snapshot import Snapshot
from gateway.policy.source import files_signature
from gateway.services.notify import secops_hooks
from gateway.services.notify.events import Notifier
from gateway.services.notify.sender import Sender
from gateway.services.notify.system import EVALUATE_INTERVAL, SystemMessages

if TYPE_CHECKING:
    from gateway.web.resources import Services

log = structlog.get_logger("gateway.notify")

REMINDER_INTERVAL = 3600.0
REMINDER_DAYS = (1, 7)


async def _every(seconds: float, job, *, first: float | None = None) -> None:  # type: ignore[no-untyped-def]
    await asyncio.sleep(seconds if first is None else first)
    while True:
        try:
            await job()
        except Exception:
            log.exception("periodic_job_failed", job=getattr(job, "__qualname__", str(job)))
        await asyncio.sleep(seconds)


def start(services: Services) -> list[asyncio.Task[None]]:
    holder = services.holder
    sender = Sender(
        services.store, services.audit, lambda: holder.current, metrics=services.metrics
    )
    notifier = Notifier(services.store, wake=sender.wake)
    system = SystemMessages(
        holder, services.store, services.audit, notifier, sender, metrics=services.metrics
    )
    services.sender, services.notifier, services.system_messages = sender, notifier, system
    secops_hooks.attach(services)  # incidents, new countries, lockout guard (when present)
    from gateway.services.retention import run_retention

    async def retention() -> None:
        await run_retention(holder.current, services.store, services.audit)

    return [
        asyncio.create_task(sender.run(), name="notify-sender"),
        asyncio.create_task(_every(EVALUATE_INTERVAL, system.evaluate, first=0.0)),
        asyncio.create_task(_every(REMINDER_INTERVAL, lambda: remind(services), first=5.0)),
        asyncio.create_task(_every(86400.0, retention, first=1.0)),
    ]


async def after_reload(
    services: Services,
    previous: Snapshot,
    new: Snapshot | None,
    changes: PolicyDiff | None,
    files: list[str],
) -> None:
    if services.notifier is not None and new is not None and changes is not None:
        signature = await asyncio.to_thread(files_signature, new.paths)
        mtime = max((sig[1] for sig in signature), default=0)
        await services.notifier.policy_changed(previous, new, changes, files, mtime)
    if services.system_messages is not None:
        try:
            await services.system_messages.evaluate()
        except Exception:
            log.exception("system_messages_failed")


async def remind(services: Services) -> None:
    """Password expiring in 7 days and in 1 day: one mail each (deduplicated in the outbox)."""
    from gateway.services.accounts import password_changed_at

    snapshot, notifier = services.holder.current, services.notifier
    if notifier is None:
        return
    now = time.time()
    for user in snapshot.users.values():
        max_age = user.password_rules.max_age_days
        if not user.email or max_age <= 0:
            continue
        expires = await password_changed_at(services.store, user, now) + max_age * 86400
        left = expires - now
        for days in REMINDER_DAYS:
            if 0 < left <= days * 86400:
                await notifier.password_expiring(snapshot, user.name, expires, days)
                break


async def status(services: Services) -> dict[str, object]:
    """System messages and outbox state, for readyz (ops_allow clients) and the console."""
    shown = services.system_messages.shown() if services.system_messages else []
    outbox: dict[str, object] = {}
    try:
        stats = await services.store.outbox_stats()
    except Exception as exc:
        outbox = {"error": f"state store unreachable ({type(exc).__name__})"}
    else:
        oldest = stats.oldest_pending_at
        outbox = {
            "pending": stats.pending,
            "given_up": stats.failed,
            "oldest_pending_s": None if oldest is None else round(time.time() - oldest, 1),
            "last_error": stats.last_error,
            "smtp_configured": services.holder.current.config.smtp is not None,
        }
    return {"system_messages": shown, "outbox": outbox}
