"""Security incidents (docs/incidents.md): detection at sign-in, and the one place where an
incident is opened.

A successful sign-in is judged against the user's successful sign-ins within
`incidents.window` (the new one included). Sign-ins count when they have a country (globally
routable address known to the GeoIP database) and their address is not trusted for the user's
email domain. When the counted ones span `incidents.distinct_countries` or more countries, the
user gets an incident, or their active one (open or acknowledged) gets the new evidence. A
counted sign-in of a user who already has an active incident is added to it even when the
window alone would no longer open one ("further logins add to it").

Resolving an incident closes the case on what was known: sign-ins up to the resolution never
count again, so the next sign-in does not reopen it with the same evidence; a new incident
needs `distinct_countries` countries among the sign-ins after the resolution.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from gateway.policy.snapshot import Snapshot, User
from gateway.services.store import IncidentRecord, IncidentUpdate, SignInRecord, StateStore

from . import trusted
from .models import Actor, AuditSink

log = structlog.get_logger("gateway.security")

# Called once per newly opened incident with the incident and the sign-ins that caused it.
IncidentHook = Callable[[IncidentRecord, list[SignInRecord]], Awaitable[None]]
HISTORY_LIMIT = 1000  # sign-ins per window looked at: far more than a person makes


def counted(sign_ins: list[SignInRecord], is_trusted: trusted.Matcher) -> list[SignInRecord]:
    """The successful sign-ins that count: with a country, from an untrusted address."""
    return [s for s in sign_ins if s.result == "success" and s.country and not is_trusted(s.ip)]


class IncidentDetector:
    """Judges successful sign-ins and opens incidents; see `open_or_extend_incident`."""

    def __init__(
        self,
        store: StateStore,
        audit: AuditSink,
        changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._changed = changed  # called after any state change (the open-incidents gauge)
        # Hooks run after `incident.opened` is in the audit trail: the notifications module
        # appends its mail here (`hooks.append(send_incident_mail)`).
        self.on_incident_opened: list[IncidentHook] = []

    async def judge(
        self,
        snapshot: Snapshot,
        user: User,
        latest: SignInRecord,
        *,
        request_id: str | None = None,
    ) -> IncidentUpdate | None:
        """Look at the user's window after the successful sign-in `latest`."""
        rules = snapshot.policy.incidents
        window = await self._store.sign_ins(
            user.name, since=latest.at - rules.window, result="success", limit=HISTORY_LIMIT
        )
        resolved = await self._store.incidents(user=user.name, state="resolved", limit=1)
        if resolved and resolved[0].resolved_at is not None:
            # An admin judged everything up to the resolution: only what came after counts.
            window = [s for s in window if s.at > resolved[0].resolved_at]
        if all(s.id != latest.id for s in window):
            window.append(latest)
        is_trusted = await trusted.matcher_for(
            self._store, snapshot, trusted.email_domain(user.email)
        )
        evidence = counted(window, is_trusted)
        if len({s.country for s in evidence}) >= rules.distinct_countries:
            return await self.open_or_extend_incident(user.name, evidence, latest.at, request_id)
        if any(s.id == latest.id for s in evidence):
            return await self.open_or_extend_incident(
                user.name, [latest], latest.at, request_id, create=False
            )
        return None

    async def open_or_extend_incident(
        self,
        user: str,
        evidence: list[SignInRecord],
        at: float,
        request_id: str | None = None,
        *,
        create: bool = True,
    ) -> IncidentUpdate:
        """THE place where an incident is opened (or an active one extended with evidence).

        Atomic across processes (the store's conditional insert): of concurrent sign-ins of one
        user, exactly one opens the incident and only that one writes `incident.opened` and
        calls the `on_incident_opened` hooks, each once, after the audit record. A hook that
        fails is logged; it never undoes the incident or the sign-in.
        """
        update = await self._store.incident_open_or_extend(user, at, evidence, create=create)
        incident = update.incident
        if incident is None:
            return update
        common = {
            "request_id": request_id,
            "surface": "dashboard",
            "principal": user,
            "decision": None,
            "incident_id": incident.id,
            "countries": list(incident.countries),
        }
        if update.opened:
            attached = await self._store.incident_sign_ins(incident.id)
            self._audit.record(
                "incident.opened",
                flush=True,
                sign_ins=[_evidence(s) for s in attached],
                **common,
            )
            log.warning("incident_opened", user=user, countries=list(incident.countries))
            await self._notify_changed()
            for hook in list(self.on_incident_opened):
                try:
                    await hook(incident, attached)
                except Exception:
                    log.exception("incident_hook_failed", hook=getattr(hook, "__qualname__", ""))
        elif update.added:
            self._audit.record("incident.extended", added=update.added, **common)
        return update

    async def acknowledge(self, incident: IncidentRecord, actor: Actor, at: float) -> bool:
        if not await self._store.incident_acknowledge(incident.id, actor.name, at):
            return False
        self._audit.record(
            "incident.acknowledged",
            flush=True,
            decision=None,
            incident_id=incident.id,
            user=incident.user,
            **actor.audit_fields(),
        )
        await self._notify_changed()
        return True

    async def resolve(self, incident: IncidentRecord, note: str, actor: Actor, at: float) -> bool:
        if not await self._store.incident_resolve(incident.id, actor.name, at, note):
            return False
        self._audit.record(
            "incident.resolved",
            flush=True,
            decision=None,
            incident_id=incident.id,
            user=incident.user,
            note=note,
            **actor.audit_fields(),
        )
        await self._notify_changed()
        return True

    async def _notify_changed(self) -> None:
        if self._changed is None:
            return
        try:
            await self._changed()
        except Exception as exc:
            log.warning("incident_change_listener_failed", error=str(exc))


def _evidence(s: SignInRecord) -> dict[str, object]:
    return {"at": s.at, "ip": s.ip, "country": s.country, "geoip": s.geoip_source}
