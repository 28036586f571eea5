"""The access pipeline, in the order of PRODUCT.md section 4; each step returns early on a denial.

    client IP (observe middleware) -> normalise + match app -> surface allowlist
    -> authenticate (session | API key) -> authorize (grant -> role -> rules) -> forward

Everything it reads comes from the one snapshot the request started with (ctx.snapshot).
"""

from __future__ import annotations

import hashlib
import time
from urllib.parse import quote

from aiohttp import web

from gateway.context import RequestContext, context_of
from gateway.policy import decide
from gateway.policy.decide import Decision
from gateway.web.errors import error_response
from gateway.web.identity import identity_headers
from gateway.web.paths import AmbiguousPath, normalize_path, path_has_prefix
from gateway.web.proxy import UpstreamError
from gateway.web.resources import SERVICES
from gateway.web.sessions import current_login

API_KEY_CHALLENGE = 'Bearer realm="gateway", charset="UTF-8"'


def deny(request: web.Request, ctx: RequestContext, decision: Decision) -> web.Response:
    ctx.decision = decision
    ctx.reasons.append(decision.reason)
    headers = None
    if decision.code == decide.UNAUTHENTICATED and ctx.surface == "api":
        headers = {"WWW-Authenticate": API_KEY_CHALLENGE}
    return error_response(
        request,
        decision.code or decide.FORBIDDEN,
        surface=ctx.surface,
        request_id=ctx.request_id,
        headers=headers,
    )


def request_host(request: web.Request) -> str | None:
    """The Host header, lower-cased, without port (IPv6 literals keep their brackets)."""
    host = request.headers.get("Host")
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.split(":", 1)[0]


async def entry(request: web.Request) -> web.StreamResponse:
    """The one catch-all route: the gateway's own pages under {prefix}, else an app."""
    ctx = context_of(request)
    snapshot = ctx.snapshot
    raw = request.raw_path
    cut = raw.find("?")
    try:
        ctx.path = normalize_path(raw if cut < 0 else raw[:cut])
    except AmbiguousPath as exc:
        return deny(request, ctx, decide.deny(decide.BAD_REQUEST, f"ambiguous path: {exc.reason}"))
    if path_has_prefix(ctx.path, snapshot.prefix):
        return await request.app[SERVICES].pages.dispatch(request, ctx)

    app = decide.match_route(snapshot, request_host(request), ctx.path)
    if app is None:
        return deny(request, ctx, decide.deny(decide.NOT_FOUND, "no app matches host and path"))
    ctx.app, ctx.surface = app, app.surface

    verdict = check_surface(ctx)
    if not verdict.allowed:
        return deny(request, ctx, verdict)

    if app.surface == "api":
        refusal = authenticate_api(request, ctx)
    else:
        refusal = await authenticate_dashboard(request, ctx)
    if refusal is not None:
        return refusal

    grants = (
        snapshot.users[ctx.principal].grants
        if ctx.auth != "api-key"
        else snapshot.accounts[ctx.principal].grants  # type: ignore[index]
    )
    verdict, ctx.role = decide.authorize(snapshot, grants, app, request.method, ctx.path)
    if not verdict.allowed:
        return deny(request, ctx, verdict)
    ctx.decision = verdict
    ctx.reasons.append(verdict.reason)

    services = request.app[SERVICES]
    try:
        return await services.forwarder.forward(
            request,
            ctx,
            identity_headers(ctx, services.keyring.signer, time.time()),
            snapshot.config.sessions.cookie_name,
        )
    except UpstreamError as exc:
        return deny(request, ctx, decide.deny(exc.code, f"upstream {app.upstream}: {exc.code}"))


def check_surface(ctx: RequestContext) -> Decision:
    """Step 3: the surface allowlist; monitor mode lets through and notes the would-be denial."""
    snapshot = ctx.snapshot
    surface = snapshot.surfaces[ctx.surface]  # type: ignore[index]
    verdict = decide.check_allowlist(surface, snapshot.protection_enabled, ctx.client_addr)
    if verdict.monitored:
        ctx.monitored.append(f"deny:{verdict.code}")
        ctx.reasons.append(verdict.reason)
    return verdict


def presented_api_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


def authenticate_api(request: web.Request, ctx: RequestContext) -> web.Response | None:
    """Step 4 on the api surface: a service account's key; passwords never work here."""
    key = presented_api_key(request)
    if key is None:
        return deny(request, ctx, decide.deny(decide.UNAUTHENTICATED, "no API key presented"))
    account = decide.find_account(ctx.snapshot, hashlib.sha256(key.encode()).digest())
    if account is None:
        return deny(request, ctx, decide.deny(decide.UNAUTHENTICATED, "unknown API key"))
    verdict = decide.check_account(account, ctx.client_addr, time.time())
    if not verdict.allowed:
        ctx.principal = account.name
        return deny(request, ctx, verdict)
    ctx.principal, ctx.auth = account.name, "api-key"
    ctx.reasons.append(verdict.reason)
    return None


async def authenticate_dashboard(request: web.Request, ctx: RequestContext) -> web.Response | None:
    """Step 4 on the dashboard surface: a complete sign-in, else the login page."""
    login = await current_login(request, ctx)
    if login is not None:
        ctx.principal, ctx.auth, ctx.email = login.user.name, login.auth, login.user.email
        return None
    if request.method not in ("GET", "HEAD"):
        return deny(request, ctx, decide.deny(decide.UNAUTHENTICATED, "no valid session"))
    ctx.decision = decide.deny(decide.UNAUTHENTICATED, "no valid session: sent to sign in")
    target = ctx.path or "/"
    raw = request.raw_path
    if "?" in raw:
        target += raw[raw.find("?") :]
    location = f"{ctx.snapshot.prefix}/login?next={quote(target, safe='')}"
    raise web.HTTPFound(location)
