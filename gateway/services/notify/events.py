"""From gateway events to outbox rows: who gets which notification (section 7.1).

`Notifier` is the one door into the outbox. Callers write their audit record, then call the
matching method here in the same step; nothing is sent from the request path (the sender task
does that). Rules kept here:

- Nothing is queued while `notifications.enabled` is false, except the policy-change mail that
  says they were turned off (the last one), nor without `smtp:` (the outbox would only grow;
  `gateway check` warns instead).
- Admin notices go to every `admin: true` user with an email; incident notices also to every
  `legal_contacts` email; user notices to that user's email only.
- Failed sign-ins coalesce per user; a policy change is deduplicated across processes by the
  pair of fingerprints and the files' modification time, so N workers reloading the same
  files queue one mail.
- Payloads hold only what a person may read: names, addresses, countries, times, changes.
  Never a password, code, key, token or session id.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import structlog

from gateway.policy.diff import PolicyDiff
from gateway.policy.snapshot import Snapshot
from gateway.services.notify.messages import utc
from gateway.services.store import StateStore, StoreError

log = structlog.get_logger("gateway.notify")


def admin_emails(snapshot: Snapshot) -> list[str]:
    return sorted({u.email for u in snapshot.users.values() if u.admin and u.email})


def legal_emails(snapshot: Snapshot) -> list[str]:
    return sorted({c.email for c in snapshot.policy.legal_contacts if c.email})


def _where(ip: str | None, country: str | None) -> str:
    if not ip:
        return "unknown address"
    return f"{ip} ({country})" if country else f"{ip} (country unknown)"


class Notifier:
    def __init__(
        self,
        store: StateStore,
        *,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.wake = wake
        self.clock = clock
        self._warned_no_smtp = False

    async def enqueue(
        self,
        snapshot: Snapshot,
        kind: str,
        recipients: list[str],
        payload: dict[str, Any],
        *,
        coalesce_key: str | None = None,
        dedupe_key: str | None = None,
        force: bool = False,
    ) -> int | None:
        """Queue one notification; None when it is not to be sent (or already queued)."""
        if not force and not snapshot.policy.notifications.enabled:
            return None
        if snapshot.config.smtp is None:
            if not self._warned_no_smtp:
                self._warned_no_smtp = True
                log.warning("notification_not_queued", kind=kind, reason="no smtp: configured")
            return None
        recipients = sorted(set(recipients))
        if not recipients:
            log.warning("notification_not_queued", kind=kind, reason="nobody to send it to")
            return None
        try:
            new_id = await self.store.outbox_add(
                kind,
                recipients,
                payload,
                self.clock(),
                coalesce_key=coalesce_key,
                coalesce_window=snapshot.policy.notifications.coalesce,
                dedupe_key=dedupe_key,
            )
        except StoreError as exc:
            # The event itself is audited; the state store is down and says so in readyz.
            log.error("notification_not_queued", kind=kind, error=str(exc))
            return None
        if new_id is not None:
            self.wake()
        return new_id

    # -- admin notices ----------------------------------------------------------------------

    async def policy_changed(
        self, previous: Snapshot, new: Snapshot, changes: PolicyDiff, files: list[str], mtime: int
    ) -> int | None:
        if not changes.changes:
            return None
        key = hashlib.sha256(f"{previous.fingerprint}:{new.fingerprint}:{mtime}".encode())
        first = changes.changes[0]
        more = len(changes.changes) - 1
        subject = f"Policy changed: {first}" + (f" (+{more} more)" if more else "")
        payload = {
            "subject": subject,
            "intro": f"A policy reload at {utc(self.clock())} changed what the gateway allows.",
            "facts": [
                ["Files", ", ".join(files)],
                ["When", utc(self.clock())],
                ["Policy generation", str(new.generation)],
            ],
            "items": changes.changes,
            "action": "If you did not expect this change, check who edited these files "
            "and restore the previous version; the audit trail has the full record.",
            "link": "admin/",
        }
        return await self.enqueue(
            new,
            "policy.changed",
            admin_emails(new) or admin_emails(previous),
            payload,
            dedupe_key="policy:" + key.hexdigest(),
            force=changes.notifications_turned_off,
        )

    async def login_failed(
        self, snapshot: Snapshot, user: str, ip: str | None, country: str | None, step: str
    ) -> int | None:
        now = self.clock()
        payload = {
            "subject": f"Failed sign-in for {user} from {_where(ip, country)}",
            "intro": f"Someone failed to sign in as {user} ({step}).",
            "facts": [["User", user], ["From", _where(ip, country)], ["When", utc(now)]],
            "action": "If this was not them, look at the user's recent sign-ins; repeated "
            "failures are banned automatically. Mark the address as safe only if you know it.",
            "link": f"admin/users/{user}",
            "user": user,
            "ip": ip,
            "digest_line": f"{utc(now)}: {user} from {_where(ip, country)} ({step})",
        }
        return await self.enqueue(
            snapshot,
            "login.failure",
            admin_emails(snapshot),
            payload,
            coalesce_key=f"login.failure:{user}",
        )

    async def incident_opened(
        self, snapshot: Snapshot, user: str, countries: list[str], facts: list[list[str]]
    ) -> int | None:
        now = self.clock()
        payload = {
            "subject": f"Security incident: {user} signed in from {len(countries)} countries",
            "intro": f"A security incident was opened for {user}: successful sign-ins from "
            f"{', '.join(countries)} within the incident window.",
            "facts": [
                ["User", user],
                ["Countries", ", ".join(countries)],
                ["When", utc(now)],
                *facts,
            ],
            "action": "Check with the user whether these sign-ins were theirs. If not, end "
            "their sessions, reset their password and 2FA, and follow your breach procedure "
            "(the legal contacts on this mail are informed).",
            "link": "admin/incidents",
        }
        recipients = admin_emails(snapshot) + legal_emails(snapshot)
        return await self.enqueue(snapshot, "incident.opened", recipients, payload)

    async def system_message(
        self, snapshot: Snapshot, key: str, text: str, action: str
    ) -> int | None:
        now = self.clock()
        payload = {
            "subject": f"System message: {text}",
            "intro": text,
            "facts": [["Condition", key], ["Since", utc(now)]],
            "action": action,
            "link": "admin/",
        }
        return await self.enqueue(
            snapshot,
            "system.message",
            admin_emails(snapshot),
            payload,
            coalesce_key=f"system.message:{key}",
        )

    # -- user notices -----------------------------------------------------------------------

    async def _to_user(
        self, snapshot: Snapshot, kind: str, user: str, payload: dict[str, Any], **kw: Any
    ) -> int | None:
        person = snapshot.users.get(user)
        if person is None or not person.email:
            return None
        return await self.enqueue(snapshot, kind, [person.email], payload, **kw)

    async def password_changed(self, snapshot: Snapshot, user: str, ip: str | None) -> int | None:
        now = self.clock()
        return await self._to_user(
            snapshot,
            "password.changed",
            user,
            {
                "subject": "Your gateway password was changed",
                "intro": f"The password of {user} was changed.",
                "facts": [["User", user], ["From", _where(ip, None)], ["When", utc(now)]],
                "action": "If you did not change it, tell a gateway admin at once.",
                "link": "account",
            },
        )

    async def two_factor_reset(self, snapshot: Snapshot, user: str, by: str) -> int | None:
        now = self.clock()
        return await self._to_user(
            snapshot,
            "totp.reset",
            user,
            {
                "subject": "Your two-factor authentication was reset by an admin",
                "intro": f"An admin ({by}) removed the authenticator of {user}.",
                "facts": [["User", user], ["By", by], ["When", utc(now)]],
                "action": "At your next sign-in you will set up an authenticator again. If you "
                "did not ask for this, tell a gateway admin at once.",
                "link": "account",
            },
        )

    async def password_expiring(
        self, snapshot: Snapshot, user: str, expires_at: float, threshold: int
    ) -> int | None:
        """`threshold` (7 or 1) is the reminder this is; the text says the days really left."""
        days = max(1, math.ceil((expires_at - self.clock()) / 86400))
        return await self._to_user(
            snapshot,
            "password.expiring",
            user,
            {
                "subject": f"Your gateway password expires in {days} day{'s' if days != 1 else ''}",
                "intro": f"The password of {user} expires on {utc(expires_at)}.",
                "facts": [["User", user], ["Expires", utc(expires_at)]],
                "action": "Choose a new password on your account page before then.",
                "link": "password",
            },
            dedupe_key=f"password.expiring:{user}:{int(expires_at)}:{threshold}",
        )

    async def new_country(
        self, snapshot: Snapshot, user: str, ip: str | None, country: str
    ) -> int | None:
        now = self.clock()
        return await self._to_user(
            snapshot,
            "login.new_country",
            user,
            {
                "subject": f"New sign-in to your account from {country}",
                "intro": f"{user} signed in from a country not seen for this account in 90 days.",
                "facts": [["User", user], ["From", _where(ip, country)], ["When", utc(now)]],
                "action": "If this was not you, change your password and tell a gateway admin.",
                "link": "account",
            },
        )

    async def test(self, snapshot: Snapshot, recipients: list[str]) -> int | None:
        now = self.clock()
        payload = {
            "subject": "Test mail from the access gateway",
            "intro": "This is a test mail sent with `gateway notify test`. If you read it, "
            "the gateway can reach you.",
            "facts": [["When", utc(now)]],
            "action": "Nothing.",
            "link": "admin/",
        }
        return await self.enqueue(snapshot, "test", recipients, payload, force=True)
