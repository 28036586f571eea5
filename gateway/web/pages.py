"""The gateway's own pages under {prefix}: a fixed table, each entry with its access rule.

open       healthz, readyz, jwks.json: anyone who can reach the gateway
ops        metrics: client IP in `ops_allow`
dashboard  login, 2FA, account, admin: the dashboard surface and its allowlist; POSTs carry
           a CSRF token. The views themselves decide who is signed in far enough.
proxy      authz/* (forward-auth): the TCP peer in `trusted_proxies`
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from gateway.context import RequestContext
from gateway.policy import decide
from gateway.web.errors import error_response
from gateway.web.form_expired import form_expired
from gateway.web.html import COPY_SCRIPT_HASH
from gateway.web.origin import from_trusted_proxy
from gateway.web.sessions import note_signed_in

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Access = Literal["open", "ops", "dashboard", "proxy"]


@dataclass(frozen=True, slots=True)
class Page:
    methods: frozenset[str]
    handler: Handler
    access: Access


class Pages:
    def __init__(self) -> None:
        self._table: dict[str, Page] = {}
        self._mounts: list[tuple[str, Page]] = []

    def add(self, path: str, handler: Handler, access: Access, methods: tuple[str, ...]) -> None:
        """path is relative to the prefix, e.g. 'login' or 'admin/'."""
        names = set(methods)
        if "GET" in names:
            names.add("HEAD")
        self._table[path] = Page(frozenset(names), handler, access)

    def mount(self, prefix: str, handler: Handler, access: Access) -> None:
        """Every path under `prefix` (e.g. 'admin/') goes to `handler`, which routes further
        and answers 405 itself; the access rule, CSRF check and page headers apply as above."""
        self._mounts.append((prefix, Page(frozenset({"GET", "HEAD", "POST"}), handler, access)))

    def _find(self, name: str) -> Page | None:
        page = self._table.get(name)
        if page is None:
            for prefix, mounted in self._mounts:
                if name.startswith(prefix):
                    return mounted
        return page

    async def dispatch(self, request: web.Request, ctx: RequestContext) -> web.StreamResponse:
        from gateway.web.gate import check_surface, deny
        from gateway.web.resources import SERVICES

        snapshot = ctx.snapshot
        assert ctx.path is not None
        name = ctx.path[len(snapshot.prefix) :].lstrip("/")
        page = self._find(name)
        if page is None and name == "":
            raise web.HTTPFound(f"{snapshot.prefix}/account")
        if page is None and self._find(name + "/") is not None:
            raise web.HTTPFound(f"{snapshot.prefix}/{name}/")
        if page is None:
            ctx.surface = "dashboard"
            await note_signed_in(request, ctx)
            return deny(request, ctx, decide.deny(decide.NOT_FOUND, "no gateway page here"))
        if page.access == "ops":
            ip = ctx.client_addr
            if ip is None or not snapshot.ops_allow.contains(ip[1], ip[0]):
                return deny(request, ctx, decide.deny(decide.IP_NOT_ALLOWED, "not in ops_allow"))
        elif page.access == "proxy":
            if not from_trusted_proxy(request, snapshot.trusted_proxies):
                return deny(
                    request, ctx, decide.deny(decide.FORBIDDEN, "the peer is not a trusted proxy")
                )
        elif page.access == "dashboard":
            ctx.surface = "dashboard"
            verdict = check_surface(ctx)
            if not verdict.allowed:
                return deny(request, ctx, verdict)
        if request.method not in page.methods:
            ctx.decision = decide.deny("method_not_allowed", f"{request.method} not accepted")
            return error_response(
                request,
                "method_not_allowed",
                surface=ctx.surface,
                request_id=ctx.request_id,
                headers={"Allow": ", ".join(sorted(page.methods))},
            )
        if page.access == "dashboard" and request.method == "POST":
            form = await request.post()
            submitted = form.get("csrf_token")
            csrf = request.app[SERVICES].csrf
            if not isinstance(submitted, str) or not csrf.valid(request, submitted):
                await note_signed_in(request, ctx)
                expired = form_expired(request, ctx, name, form, csrf.field(request), CSRF_REFUSED)
                _harden(request, expired)
                return expired
        ctx.decision = ctx.decision or decide.allow(f"gateway page {name or '/'}")
        if page.access != "dashboard":
            return await page.handler(request)
        try:
            response = await page.handler(request)
        except web.HTTPException as redirect:  # views redirect by raising: same headers
            _harden(request, redirect)
            raise
        _harden(request, response)
        return response


def _harden(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every page of the sign-in flow carries, redirects included."""
    from gateway.web.resources import SERVICES

    request.app[SERVICES].csrf.finish(request, response)
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)


CSRF_REFUSED = (
    "The form's security token was missing or did not match (a page left open too long, or a "
    "form sent from another site). Nothing was changed: open the page again and retry."
)

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src '{COPY_SCRIPT_HASH}'; "
        "img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
