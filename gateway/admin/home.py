"""`admin/`: the incidents banner, system messages, policy status, outbox and legal contacts."""

from __future__ import annotations

import logging
from html import escape

from aiohttp import web

from gateway.admin import providers, secops
from gateway.admin.console import Admin
from gateway.admin.layout import render, table, td, when

log = logging.getLogger("gateway.admin")

NOT_CONFIGURED = '<p class="muted">Not configured yet.</p>'


async def view(admin: Admin) -> web.StreamResponse:
    parts = [
        await _banner(admin),
        "<h2>System messages</h2>",
        await _system_messages(admin),
        "<h2>Policy</h2>",
        _policy(admin),
        "<h2>Notification outbox</h2>",
        await _outbox(admin),
        "<h2>Legal contacts</h2>",
        _legal_contacts(admin),
    ]
    return render(admin, "Gateway admin", "".join(parts), section="")


async def _banner(admin: Admin) -> str:
    try:
        count = await secops.open_incident_count(admin)
    except Exception:
        log.exception("admin_open_incidents_failed")
        return '<p class="error" role="alert">Incidents could not be read from the state store.</p>'
    if count is None:
        return ""
    if count == 0:
        return '<p class="good">No open security incidents.</p>'
    noun = "incident" if count == 1 else "incidents"
    return (
        '<div class="banner bad" role="alert">New security incidents detected: '
        f"{count} open {noun}. "
        f'<a href="{escape(admin.url("incidents", state="open"))}">Review the incidents</a></div>'
    )


async def _system_messages(admin: Admin) -> str:
    try:
        messages = await providers.system_messages(admin.services)
    except Exception:
        log.exception("admin_system_messages_failed")
        return '<p class="error">System messages could not be read.</p>'
    if messages is None:
        return NOT_CONFIGURED
    if not messages:
        return '<p class="good">Nothing needs your attention.</p>'
    items = "".join(
        f'<li><strong class="warn">{escape(m.text)}</strong> {escape(m.action)} '
        f'<span class="muted">(since {escape(m.since[:19].replace("T", " "))} UTC)</span></li>'
        for m in messages
    )
    return f'<ul aria-label="System messages">{items}</ul>'


def _policy(admin: Admin) -> str:
    holder = admin.services.holder
    snapshot = admin.ctx.snapshot
    files = holder.last_result.files if holder.last_result else ()
    facts = [
        ("Generation", escape(str(snapshot.generation))),
        ("Fingerprint", f"<code>{escape(snapshot.fingerprint[:16])}</code>"),
        ("Files", "<br>".join(f"<code>{escape(f)}</code>" for f in files) or "—"),
    ]
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in facts)
    out = f'<dl class="facts">{rows}</dl>'
    if snapshot.warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in snapshot.warnings)
        out += f'<p class="warn">Warnings:</p><ul class="warn">{items}</ul>'
    last = holder.last_rejected
    if last is None:
        out += '<p class="muted">No policy file was rejected since the gateway started.</p>'
        return out
    at, result = last
    state = (
        "is rejected now: the last good policy stays in force"
        if holder.rejected is result
        else "was rejected, and fixed since"
    )
    errors = "".join(f"<li><code>{escape(str(p))}</code></li>" for p in result.report.errors)
    css = "error" if holder.rejected is result else "muted"
    return out + (
        f'<div class="{css}"><p>Last rejection, {escape(when(at))}: the policy {state}.</p>'
        f'<ul aria-label="Errors of the last rejection">{errors}</ul></div>'
    )


async def _outbox(admin: Admin) -> str:
    try:
        stats = await providers.outbox(admin.services)
    except Exception:
        log.exception("admin_outbox_failed")
        return '<p class="error">The outbox could not be read.</p>'
    if stats is None:
        return NOT_CONFIGURED
    facts = [
        ("Pending", str(stats.pending)),
        ("Given up", str(stats.given_up)),
        ("Last error", stats.last_error or "none"),
    ]
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">{rows}</dl>'


def _legal_contacts(admin: Admin) -> str:
    contacts = admin.ctx.snapshot.policy.legal_contacts
    rows = (
        f"<tr>{td(c.name)}{td(c.role)}"
        f'<td><a href="mailto:{escape(c.email)}">{escape(c.email)}</a></td></tr>'
        for c in contacts
    )
    return table(
        "Legal contacts (policy legal_contacts)",
        ("Name", "Role", "Email"),
        rows,
        empty="No legal contacts in the policy (legal_contacts).",
    )
