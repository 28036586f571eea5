"""Denials and upstream failures: HTML for people, application/problem+json (RFC 9457) for APIs.

An HTML error page says who is signed in, what was denied (method, path and app: never the query
string, headers or body, which may carry secrets) and offers a way back; every value is escaped.
problem+json answers carry only the code, a fixed text and the request id.
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web

from gateway.context import CONTEXT_KEY, RequestContext
from gateway.policy import decide
from gateway.web.html import message_page

_SAYS_WHO = frozenset({decide.FORBIDDEN, decide.NOT_FOUND, "method_not_allowed"})
_SAYS_WHAT = _SAYS_WHO | {decide.IP_NOT_ALLOWED}
_MAX_PATH_SHOWN = 120

_TEXTS: Final[dict[str, tuple[int, str, str]]] = {
    decide.IP_NOT_ALLOWED: (403, "Access denied", "Your network is not allowed to reach this."),
    decide.UNAUTHENTICATED: (401, "Sign-in required", "Valid credentials are required."),
    decide.FORBIDDEN: (403, "Forbidden", "Your account is not allowed to do this."),
    decide.BAD_REQUEST: (400, "Bad request", "The request could not be understood."),
    decide.NOT_FOUND: (404, "Not found", "Nothing is served at this address."),
    decide.UPSTREAM_UNAVAILABLE: (
        502,
        "Service unavailable",
        "The service behind the gateway did not answer. Try again in a moment.",
    ),
    decide.UPSTREAM_TIMEOUT: (
        504,
        "Service timed out",
        "The service behind the gateway took too long to answer. Try again in a moment.",
    ),
    "method_not_allowed": (405, "Method not allowed", "This page does not accept that method."),
    "too_many_attempts": (429, "Too many attempts", "Too many failed attempts. Try again later."),
    "not_ready": (503, "Not ready", "The gateway is starting or cannot reach its state store."),
}


def wants_problem_json(request: web.Request, surface: str | None) -> bool:
    if surface == "api":
        return True
    accept = request.headers.get("Accept", "")
    return "json" in accept and "text/html" not in accept


PROBLEM_JSON: Final = "application/problem+json"


def problem_json(
    code: str, *, request_id: str | None, detail: str | None = None, title: str | None = None
) -> tuple[int, bytes]:
    """The status and the RFC 9457 body of a denial for programs."""
    status, default_title, text = _TEXTS[code]
    body = {
        "type": "about:blank",
        "title": title or default_title,
        "status": status,
        "code": code,
        "detail": detail or text,
        "request_id": request_id,
    }
    return status, orjson.dumps(body)


def error_response(
    request: web.Request,
    code: str,
    *,
    surface: str | None,
    request_id: str | None,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    title: str | None = None,
) -> web.Response:
    if wants_problem_json(request, surface):
        status, body = problem_json(code, request_id=request_id, detail=detail, title=title)
        return web.Response(status=status, body=body, content_type=PROBLEM_JSON, headers=headers)
    status, default_title, text = _TEXTS[code]
    title = title or default_title
    ctx: RequestContext | None = request.get(CONTEXT_KEY)
    facts, links = _facts_and_ways(request, ctx, code, status)
    return web.Response(
        status=status,
        text=message_page(
            title,
            detail or text,
            request_id,
            facts=facts,
            links=links,
            brand=ctx.snapshot.policy.two_factor.issuer if ctx else "",
        ),
        content_type="text/html",
        headers=headers,
    )


def _facts_and_ways(
    request: web.Request, ctx: RequestContext | None, code: str, status: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Who is signed in and what was denied, and the links back (docs/http.md)."""
    if ctx is None:
        return [], [("/", "Go to the start page")]
    facts: list[tuple[str, str]] = []
    if code in _SAYS_WHO:
        if ctx.principal:
            who = ctx.principal + (f" ({ctx.email})" if ctx.email else "")
        else:
            who = "nobody (not signed in)"
        facts.append(("Signed in as", who))
    if code in _SAYS_WHAT:
        path = ctx.path if ctx.path is not None else request.path
        if len(path) > _MAX_PATH_SHOWN:
            path = path[:_MAX_PATH_SHOWN] + "…"
        what = f"{request.method} {path}"
        if ctx.app is not None:
            what += f" (app {ctx.app.name})"
        facts.append(("Denied" if status != 404 else "Not found", what))
    if code == decide.IP_NOT_ALLOWED and ctx.client_ip:
        facts.append(("Your address", ctx.client_ip))
    prefix = ctx.snapshot.prefix
    links = [("/", "Go to the start page")]
    if status >= 500:
        links.insert(0, (request.path if request.method == "GET" else "/", "Try again"))
    elif ctx.principal and ctx.auth != "api-key":
        links += [(f"{prefix}/account", "Your account"), (f"{prefix}/logout", "Sign out")]
    elif code != decide.IP_NOT_ALLOWED:
        links.append((f"{prefix}/login", "Sign in"))
    return facts, links
