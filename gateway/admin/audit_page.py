"""`admin/audit`: search the audit trail (a GET form), newest first, paginated, and the same
search as JSON Lines (`format=jsonl`). The reading itself is gateway/services/audit_search.py,
run in a thread: a search over a large trail never blocks the event loop."""

from __future__ import annotations

import asyncio
import time
from html import escape
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway.admin.console import Admin
from gateway.admin.layout import render, table, td
from gateway.services.audit_search import (
    FILTER_FIELDS,
    AuditQuery,
    QueryError,
    export_batches,
    search_page,
    trail_files,
)
from gateway.services.audit_verify import BASE_FIELDS, CHAIN_FIELDS
from gateway.web.pages import PAGE_HEADERS

PAGE_SIZE = 50
MAX_PAGE = 100_000
_SKIP_IN_DETAILS = frozenset(BASE_FIELDS) | frozenset(CHAIN_FIELDS)
_LABELS = {
    "since": "Since (ISO 8601)",
    "until": "Until (ISO 8601)",
    "event": "Event",
    "principal": "Principal",
    "client_ip": "Client IP or network",
    "app": "App",
    "decision": "Decision",
}
_HINTS = {
    "since": "2026-12-03T08:00:00Z",
    "until": "2026-12-03",
    "event": "login.failure, admin.*",
    "decision": "allow, deny, deny:forbidden",
}
_EVENTS = (
    "request",
    "login.success",
    "login.failure",
    "login.banned",
    "totp.enrolled",
    "totp.failure",
    "totp.reset",
    "password.changed",
    "session.revoked",
    "policy.reloaded",
    "policy.rejected",
    "incident.opened",
    "incident.acknowledged",
    "incident.resolved",
    "trusted_ip.added",
    "trusted_ip.removed",
    "notification.sent",
    "notification.failed",
    "system.message",
    "admin.*",
)


async def view(admin: Admin) -> web.StreamResponse:
    params = {f: admin.request.query.get(f, "") for f in FILTER_FIELDS}
    error = None
    try:
        query = AuditQuery.from_params(params)
    except QueryError as exc:
        query, error = None, str(exc)
    page_text = admin.request.query.get("page", "")
    page = _page_number(page_text)
    if page is None:
        error = error or f"page: {page_text[:20]!r} is not a page number (1, 2, 3...)"
        page = 1
    files = trail_files(admin.ctx.snapshot.paths.audit_file)
    if admin.request.query.get("format") == "jsonl":
        if query is None or error:
            raise web.HTTPBadRequest(text=f"{error}\n", content_type="text/plain")
        return await _export(admin, files, query, page if page_text else None)

    form = _form(admin, params)
    if query is None or error:
        return render(admin, "Audit search", form, section="audit", status=400, error=error)
    started = time.perf_counter()
    result = await asyncio.to_thread(search_page, files, query, page, PAGE_SIZE)
    took = time.perf_counter() - started
    rows = (_row(r) for r in result.records)
    results = table(
        f"Page {page}, newest first",
        ("Time (UTC)", "Event", "Principal", "Client IP", "App", "Decision", "Details"),
        rows,
        empty="No audit records match." if page == 1 else "No records on this page.",
        label="Audit records",
    )
    pager = _pager(admin, params, page, result.more)
    export = admin.url("audit", **params, format="jsonl")
    summary = (
        f'<p class="muted">{len(result.records)} record(s) on this page, searched in '
        f"{took:.2f} s over {len(files)} file(s). "
        f'<a href="{escape(export)}">Download every match as JSON Lines</a></p>'
    )
    return render(admin, "Audit search", form + summary + results + pager, section="audit")


def _page_number(text: str) -> int | None:
    if not text:
        return 1
    if not text.isdigit():
        return None
    number = int(text)
    return number if 1 <= number <= MAX_PAGE else None


def _form(admin: Admin, params: dict[str, str]) -> str:
    fields = []
    for name in FILTER_FIELDS:
        hint = _HINTS.get(name)
        described = f' aria-describedby="hint-{name}"' if hint else ""
        listed = ' list="known-events"' if name == "event" else ""
        fields.append(
            f'<div><label for="f-{name}">{escape(_LABELS[name])}</label>'
            f'<input type="text" id="f-{name}" name="{name}" value="{escape(params[name])}"'
            f' autocomplete="off" spellcheck="false"{described}{listed}>'
            + (f'<p id="hint-{name}" class="muted">e.g. {escape(hint)}</p>' if hint else "")
            + "</div>"
        )
    options = "".join(f'<option value="{escape(e)}"></option>' for e in _EVENTS)
    return (
        f'<form method="get" action="{escape(admin.url("audit"))}" class="filters"'
        ' role="search" aria-label="Audit search">'
        + "".join(fields)
        + f'<datalist id="known-events">{options}</datalist>'
        '<div class="actions"><button type="submit">Search</button>'
        f'<a class="button secondary" href="{escape(admin.url("audit"))}">Clear</a></div></form>'
    )


def _row(record: dict[str, Any]) -> str:
    details = {k: v for k, v in record.items() if k not in _SKIP_IN_DETAILS}
    text = " ".join(f"{k}={_short(v)}" for k, v in details.items() if v is not None)
    if len(text) > 400:
        text = text[:400] + "…"
    return (
        f"<tr><td class='nowrap'>{escape(str(record.get('ts') or '—'))}</td>"
        f"{td(record.get('event'))}{td(record.get('principal'))}"
        f"{td(record.get('client_ip'))}{td(record.get('app'))}{td(record.get('decision'))}"
        f"<td><code>{escape(text)}</code></td></tr>"
    )


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _pager(admin: Admin, params: dict[str, str], page: int, more: bool) -> str:
    links = []
    if page > 1:
        links.append(
            f'<a class="button secondary small" rel="prev" '
            f'href="{escape(admin.url("audit", **params, page=page - 1))}">Newer records</a>'
        )
    if more:
        links.append(
            f'<a class="button secondary small" rel="next" '
            f'href="{escape(admin.url("audit", **params, page=page + 1))}">Older records</a>'
        )
    if not links:
        return ""
    return f'<nav class="actions" aria-label="Pages">{"".join(links)}</nav>'


async def _export(
    admin: Admin, files: list[Path], query: AuditQuery, page: int | None
) -> web.StreamResponse:
    """Every match (or, with `page`, that page) as stored: JSON Lines, hashes included, so the
    export can be checked with `gateway audit verify` semantics record by record."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    response = web.StreamResponse(
        headers={
            **PAGE_HEADERS,
            "Content-Type": "application/jsonl; charset=utf-8",
            "Content-Disposition": f'attachment; filename="audit-{stamp}.jsonl"',
        }
    )
    admin.services.csrf.finish(admin.request, response)
    await response.prepare(admin.request)
    if page is not None:
        result = await asyncio.to_thread(search_page, files, query, page, PAGE_SIZE)
        if result.lines:
            await response.write(b"\n".join(result.lines) + b"\n")
    else:
        batches = export_batches(files, query)
        try:
            while True:
                batch = await asyncio.to_thread(next, batches, None)
                if batch is None:
                    break
                await response.write(batch)
        finally:
            await asyncio.to_thread(batches.close)
    await response.write_eof()
    return response
