"""Notifications that need the security operations service (docs/notifications.md,
docs/incidents.md): incident opened (admins and legal contacts), sign-in from a country new for the
user (the user), the country of a failed sign-in, and the lockout guard system message.

`attach(services)` plugs them into the process's `services.security` at start.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from gateway.policy import decide
from gateway.policy.ipset import parse_client_ip
from gateway.policy.snapshot import Snapshot
from gateway.services.notify.messages import utc
from gateway.services.notify.system import Condition
from gateway.services.store import IncidentRecord, SignInRecord, StateStore

if TYPE_CHECKING:
    from gateway.web.resources import Services

DAY = 86400.0
NEW_COUNTRY_DAYS = 90
LOCKOUT_DAYS = 30
MAX_EVIDENCE = 10


def attach(services: Services) -> None:
    security = services.security
    if services.notifier is None:
        return
    security.on_incident_opened.append(_incident_hook(services))
    security.on_sign_in.append(functools.partial(after_sign_in, services))
    if services.system_messages is not None:
        services.system_messages.extra_checks.append(lockout_guard)


def country_of(services: Services, ip: str | None) -> str | None:
    return None if ip is None else services.security.geoip.lookup(ip).country


def _incident_hook(services: Services):  # type: ignore[no-untyped-def]
    async def on_incident_opened(incident: IncidentRecord, sign_ins: list[SignInRecord]) -> None:
        facts = [
            ["Sign-in", f"{utc(s.at)} from {s.ip or '?'} ({s.country or 'no country'})"]
            for s in sign_ins[-MAX_EVIDENCE:]
        ]
        if services.notifier is not None:
            await services.notifier.incident_opened(
                services.holder.current, incident.user, list(incident.countries), facts
            )

    return on_incident_opened


async def after_sign_in(services: Services, record: SignInRecord | None) -> None:
    """A successful sign-in from a country not seen for this user in 90 days mails the user.

    Only when the user has other successful sign-ins in those 90 days: on a first sign-in every
    country is new, and a mail then would teach people to ignore these.
    """
    if record is None or record.result != "success" or not record.country:
        return
    if services.notifier is None:
        return
    since = record.at - NEW_COUNTRY_DAYS * DAY
    earlier = [
        s
        for s in await services.store.sign_ins(
            record.user, since=since, result="success", limit=10_000
        )
        if s.id != record.id
    ]
    if not earlier or any(s.country == record.country for s in earlier):
        return
    await services.notifier.new_country(
        services.holder.current, record.user, record.ip, record.country
    )


async def lockout_guard(snapshot: Snapshot, store: StateStore, now: float) -> list[Condition]:
    """No gateway admin could reach the dashboard surface from any address an admin signed in
    from in the last 30 days (`gateway check --client-ip` warns before saving; this after)."""
    surface = snapshot.surfaces["dashboard"]
    if not snapshot.protection_enabled or not surface.allowlist_enabled or surface.monitor:
        return []  # monitor mode lets everyone through: nobody is locked out yet
    addresses: set[str] = set()
    for admin in (u for u in snapshot.users.values() if u.admin):
        for s in await store.sign_ins(
            admin.name, since=now - LOCKOUT_DAYS * DAY, result="success", limit=1000
        ):
            if s.ip:
                addresses.add(s.ip)
    if not addresses:
        return []
    for ip in addresses:
        if decide.check_allowlist(surface, True, parse_client_ip(ip)).allowed:
            return []
    return [
        Condition(
            "lockout",
            f"the policy in force locks out every gateway admin: none of the {len(addresses)} "
            f"address(es) admins signed in from in the last {LOCKOUT_DAYS} days is in "
            "allowlists.dashboard",
            "Add an admin's address to allowlists.dashboard.entries (check first with "
            "`gateway check --client-ip IP`), or set protection.mode.dashboard: monitor.",
        )
    ]
