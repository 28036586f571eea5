"""`admin/incidents`: open, acknowledged and resolved incidents; per incident the user, the
countries and the sign-ins that caused it; acknowledge (posts `id`), resolve (posts `id` and
`note`). Resolving ends an incident, so it is asked for on a page of its own (`?resolve=ID`)
that shows the evidence once more and takes the note."""

from __future__ import annotations

from html import escape

from aiohttp import web
from aiohttp_session import get_session

from gateway.admin import secops
from gateway.admin.console import Admin
from gateway.admin.layout import render, table, td, when
from gateway.admin.users import NOTICE
from gateway.services.security.models import IncidentDetail
from gateway.services.store import IncidentRecord

STATES = ("open", "acknowledged", "resolved")
SHOWN = 50


async def view(admin: Admin) -> web.StreamResponse:
    security = secops.ops(admin)
    if security is None:
        body = '<p class="muted">Incidents are not available in this build.</p>'
        return render(admin, "Security incidents", body, section="incidents")
    if admin.request.method == "POST":
        return await _act(admin)
    resolve = admin.request.query.get("resolve", "")
    if resolve.isdigit():
        return await _resolve_page(admin, int(resolve))
    session = await get_session(admin.request)
    notice = session.pop(NOTICE, None)
    return await _list(admin, notice=notice if isinstance(notice, str) else None)


async def _list(
    admin: Admin, *, error: str | None = None, notice: str | None = None, status: int = 200
) -> web.Response:
    security = secops.ops(admin)
    assert security is not None
    state = admin.request.query.get("state", "")
    state = state if state in STATES else None
    incidents = await security.list_incidents(state=state, limit=SHOWN)
    tabs = [(None, "All")] + [(s, s.capitalize()) for s in STATES]
    nav = " · ".join(
        f'<a href="{escape(admin.url("incidents", state=s))}"'
        + (' aria-current="page"' if s == state else "")
        + f">{escape(label)}</a>"
        for s, label in tabs
    )
    rows = []
    for incident in incidents:
        detail = await security.incident(incident.id)
        rows.append(_row(admin, incident, detail))
    body = f'<nav aria-label="Incident states"><p>{nav}</p></nav>' + table(
        f"{(state or 'all').capitalize()} incidents, newest first (up to {SHOWN})",
        ("#", "User", "State", "Countries", "Opened", "Sign-ins that caused it", "Actions"),
        rows,
        empty="No incidents." if state is None else f"No {state} incidents.",
    )
    return render(
        admin,
        "Security incidents",
        body,
        section="incidents",
        error=error,
        notice=notice,
        status=status,
    )


def _row(admin: Admin, incident: IncidentRecord, detail: IncidentDetail) -> str:
    actions = []
    if incident.state == "open":
        actions.append(
            f'<form method="post" action="{escape(admin.url("incidents"))}" class="inline">'
            f'{admin.csrf()}<input type="hidden" name="action" value="acknowledge">'
            f'<input type="hidden" name="id" value="{incident.id}">'
            '<button type="submit" class="secondary small">Acknowledge</button></form>'
        )
    if incident.state != "resolved":
        actions.append(
            f'<a class="button small" href="{escape(admin.url("incidents", resolve=incident.id))}">'
            "Resolve…</a>"
        )
    else:
        actions.append(
            f'<span class="muted">Resolved {escape(when(incident.resolved_at))} by '
            f"{escape(incident.resolved_by or '—')}: {escape(incident.note or '')}</span>"
        )
    if incident.state == "acknowledged":
        actions.insert(
            0,
            f'<span class="muted">Acknowledged by {escape(incident.acknowledged_by or "—")}</span>',
        )
    evidence = _evidence(detail)
    user_link = f'<a href="{escape(admin.user_url(incident.user))}">{escape(incident.user)}</a>'
    return (
        f'<tr data-id="{incident.id}">{td(incident.id)}<td>{user_link}</td>{td(incident.state)}'
        f"{td(', '.join(incident.countries))}{td(when(incident.opened_at))}"
        f"<td>{evidence}</td>"
        f'<td><div class="actions">{"".join(actions)}</div></td></tr>'
    )


