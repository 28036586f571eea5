"""The console's page frame (navigation, who is signed in, sign out) and shared markup pieces,
on the gateway's one layout and stylesheet (gateway/web/html.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape

from aiohttp import web

from gateway.admin.console import Admin, html_response
from gateway.web import forms
from gateway.web.html import page

SECTIONS = (
    ("", "Home"),
    ("incidents", "Incidents"),
    ("users", "Users"),
    ("trusted-ips", "Trusted IPs"),
    ("audit", "Audit"),
)


def render(
    admin: Admin,
    title: str,
    body: str,
    *,
    section: str,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
) -> web.Response:
    links = "".join(
        f'<a href="{escape(admin.url(path))}"'
        + (' aria-current="page"' if path == section else "")
        + f">{escape(name)}</a>"
        for path, name in SECTIONS
    )
    who = (
        f'<span class="who muted">Signed in as <strong>{escape(admin.user.name)}</strong> · '
        f'<a href="{escape(admin.prefix)}/account">Your account</a></span>'
    )
    nav = f'<nav class="top" aria-label="Admin console">{links}{who}</nav>'
    footer = forms.logout_form(f"{admin.prefix}/logout", admin.csrf())
    alerts = ""
    if error:
        alerts += f'<div class="error" role="alert">{escape(error)}</div>'
    if notice:
        alerts += f'<div class="notice" role="status">{escape(notice)}</div>'
    brand = f"{admin.ctx.snapshot.policy.two_factor.issuer} · gateway admin"
    html = page(
        f"{title} · Gateway admin",
        f"<h1>{escape(title)}</h1>{alerts}{body}",
        wide=True,
        footer=footer,
        brand=brand,
        nav=nav,
    )
    return html_response(html, status)


def confirm(
    admin: Admin,
    *,
    title: str,
    question: str,
    action: str,
    fields: dict[str, str],
    button: str,
    cancel: str,
    section: str,
    extra: str = "",
) -> web.Response:
    """The confirmation step of an action that removes or ends something: a plain form that
    posts the same fields the list would, so it works without JavaScript."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    )
    body = (
        f"<p>{escape(question)}</p>"
        f'<form method="post" action="{escape(action)}">{admin.csrf()}{hidden}{extra}'
        f'<div class="actions"><button type="submit" class="danger">{escape(button)}</button>'
        f'<a class="button secondary" href="{escape(cancel)}">Cancel</a></div></form>'
    )
    return render(admin, title, body, section=section)


def table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[str],
    *,
    empty: str,
    label: str | None = None,
) -> str:
    """`rows` are complete `<tr>` elements (trusted markup)."""
    body = "".join(rows)
    if not body:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    aria = f' aria-label="{escape(label)}"' if label else ""
    return (
        f'<div class="scroll"><table{aria}><caption>{escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def when(at: float | None) -> str:
    """A time as people read it in a table: UTC, to the second."""
    if at is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def td(value: object, *, code: bool = False) -> str:
    text = "—" if value is None or value == "" else escape(str(value))
    return f"<td><code>{text}</code></td>" if code and value else f"<td>{text}</td>"
