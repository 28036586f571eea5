"""`admin/trusted-ips`: trusted login IPs by email domain (choose the domain, search), remove,
add. The policy's `trusted_login_ips` are listed too, read-only.

POST with `cidr`, `description`, `scope` adds; with `id` removes (docs/http.md). A
person removes through `?remove=ID`, a confirmation page that posts the `id`.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from aiohttp import web
from aiohttp_session import get_session

from gateway.admin import secops
from gateway.admin.console import Admin
from gateway.admin.layout import confirm, render, table, td, when
from gateway.admin.users import NOTICE
from gateway.services.security.models import TrustedIp


async def view(admin: Admin) -> web.StreamResponse:
    security = secops.ops(admin)
    if security is None:
        body = '<p class="muted">Trusted login IPs are not available in this build.</p>'
        return render(admin, "Trusted login IPs", body, section="trusted-ips")
    if admin.request.method == "POST":
        return await _act(admin)
    remove = admin.request.query.get("remove", "")
    if remove.isdigit():
        entry = await _find(admin, int(remove))
        if entry is None:
            return await _page(admin, error=f"No trusted IP entry #{remove}.", status=404)
        return confirm(
            admin,
            title="Remove a trusted login IP",
            question=(
                f"Remove {entry.cidr} ({entry.description}) for {entry.scope}? Sign-ins from "
                "it count toward incidents again from now on."
            ),
            action=admin.url("trusted-ips"),
            fields={"action": "remove", "id": str(entry.id)},
            button="Remove",
            cancel=admin.url("trusted-ips", scope=entry.scope),
            section="trusted-ips",
        )
    session = await get_session(admin.request)
    notice = session.pop(NOTICE, None)
    return await _page(admin, notice=notice if isinstance(notice, str) else None)


async def _find(admin: Admin, entry_id: int) -> TrustedIp | None:
    security = secops.ops(admin)
    assert security is not None
    for entry in await security.trusted_ips():
        if entry.id == entry_id:
            return entry
    return None


async def _scopes(admin: Admin) -> list[str]:
    """Domains with entries, and those of the users in the policy (where entries may go)."""
    security = secops.ops(admin)
    assert security is not None
    found = set(await security.trusted_ip_scopes())
    for user in admin.ctx.snapshot.users.values():
        if user.email and "@" in user.email:
            found.add(user.email.rsplit("@", 1)[1].lower())
    return sorted(found)


async def _page(
    admin: Admin,
    *,
    error: str | None = None,
    notice: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    security = secops.ops(admin)
    assert security is not None
    query = admin.request.query
    scopes = await _scopes(admin)
    scope = query.get("scope", "").strip().lower()[:253] or None
    search = query.get("search", "").strip()[:100] or None
    entries = await security.trusted_ips(scope=scope, search=search)
    options = '<option value="">All domains</option>' + "".join(
        f'<option value="{escape(s)}"{" selected" if s == scope else ""}>{escape(s)}</option>'
        for s in scopes
    )
    chooser = (
        f'<form method="get" action="{escape(admin.url("trusted-ips"))}" class="filters"'
        ' role="search" aria-label="Trusted login IPs">'
        f'<div><label for="scope-filter">Email domain</label>'
        f'<select id="scope-filter" name="scope">{options}</select></div>'
        '<div><label for="search">Search</label>'
        f'<input type="search" id="search" name="search" value="{escape(search or "")}"'
        ' aria-describedby="search-hint"><p class="muted" id="search-hint">An address, or text '
        "of the network, description or author.</p></div>"
        '<div class="actions"><button type="submit">Show</button></div></form>'
    )
    rows = (_row(admin, e) for e in entries)
    listing = table(
        f"Trusted login IPs{' for ' + scope if scope else ''}",
        ("Network", "Email domain", "Description", "Added", "Source", "Remove"),
        rows,
        empty="No trusted login IPs match." if (scope or search) else "No trusted login IPs yet.",
    )
    values = form or {"cidr": "", "description": "", "scope": scope or ""}
    add = (
        "<h2>Add a trusted login IP</h2>"
        f'<form method="post" action="{escape(admin.url("trusted-ips"))}">{admin.csrf()}'
        '<input type="hidden" name="action" value="add">'
        + _input("cidr", "Address or network", values["cidr"], hint=secops.PREFIX_RULES)
        + _input("description", "Description", values["description"])
        + _input("scope", "Email domain", values["scope"], datalist=scopes)
        + '<button type="submit">Add</button></form>'
    )
    return render(
        admin,
        "Trusted login IPs",
        chooser + listing + add,
        section="trusted-ips",
        error=error,
        notice=notice,
        status=status,
    )


def _input(
    name: str, label: str, value: str, *, hint: str = "", datalist: Iterable[str] = ()
) -> str:
    described = f' aria-describedby="{name}-hint"' if hint else ""
    listed = f' list="{name}-options"' if datalist else ""
    options = (
        f'<datalist id="{name}-options">'
        + "".join(f'<option value="{escape(v)}"></option>' for v in datalist)
        + "</datalist>"
        if datalist
        else ""
    )
    return (
        f'<label for="{name}">{escape(label)}</label>'
        f'<input type="text" id="{name}" name="{name}" value="{escape(value)}" required'
        f' autocomplete="off" spellcheck="false"{described}{listed}>{options}'
        + (f'<p class="muted" id="{name}-hint">{escape(hint)}</p>' if hint else "")
    )


def _row(admin: Admin, entry: TrustedIp) -> str:
    if entry.removable:
        remove = (
            f'<a class="button secondary small" '
            f'href="{escape(admin.url("trusted-ips", remove=entry.id))}">Remove…</a>'
        )
        added = f"{when(entry.created_at)} by {entry.created_by or '—'}"
        return (
            f'<tr data-id="{entry.id}">{td(entry.cidr, code=True)}{td(entry.scope)}'
            f"{td(entry.description)}{td(added)}{td('marked safe')}<td>{remove}</td></tr>"
        )
    return (
        f'<tr data-source="policy">{td(entry.cidr, code=True)}{td(entry.scope)}'
        f"{td(entry.description)}{td('—')}{td('policy (read-only)')}"
        '<td><span class="muted">edit trusted_login_ips in the policy</span></td></tr>'
    )


async def _act(admin: Admin) -> web.StreamResponse:
    from gateway.services.security import SecurityError

    security = secops.ops(admin)
    assert security is not None
    form = await admin.request.post()
    action = str(form.get("action", "")) or ("remove" if form.get("id") else "add")
    if action == "remove":
        raw_id = str(form.get("id", "")).strip()
        if not raw_id.isdigit():
            return await _page(admin, error="Choose an entry to remove.", status=400)
        try:
            entry = await security.remove_trusted_ip(int(raw_id), secops.actor(admin))
        except SecurityError as exc:
            return await _page(admin, error=exc.message, status=404)
        admin.audit("admin.trusted_ip.removed", id=entry.id, cidr=entry.cidr, scope=entry.scope)
        message = f"{entry.cidr} is no longer trusted for {entry.scope}."
        scope = entry.scope
    elif action == "add":
        fields = {k: str(form.get(k, "")).strip()[:300] for k in ("cidr", "description", "scope")}
        problem = await secops.add_trusted_ip(admin, **fields)
        if problem is not None:
            return await _page(admin, error=problem, form=fields, status=400)
        message = f"{fields['cidr']} is trusted for {fields['scope']} from now on."
        scope = fields["scope"].lower()
    else:
        return await _page(admin, error="Unknown action.", status=400)
    session = await get_session(admin.request)
    session[NOTICE] = message
    raise web.HTTPSeeOther(admin.url("trusted-ips", scope=scope))
