"""The console's side of security operations: a user's sign-ins with "Mark as safe", adding a
trusted login IP, and the open incident count, over `services.security` (gateway/services/
security, its API documented there). Where that service is not running the pages say so.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from gateway.admin.console import Admin
from gateway.admin.layout import table, td, when
from gateway.policy.snapshot import User

if TYPE_CHECKING:
    from gateway.services.security import Actor, SecurityOps, SignInView

UNAVAILABLE = '<p class="muted">Sign-in history is not available in this build.</p>'
PREFIX_RULES = (
    "The address alone, or a network: IPv4 /31 to /22 (/17 for a large provider), "
    "IPv6 /64 to /48, written with its first address (10.0.0.0/24, not 10.0.0.1/24)."
)


def ops(admin: Admin) -> SecurityOps | None:
    return getattr(admin.services, "security", None)


def actor(admin: Admin) -> Actor:
    from gateway.services.security import Actor

    return Actor(admin.user.name, client_ip=admin.ctx.client_ip, request_id=admin.ctx.request_id)


async def open_incident_count(admin: Admin) -> int | None:
    security = ops(admin)
    return None if security is None else await security.open_incident_count()


def country(code: str | None) -> str:
    return code or "none (not globally routable, or unknown)"


async def user_activity(admin: Admin, user: User, *, form: dict[str, str] | None = None) -> str:
    """The 24-hour facts, the active incident and the last sign-ins, each with Mark as safe."""
    security = ops(admin)
    if security is None:
        return UNAVAILABLE
    activity = await security.user_activity(user.name, limit=20)
    facts = [
        ("Sign-ins, last 24 h", str(activity.logins_24h)),
        ("Failed second steps, last 24 h", str(activity.failures_24h)),
        ("Requests, last 24 h", str(activity.requests_24h)),
        ("Countries, last 24 h", ", ".join(activity.countries_24h) or "none"),
    ]
    out = '<h2>Last 24 hours</h2><dl class="facts">' + "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts
    )
    if activity.incident is not None:
        link = admin.url("incidents", state=activity.incident.state)
        out += (
            f'<dt>Incident</dt><dd><a href="{escape(link)}">#{activity.incident.id}, '
            f"{escape(activity.incident.state)}</a> "
            f"({escape(', '.join(activity.incident.countries))})</dd>"
        )
    out += "</dl>"
    if form is not None:
        out += "<h2>Mark as safe</h2>" + mark_safe_form(admin, user.name, form, key="retry")
    rows = (_sign_in_row(admin, user.name, view, activity.scope) for view in activity.sign_ins)
    out += "<h2>Last sign-ins</h2>" + table(
        "Last sign-ins, newest first",
        ("Time", "IP", "Country", "User agent", "Result", "Trusted", "Mark as safe"),
        rows,
        empty="No sign-ins recorded.",
    )
    if activity.scope is None:
        out += (
            '<p class="muted">This user has no email address, so no trusted login IPs apply '
            "to them (entries are scoped to an email domain).</p>"
        )
    return out


def _sign_in_row(admin: Admin, name: str, view: SignInView, scope: str | None) -> str:
    record = view.record
    trusted = "yes" if view.trusted else "no"
    action = ""
    if record.ip and scope and not view.trusted:
        fields = {"cidr": record.ip, "description": "", "scope": scope}
        action = (
            "<details><summary>Mark as safe</summary>"
            f"{mark_safe_form(admin, name, fields, key=str(record.id))}</details>"
        )
    source = f" ({record.geoip_source})" if record.geoip_source else ""
    return (
        f'<tr data-id="{record.id}">{td(when(record.at))}{td(record.ip, code=True)}'
        f"<td>{escape(country(record.country))}<span class='muted'>{escape(source)}</span></td>"
        f"{td(record.user_agent[:120] or None)}{td(record.result)}{td(trusted)}"
        f"<td>{action}</td></tr>"
    )


def mark_safe_form(admin: Admin, name: str, fields: dict[str, str], *, key: str) -> str:
    """Posts `cidr`, `description` and `scope` to the user's page (docs/http.md)."""
    return (
        f'<form method="post" action="{escape(admin.user_url(name))}">{admin.csrf()}'
        '<input type="hidden" name="action" value="mark_safe">'
        + _field(f"cidr-{key}", "cidr", "Address or network", fields.get("cidr", ""), hint=True)
        + _field(f"description-{key}", "description", "Description", fields.get("description", ""))
        + _field(f"scope-{key}", "scope", "Email domain", fields.get("scope", ""))
        + '<button type="submit" class="small">Mark as safe</button></form>'
    )


def _field(id_: str, name: str, label: str, value: str, *, hint: bool = False) -> str:
    described = f' aria-describedby="{id_}-hint"' if hint else ""
    help_ = f'<p class="muted" id="{id_}-hint">{escape(PREFIX_RULES)}</p>' if hint else ""
    return (
        f'<label for="{id_}">{escape(label)}</label>'
        f'<input type="text" id="{id_}" name="{name}" value="{escape(value)}" required'
        f' autocomplete="off" spellcheck="false"{described}>{help_}'
    )


async def add_trusted_ip(admin: Admin, *, cidr: str, description: str, scope: str) -> str | None:
    """Add the entry; None when done, else the message to show as it is."""
    security = ops(admin)
    if security is None:
        return "Trusted login IPs are not available in this build."
    from gateway.services.security import SecurityError

    try:
        entry = await security.add_trusted_ip(cidr, scope, description, actor(admin))
    except SecurityError as exc:
        return exc.message
    admin.audit(
        "admin.trusted_ip.added", id=entry.id, cidr=entry.cidr, scope=entry.scope, source="console"
    )
    return None
