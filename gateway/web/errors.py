"""Denials and upstream failures: HTML for people, application/problem+json (RFC 9457) for APIs.

Error pages never include request details beyond the request id, so nothing a client sent (or a
secret) is reflected back.
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web

from gateway.policy import decide
from gateway.web.html import message_page

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
    status, default_title, text = _TEXTS[code]
    title = title or default_title
    if wants_problem_json(request, surface):
        body = {
            "type": "about:blank",
            "title": title,
            "status": status,
            "code": code,
            "detail": detail or text,
            "request_id": request_id,
        }
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/problem+json",
            headers=headers,
        )
    return web.Response(
        status=status,
        text=message_page(title, detail or text, request_id),
        content_type="text/html",
        headers=headers,
    )
