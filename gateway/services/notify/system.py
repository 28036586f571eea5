"""System messages (section 7.3): conditions an operator must act on.

Evaluated at start, every minute and after each reload. Each condition is shown (admin console
home, `readyz` for ops_allow clients) while it holds, audited as `system.message` when it
appears and when it clears, and mailed to admins once per appearance: the state store row
`system_messages` decides which process mails it (only the one that inserts it), so several
workers or instances send one mail, and the condition is mailed again only after it cleared
and came back. Two conditions are shown but never mailed: SMTP failing (mail about mail never
triggers mail) and the state store unreachable (the outbox lives there).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from gateway.policy.snapshot import Snapshot
from gateway.policy.source import PolicyHolder
from gateway.services.notify.events import Notifier
from gateway.services.store import StateStore, StoreError

if TYPE_CHECKING:
    from gateway.services.audit import AuditLog
    from gateway.services.metrics import Metrics
    from gateway.services.notify.sender import Sender

log = structlog.get_logger("gateway.notify")

TLS_WARN_DAYS = 14
GEOIP_MAX_AGE_DAYS = 60
SMTP_FAILING_AFTER = 600.0
EVALUATE_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    text: str
    action: str
    mail: bool = True


#: An extra check another module contributes (e.g. the lockout guard): returns conditions.
ExtraCheck = Callable[[Snapshot, StateStore, float], Awaitable[list[Condition]]]


def _tls_condition(snapshot: Snapshot, now: float) -> Condition | None:
    tls = snapshot.config.tls
    if tls is None:
        return None
    from cryptography import x509

    path = snapshot.paths.config_dir / Path(tls.cert)
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Condition(
            "tls_certificate",
            f"the TLS certificate {path} cannot be read ({exc})",
            "Put a valid certificate there and restart the gateway.",
        )
    left = cert.not_valid_after_utc.timestamp() - now
    if left > TLS_WARN_DAYS * 86400:
        return None
    when = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    state = "expired on" if left <= 0 else f"expires in {max(0, int(left // 86400))} days, on"
    return Condition(
        "tls_certificate",
        f"the gateway's TLS certificate {state} {when}",
        "Renew the certificate, replace the file and restart the gateway.",
    )


def _geoip_condition(snapshot: Snapshot, now: float) -> Condition | None:
    database = snapshot.config.geoip.database
    if not database:
        return None
    path = snapshot.paths.config_dir / Path(database)
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return Condition(
            "geoip_database",
            f"the GeoIP database {path} is missing",
            "Download the database again or fix geoip.database.",
        )
    if age <= GEOIP_MAX_AGE_DAYS * 86400:
        return None
    return Condition(
        "geoip_database",
        f"the GeoIP database is {int(age // 86400)} days old (over {GEOIP_MAX_AGE_DAYS})",
        "Update the database file; the gateway reloads it when it changes.",
    )


def _audit_condition(path: Path) -> Condition | None:
    target = path
    while not target.exists() and target.parent != target:
        target = target.parent  # the writer creates missing folders itself
    if os.access(target, os.W_OK):
        return None
    return Condition(
        "audit_unwritable",
        f"the audit trail {path} is not writable",
        "Fix the permissions or free space; records wait in memory meanwhile.",
    )


class SystemMessages:
    def __init__(
        self,
        holder: PolicyHolder,
        store: StateStore,
        audit: AuditLog,
        notifier: Notifier,
        sender: Sender | None,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.holder = holder
        self.store = store
        self.audit = audit
        self.notifier = notifier
        self.sender = sender
        self.clock = clock
        self.metrics = metrics
        self.extra_checks: list[ExtraCheck] = []
        self.current: dict[str, Condition] = {}
        self.since: dict[str, float] = {}
        self._announced: set[str] = set()  # conditions this process has audited

    def shown(self) -> list[dict[str, object]]:
        """What the console and readyz show: every condition in force, oldest first."""
        return [
            {
                "key": c.key,
                "text": c.text,
                "action": c.action,
                "since": dt.datetime.fromtimestamp(self.since[c.key], dt.UTC).isoformat(),
                "mailed": c.mail,
            }
            for c in sorted(self.current.values(), key=lambda c: (self.since[c.key], c.key))
        ]

    async def conditions(self, snapshot: Snapshot, now: float) -> list[Condition]:
        found = [
            _tls_condition(snapshot, now),
            _geoip_condition(snapshot, now),
            _audit_condition(snapshot.paths.audit_file),
        ]
        rejected = self.holder.rejected
        if rejected is not None:
            errors = [str(p) for p in rejected.report.errors]
            found.append(
                Condition(
                    "policy_rejected",
                    f"a policy file was rejected ({len(errors)} error(s), first: {errors[0]})"
                    if errors
                    else "a policy file was rejected",
                    "Fix the file; the last good policy stays in force meanwhile. "
                    "`gateway check` lists every error.",
                )
            )
        sender = self.sender
        failing_for = now - sender.failing_since if sender and sender.failing_since else 0.0
        if sender is not None and failing_for > SMTP_FAILING_AFTER:
            found.append(
                Condition(
                    "smtp_failing",
                    f"mail delivery has been failing for {int(failing_for // 60)} minutes "
                    f"({sender.last_error})",
                    "Check the smtp: settings and the mail server; notifications wait in "
                    "the outbox and go out when it works again.",
                    mail=False,
                )
            )
        for check in self.extra_checks:
            try:
                found += await check(snapshot, self.store, now)
            except Exception:
                log.exception("system_check_failed", check=getattr(check, "__name__", "?"))
        return [c for c in found if c is not None]

    async def evaluate(self) -> None:
        snapshot = self.holder.current
        now = self.clock()
        try:
            await self.store.ping()
            store_ok = True
        except StoreError:
            store_ok = False
        found = {c.key: c for c in await self.conditions(snapshot, now)}
        if not store_ok:
            found["store_unreachable"] = Condition(
                "store_unreachable",
                "the state store is unreachable",
                "Check the database named by `state:`; sign-ins and mail wait for it.",
                mail=False,
            )
        for key, condition in found.items():
            if key not in self.current:
                self.since[key] = now
            self.current[key] = condition
            if condition.mail and store_ok:
                await self._raise(snapshot, condition, now)
            elif key not in self._announced:
                self._announce(condition, mailed=False)
        if self.metrics is not None:
            for key in found.keys() | self.current.keys():
                self.metrics.system_messages.labels(key).set(1 if key in found else 0)
        for key in list(self.current):
            if key not in found:
                condition = self.current.pop(key)
                self.since.pop(key, None)
                self._announced.discard(key)
                if condition.mail and store_ok:
                    try:
                        if await self.store.system_message_clear(key):
                            self._cleared(condition)
                    except StoreError as exc:
                        log.error("system_message_clear_failed", key=key, error=str(exc))
                elif not condition.mail:
                    self._cleared(condition)

    async def _raise(self, snapshot: Snapshot, condition: Condition, now: float) -> None:
        try:
            new = await self.store.system_message_raise(condition.key, condition.text, now)
        except StoreError as exc:
            log.error("system_message_failed", key=condition.key, error=str(exc))
            return
        if new:
            self._announce(condition, mailed=True)
            await self.notifier.system_message(
                snapshot, condition.key, condition.text, condition.action
            )

    def _announce(self, condition: Condition, *, mailed: bool) -> None:
        self._announced.add(condition.key)
        log.warning("system_message", condition=condition.key, text=condition.text)
        self.audit.record(
            "system.message",
            flush=True,
            condition=condition.key,
            text=condition.text,
            state="raised",
            mailed=mailed,
        )

    def _cleared(self, condition: Condition) -> None:
        log.info("system_message_cleared", condition=condition.key)
        self.audit.record(
            "system.message",
            flush=True,
            condition=condition.key,
            text=condition.text,
            state="cleared",
        )
