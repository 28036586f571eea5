"""`admin/users` (everyone in the policy) and `admin/users/{name}`: a user's last 24 hours, their
last sign-ins with "Mark as safe", sessions ("end all sessions"), unlock, reset 2FA.

POST `admin/users/{name}` with `action`:
  mark_safe     `cidr`, `description`, `scope` (also the default when `cidr` is posted alone)
  end_sessions  ends every session of the user          (destructive: confirmed first)
  reset_2fa     removes the authenticator, ends sessions (destructive: confirmed first)
  unlock        lifts the user's sign-in ban
The confirmation step is a GET (`?confirm=end_sessions`) showing the form that posts; a client
that posts the action directly (automation) has confirmed by posting.
"""

from __future__ import annotations

import time
from html import escape

from aiohttp import web
from aiohttp_session import get_session

from gateway.admin import secops
from gateway.admin.console import Admin
from gateway.admin.layout import confirm, render, table, td, when
from gateway.policy.snapshot import User
from gateway.services import accounts, regulation

NOTICE = "admin_notice"
_CONFIRM = {
    "end_sessions": (
        "End all sessions",
        "End every session of {name}? They are signed out everywhere at their next request.",
        "End all sessions",
    ),
    "reset_2fa": (
        "Reset two-factor authentication",
        "Remove the authenticator and recovery codes of {name}? Their sessions end too; "
        "at their next sign-in they set up two-factor authentication again.",
        "Reset 2FA",
    ),
}


async def index(admin: Admin) -> web.StreamResponse:
    users = sorted(admin.ctx.snapshot.users.values(), key=lambda u: u.name)
    rows = (
        f'<tr><td><a href="{escape(admin.user_url(u.name))}">{escape(u.name)}</a></td>'
        f"{td(u.email)}{td('yes' if u.admin else 'no')}"
        f"{td(', '.join(f'{a}: {r}' for a, r in sorted(u.grants.items())) or None)}"
        f"{td('required' if u.requires_2fa else 'optional')}</tr>"
        for u in users
    )
    body = table(
        "Users in the policy",
        ("User", "Email", "Gateway admin", "Grants", "2FA"),
        rows,
        empty="The policy has no users.",
    )
    return render(admin, "Users", body, section="users")


async def view(admin: Admin) -> web.StreamResponse:
    name = admin.params["name"]
    user = admin.ctx.snapshot.users.get(name)
    if user is None:
        return render(
            admin,
            "No such user",
            f"<p>There is no user {escape(name)!s} in the policy in force.</p>"
            f'<p><a href="{escape(admin.url("users"))}">All users</a></p>',
            section="users",
            status=404,
        )
    request = admin.request
    if request.method == "POST":
        return await _act(admin, user)
    asked = request.query.get("confirm", "")
    if asked in _CONFIRM:
        title, question, button = _CONFIRM[asked]
        return confirm(
            admin,
            title=title,
            question=question.format(name=name),
            action=admin.user_url(name),
            fields={"action": asked},
            button=button,
            cancel=admin.user_url(name),
            section="users",
        )
    session = await get_session(request)
    notice = session.pop(NOTICE, None)
    return await page(admin, user, notice=notice if isinstance(notice, str) else None)


async def page(
    admin: Admin,
    user: User,
    *,
    error: str | None = None,
    notice: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    store = admin.services.store
    now = time.time()
    enrolled = await accounts.enrolled(store, user.name)
    ban = await store.ban_get(regulation.user_subject(user.name))
    banned = ban if ban is not None and ban > now else None
    facts = [
        ("Email", user.email or "—"),
        ("Gateway admin", "yes" if user.admin else "no"),
        ("Grants", ", ".join(f"{a}: {r}" for a, r in sorted(user.grants.items())) or "none"),
        ("Two-factor", ("on" if enrolled else "off") + (" (required)" * user.requires_2fa)),
        ("Sign-in ban", f"until {when(banned)}" if banned else "none"),
    ]
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    activity = await secops.user_activity(admin, user, form=form)
    name_url = admin.user_url(user.name)
    csrf = admin.csrf()
    unlock = (
        f'<form method="post" action="{escape(name_url)}" class="inline">{csrf}'
        '<input type="hidden" name="action" value="unlock">'
        '<button type="submit" class="secondary small">Unlock</button></form>'
        if banned
        else ""
    )
    ask = {k: escape(f"{name_url}?confirm={k}") for k in _CONFIRM}
    actions = (
        '<div class="actions">'
        f'<a class="button secondary small" href="{ask["end_sessions"]}">End all sessions…</a>'
        f'<a class="button secondary small" href="{ask["reset_2fa"]}">Reset 2FA…</a>'
        f"{unlock}</div>"
    )
    body = f'<dl class="facts">{rows}</dl><h2>Sessions, sign-in ban, 2FA</h2>{actions}{activity}'
    return render(
        admin, f"User {user.name}", body, section="users", error=error, notice=notice, status=status
    )


async def _act(admin: Admin, user: User) -> web.StreamResponse:
    form = await admin.request.post()
    action = str(form.get("action", "")) or ("mark_safe" if form.get("cidr") else "")
    store = admin.services.store
    if action == "end_sessions":
        ended = await admin.services.sessions.revoke_user(user.name)
        admin.audit("admin.sessions.revoked", user=user.name, sessions_revoked=ended)
        return await _done(admin, user, f"{ended} session(s) of {user.name} ended.")
    if action == "reset_2fa":
        ended = await accounts.reset_2fa(store, admin.services.sessions, user.name)
        admin.audit("admin.totp.reset", user=user.name, sessions_revoked=ended)
        if admin.services.notifier is not None:  # the user hears of it (docs/notifications.md)
            await admin.services.notifier.two_factor_reset(
                admin.ctx.snapshot, user.name, f"admin {admin.user.name}"
            )
        return await _done(admin, user, f"2FA of {user.name} reset; {ended} session(s) ended.")
    if action == "unlock":
        await accounts.unlock(store, user.name)
        admin.audit("admin.user.unlocked", user=user.name)
        return await _done(admin, user, f"{user.name} can sign in again.")
    if action == "mark_safe":
        fields = {k: str(form.get(k, "")).strip()[:300] for k in ("cidr", "description", "scope")}
        problem = await secops.add_trusted_ip(admin, **fields)
        if problem is not None:
            return await page(admin, user, error=problem, form=fields, status=400)
        return await _done(
            admin, user, f"{fields['cidr']} is trusted for {fields['scope']} from now on."
        )
    return await page(admin, user, error="Unknown action.", status=400)


async def _done(admin: Admin, user: User, notice: str) -> web.StreamResponse:
    """Post/redirect/get: the notice survives the redirect in the admin's session."""
    session = await get_session(admin.request)
    session[NOTICE] = notice
    raise web.HTTPSeeOther(admin.user_url(user.name))
