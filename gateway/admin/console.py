"""The console's front door: who may enter, and which view answers which path.

Mounted on the gateway's page table as `admin/` (gateway/app.py), so the dashboard surface's
allowlist, the CSRF check of every POST and the page headers apply before anything here runs.
Then, in this order:

1. a complete sign-in (every step, 2FA when it applies) of a user with `admin: true`, else 403
   `forbidden` (a browser with no session at all is sent to sign in first, like everywhere);
2. the route: a path under `admin/` and a method, else 404 / 405;
3. the view, which gets an `Admin` (the request, the admin, the snapshot in force).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from aiohttp_session import get_session

from gateway.context import RequestContext, context_of
from gateway.policy import decide
from gateway.policy.snapshot import User
from gateway.web.errors import error_response
from gateway.web.gate import deny, described, login_url
from gateway.web.resources import SERVICES, Services
from gateway.web.sessions import current_login

View = Callable[["Admin"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    pattern: re.Pattern[str]
    methods: frozenset[str]
    view: View


@dataclass(slots=True)
class Admin:
    """One console request: the signed-in gateway admin and what the views need."""

    request: web.Request
    ctx: RequestContext
    services: Services
    user: User
    params: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.ctx.snapshot.prefix

    def url(self, path: str = "", **query: Any) -> str:
        """A console URL; None and "" query values are left out."""
        base = f"{self.prefix}/admin/{path}"
        pairs = {k: v for k, v in query.items() if v not in (None, "")}
        return f"{base}?{urlencode(pairs)}" if pairs else base

    def user_url(self, name: str) -> str:
        return self.url(f"users/{quote(name, safe='')}")

    def csrf(self) -> str:
        return self.services.csrf.field(self.request)

    def audit(self, event: str, **fields: Any) -> None:
        """An `admin.*` record with the admin as principal (docs/http.md)."""
        assert event.startswith("admin."), event
        self.services.audit.record(
            event,
            flush=True,
            request_id=self.ctx.request_id,
            client_ip=self.ctx.client_ip,
            surface="dashboard",
            principal=self.user.name,
            auth=self.ctx.auth,
            decision="allow",
            **fields,
        )


class Console:
    def __init__(self, routes: list[Route]) -> None:
        self._routes = routes

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        ctx = context_of(request)
        refusal = await _require_admin(request, ctx)
        if isinstance(refusal, web.StreamResponse):
            return refusal
        assert ctx.path is not None
        rest = ctx.path[len(ctx.snapshot.prefix) :].lstrip("/")[len("admin/") :]
        for route in self._routes:
            found = route.pattern.fullmatch(rest)
            if found is None:
                continue
            if request.method not in route.methods:
                ctx.decision = decide.deny("method_not_allowed", f"{request.method} not accepted")
                return error_response(
                    request,
                    "method_not_allowed",
                    surface="dashboard",
                    request_id=ctx.request_id,
                    headers={"Allow": ", ".join(sorted(route.methods))},
                )
            admin = Admin(request, ctx, request.app[SERVICES], refusal, found.groupdict())
            return await route.view(admin)
        return deny(request, ctx, decide.deny(decide.NOT_FOUND, "no admin console page here"))


async def _require_admin(request: web.Request, ctx: RequestContext) -> User | web.StreamResponse:
    login = await current_login(request, ctx)
    if login is not None:
        ctx.principal, ctx.auth, ctx.email = login.user.name, login.auth, login.user.email
        if login.user.admin:
            return login.user
        return _forbidden(
            request,
            ctx,
            "admin console: not a gateway admin",
            "The admin console is for gateway admins only.",
        )
    session = await get_session(request)
    half_way = session.get("user")
    if isinstance(half_way, str) and half_way in ctx.snapshot.users:
        # Past the password but not every step (2FA, a forced password change): no console.
        return _forbidden(
            request,
            ctx,
            "admin console: sign-in not finished",
            "Finish signing in (every step, two-factor authentication included) "
            "before opening the admin console.",
            principal=half_way,
        )
    if request.method in ("GET", "HEAD"):
        ctx.decision = decide.deny(decide.UNAUTHENTICATED, "admin console: sent to sign in")
        raise web.HTTPFound(login_url(ctx, described(request)))  # the query as received
    return _forbidden(request, ctx, "admin console: not signed in", "Sign in first.")


def _forbidden(
    request: web.Request,
    ctx: RequestContext,
    reason: str,
    text: str,
    *,
    principal: str | None = None,
) -> web.Response:
    ctx.decision = decide.deny(decide.FORBIDDEN, reason)
    ctx.reasons.append(reason)
    if principal is not None:
        ctx.principal = principal  # the page and the audit record name who tried
    return error_response(
        request, decide.FORBIDDEN, surface="dashboard", request_id=ctx.request_id, detail=text
    )


def html_response(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html")


def esc(value: object) -> str:
    return escape("" if value is None else str(value))
