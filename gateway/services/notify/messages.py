"""What a notification mail says: subject, plain text and HTML, built from outbox rows (pure).

Events (events.py) store in each row's payload what a person needs: a subject that says what
happened, facts (who, from where, when), a list of changes, what to do, and a link into the
admin console. Several rows of one coalesce key become one digest. Nothing secret is ever put
into a payload, so nothing secret can reach a mail.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from gateway.services.store import OutboxRecord

SUBJECT_PREFIX = "[gateway] "


@dataclass(frozen=True, slots=True)
class Mail:
    subject: str
    text: str
    html: str


def utc(at: float) -> str:
    """2026-12-03 07:55:01 UTC: the time format of every mail."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def message_id(rows: Sequence[OutboxRecord], sender: str) -> str:
    """Stable for the notification: the same on every retry, from any instance."""
    first = min(rows, key=lambda r: r.id)
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<gateway.{first.id}.{int(first.created_at * 1000)}@{domain}>"


def _link(payload: dict, base: str | None) -> str | None:
    path = payload.get("link")
    if not base or path is None:
        return None
    return f"{base}/{path}"


def _one(row: OutboxRecord, base: str | None) -> tuple[list[str], list[str]]:
    """Plain-text lines and HTML fragments for one notification."""
    p = row.payload
    text = [p.get("intro", p.get("subject", row.kind)), ""]
    parts = [f"<p>{html.escape(p.get('intro', p.get('subject', row.kind)))}</p>"]
    facts = p.get("facts") or []
    if facts:
        text += [f"{label}: {value}" for label, value in facts] + [""]
        rows_html = "".join(
            f"<tr><th scope='row'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in facts
        )
        parts.append(f"<table>{rows_html}</table>")
    items = p.get("items") or []
    if items:
        text += [f"- {item}" for item in items] + [""]
        parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
    if p.get("action"):
        text += [f"What to do: {p['action']}", ""]
        parts.append(f"<p><strong>What to do:</strong> {html.escape(p['action'])}</p>")
    link = _link(p, base)
    if link:
        text += [f"Open: {link}", ""]
        parts.append(f"<p><a href='{html.escape(link)}'>{html.escape(link)}</a></p>")
    return text, parts


def _digest_subject(rows: Sequence[OutboxRecord]) -> str:
    first = rows[0].payload
    n = len(rows)
    if rows[0].kind == "login.failure":
        sources = len({r.payload.get("ip") for r in rows})
        plural = "address" if sources == 1 else "addresses"
        return f"{n} failed sign-ins for {first.get('user')} from {sources} {plural}"
    return f"{n} notices: {first.get('subject', rows[0].kind)}"


def compose(rows: Sequence[OutboxRecord], public_base: str | None) -> Mail:
    """One mail for one notification, or one digest for several of one coalesce key.

    `public_base` is public_url + prefix (no trailing slash), or None: then no links.
    """
    if len(rows) == 1:
        subject = rows[0].payload.get("subject", rows[0].kind)
        text, parts = _one(rows[0], public_base)
    else:
        subject = _digest_subject(rows)
        first_at, last_at = rows[0].created_at, rows[-1].created_at
        intro = f"{len(rows)} notices between {utc(first_at)} and {utc(last_at)}, oldest first."
        text, parts = [intro, ""], [f"<p>{html.escape(intro)}</p>"]
        lines = [r.payload.get("digest_line") or r.payload.get("subject", r.kind) for r in rows]
        text += [f"- {line}" for line in lines] + [""]
        parts.append("<ol>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ol>")
        last = rows[-1].payload
        if last.get("action"):
            text += [f"What to do: {last['action']}", ""]
            parts.append(f"<p><strong>What to do:</strong> {html.escape(last['action'])}</p>")
        link = _link(last, public_base)
        if link:
            text += [f"Open: {link}", ""]
            parts.append(f"<p><a href='{html.escape(link)}'>{html.escape(link)}</a></p>")
    footer = "Sent by the access gateway. Replies are not read."
    text.append(f"-- \n{footer}")
    parts.append(f"<hr><p><small>{html.escape(footer)}</small></p>")
    body_html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(subject)}</title></head><body>"
        f"<h1>{html.escape(subject)}</h1>{''.join(parts)}</body></html>"
    )
    return Mail(SUBJECT_PREFIX + subject, "\n".join(text), body_html)


def build_message(
    mail: Mail, *, sender: str, recipients: Sequence[str], message_id: str, at: float
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(at, usegmt=True)
    msg["Message-ID"] = message_id
    # RFC 3834: out-of-office replies and bounces-to-robots must not answer this mail.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    return msg