def _evidence(detail: IncidentDetail) -> str:
    items = "".join(
        f"<li>{escape(when(v.record.at))}: <code>{escape(v.record.ip or '—')}</code> "
        f"{escape(secops.country(v.record.country))}"
        + (
            f" <span class='muted'>({escape(v.record.geoip_source)})</span>"
            if v.record.geoip_source
            else ""
        )
        + (" <strong>trusted now</strong>" if v.trusted else "")
        + "</li>"
        for v in detail.sign_ins
    )
    return f"<ul>{items}</ul>" if items else '<span class="muted">none recorded</span>'


async def _resolve_page(
    admin: Admin, incident_id: int, *, error: str | None = None, note: str = ""
) -> web.Response:
    from gateway.services.security import NotFound

    security = secops.ops(admin)
    assert security is not None
    try:
        detail = await security.incident(incident_id)
    except NotFound as exc:
        return await _list(admin, error=exc.message, status=404)
    incident = detail.incident
    body = (
        f"<p>Incident #{incident.id} of "
        f'<a href="{escape(admin.user_url(incident.user))}">{escape(incident.user)}</a>: '
        f"sign-ins from {escape(', '.join(incident.countries))}, opened "
        f"{escape(when(incident.opened_at))}, {escape(incident.state)}.</p>"
        f"<h2>Sign-ins that caused it</h2>{_evidence(detail)}"
        f'<p class="muted">Legitimate? Mark the addresses as safe on '
        f'<a href="{escape(admin.user_url(incident.user))}">the user\'s page</a> so they '
        "no longer count, then resolve.</p>"
        f'<form method="post" action="{escape(admin.url("incidents"))}">{admin.csrf()}'
        '<input type="hidden" name="action" value="resolve">'
        f'<input type="hidden" name="id" value="{incident.id}">'
        '<label for="note">Resolution note (required)</label>'
        f'<textarea id="note" name="note" rows="3" required maxlength="2000">{escape(note)}'
        "</textarea>"
        '<div class="actions"><button type="submit" class="danger">Resolve incident</button>'
        f'<a class="button secondary" href="{escape(admin.url("incidents"))}">Cancel</a>'
        "</div></form>"
    )
    return render(
        admin,
        f"Resolve incident #{incident.id}",
        body,
        section="incidents",
        error=error,
        status=400 if error else 200,
    )


async def _act(admin: Admin) -> web.StreamResponse:
    from gateway.services.security import SecurityError

    security = secops.ops(admin)
    assert security is not None
    form = await admin.request.post()
    raw_id = str(form.get("id", "")).strip()
    note = str(form.get("note", "")).strip()[:2000]
    action = str(form.get("action", "")) or ("resolve" if "note" in form else "acknowledge")
    if not raw_id.isdigit() or action not in ("acknowledge", "resolve"):
        return await _list(admin, error="Choose an incident and an action.", status=400)
    incident_id = int(raw_id)
    try:
        if action == "acknowledge":
            done = await security.acknowledge(incident_id, secops.actor(admin))
            admin.audit("admin.incident.acknowledged", id=done.id, user=done.user)
            message = f"Incident #{done.id} of {done.user} acknowledged."
        else:
            done = await security.resolve(incident_id, note, secops.actor(admin))
            admin.audit("admin.incident.resolved", id=done.id, user=done.user, note=done.note)
            message = f"Incident #{done.id} of {done.user} resolved."
    except SecurityError as exc:
        if action == "resolve":
            return await _resolve_page(admin, incident_id, error=exc.message, note=note)
        return await _list(admin, error=exc.message, status=400)
    session = await get_session(admin.request)
    session[NOTICE] = message
    raise web.HTTPSeeOther(admin.url("incidents"))
