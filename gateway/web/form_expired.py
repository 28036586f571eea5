"""The answer to a gateway form whose CSRF check failed.

Nearly always an honest cause (the form sat open past a restart or in another tab, or cookies
were cleared), so it says what to do, not "not allowed": the login form comes back with the
name filled in and a new token; other forms get the refusal page that says what to do.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.context import RequestContext
from gateway.policy import decide
from gateway.web import forms
from gateway.web.errors import error_response
from gateway.web.redirects import safe_next

EXPIRED: Final = "The form expired, please try again."


def form_expired(
    request: web.Request,
    ctx: RequestContext,
    page: str,
    form: Any,
    csrf_field: str,
    detail: str,
) -> web.Response:
    """`csrf_field`: a fresh token field (its cookie is set by the caller's page hardening);
    `detail`: what other forms' refusal page says."""
    ctx.decision = decide.deny(decide.FORBIDDEN, "missing or invalid CSRF token")
    ctx.reasons.append(ctx.decision.reason)
    snapshot = ctx.snapshot
    if page == "login":
        body = forms.login(
            f"{snapshot.prefix}/login",
            csrf_field,
            safe_next(str(form.get("next", "")), snapshot.prefix),
            str(form.get("username", "")).strip()[:128],
            EXPIRED,
            brand=snapshot.policy.two_factor.issuer,
        )
        return web.Response(text=body, status=403, content_type="text/html")
    return error_response(
        request, decide.FORBIDDEN, surface=ctx.surface, request_id=ctx.request_id, detail=detail
    )
