"""The access pipeline, in the order of docs/http.md; each step returns early on a denial.

    client IP (observe middleware) -> normalise + match app -> surface allowlist
    -> authenticate (session | API key) -> authorize (grant -> role -> rules) -> forward

The steps decide on a `Described` request: the request itself in full-proxy mode, or the request
nginx, Traefik or Caddy describe in forward-auth mode (gateway.web.forward_auth). Both modes run
these same steps; only what is done with the decision differs (forward, or answer the proxy).
Everything the steps read comes from the one snapshot the request started with (ctx.snapshot).
"""

from __future__ import annotations

import hashlib
import time
from typing import NamedTuple
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.context import RequestContext, context_of
from gateway.policy import decide
from gateway.policy.decide import Decision
from gateway.web.errors import error_response
from gateway.web.hosts import BadHost, canonical_host
from gateway.web.identity import identity_headers
from gateway.web.paths import AmbiguousPath, normalize_path, path_has_prefix
from gateway.web.resources import SERVICES
from gateway.web.sessions import current_login, note_signed_in
from gateway.web.upstream.errors import UpstreamError
from gateway.web.websocket import check_origin

# RFC 6750 section 3: no error code when no credentials came; invalid_token for a wrong or
# expired key, so a program can tell "configure a key" from "your key is wrong".
API_KEY_CHALLENGE = 'Bearer realm="gateway", charset="UTF-8"'
INVALID_KEY_CHALLENGE = (
    'Bearer realm="gateway", charset="UTF-8", error="invalid_token", '
    'error_description="The API key is not valid or has expired"'
)
NO_KEY_REASON = "no API key presented"
NO_KEY_DETAIL = "This API needs a key: send it as `Authorization: Bearer <key>` or `X-API-Key`."
INVALID_KEY_DETAIL = "The API key is not valid or has expired."


class Described(NamedTuple):
    """The request the pipeline decides on.

    `headers` is where credentials (session cookie, API key) are read: in both modes the headers
    of the request the gateway received, since nginx, Traefik and Caddy pass the client's headers
    on to the auth endpoint.
    """

    method: str
    host: str | None  # the Host as the client sent it, port included
    target: str  # path and query exactly as on the wire (origin-form)
    headers: CIMultiDictProxy[str]

    @property
    def raw_path(self) -> str:
        cut = self.target.find("?")
        return self.target if cut < 0 else self.target[:cut]

    @property
    def query(self) -> str:
        """The query with its "?", or ""."""
        cut = self.target.find("?")
        return "" if cut < 0 else self.target[cut:]


def described(request: web.Request) -> Described:
    """The request itself (full-proxy mode)."""
    return Described(request.method, request.headers.get("Host"), request.raw_path, request.headers)


class Denial(NamedTuple):
    """What a denial answers: the code (and so the status), and for programs a challenge."""

    code: str
    headers: dict[str, str] | None
    detail: str | None
    title: str | None


def denial(ctx: RequestContext, decision: Decision) -> Denial:
    """Settle `decision` (a denial) and say how to answer it."""
    settle(ctx, decision)
    headers = title = detail = None
    if decision.code == decide.UNAUTHENTICATED and ctx.surface == "api":
        title = "Unauthorized"  # written for programs, not "Sign-in required"
        if decision.reason == NO_KEY_REASON:
            headers, detail = {"WWW-Authenticate": API_KEY_CHALLENGE}, NO_KEY_DETAIL
        else:  # a wrong or expired key
            headers, detail = {"WWW-Authenticate": INVALID_KEY_CHALLENGE}, INVALID_KEY_DETAIL
    return Denial(decision.code or decide.FORBIDDEN, headers, detail, title)


def deny(request: web.Request, ctx: RequestContext, decision: Decision) -> web.Response:
    code, headers, detail, title = denial(ctx, decision)
    return error_response(
        request,
        code,
        surface=ctx.surface,
        request_id=ctx.request_id,
        headers=headers,
        detail=detail,
        title=title,
    )


def settle(ctx: RequestContext, decision: Decision) -> None:
    """The decision this request ends with, for the response, the audit record and metrics."""
    ctx.decision = decision
    ctx.reasons.append(decision.reason)


async def entry(request: web.Request) -> web.StreamResponse:
    """The one catch-all route: the gateway's own pages under {prefix}, else an app."""
    ctx = context_of(request)
    snapshot = ctx.snapshot
    view = described(request)
    if len(request.headers.getall("Host", ())) > 1:  # the parser refuses these too
        return deny(request, ctx, decide.deny(decide.BAD_REQUEST, "several Host headers"))
    refusal = locate(ctx, view)
    if refusal is not None:
        return deny(request, ctx, refusal)
    assert ctx.path is not None
    if path_has_prefix(ctx.path, snapshot.prefix):
        return await request.app[SERVICES].pages.dispatch(request, ctx)

    verdict = await decide_access(request, ctx, view)
    if not verdict.allowed:
        if sends_to_sign_in(ctx, view, verdict):
            settle(ctx, decide.deny(verdict.code, f"{verdict.reason}: sent to sign in"))  # type: ignore[arg-type]
            raise web.HTTPFound(login_url(ctx, view))
        return deny(request, ctx, verdict)
    settle(ctx, verdict)

    services = request.app[SERVICES]
    app = ctx.app
    assert app is not None
    try:
        return await services.forwarder.forward(
            request,
            ctx,
            identity_headers(ctx, services.keyring.signer, time.time()),
            snapshot.config.sessions.cookie_name,
        )
    except UpstreamError as exc:
        return deny(request, ctx, decide.deny(exc.code, f"upstream {app.upstream}: {exc}"))


def locate(ctx: RequestContext, view: Described) -> Decision | None:
    """Step 2, first half: the one normalised path (ctx.path) and the one canonical host
    (ctx.host), each matched, authorised and forwarded."""
    try:
        ctx.path = normalize_path(view.raw_path)
    except AmbiguousPath as exc:
        return decide.deny(decide.BAD_REQUEST, f"ambiguous path: {exc.reason}")
    try:
        ctx.host = canonical_host(view.host) if view.host else None
    except BadHost as exc:
        return decide.deny(decide.BAD_REQUEST, f"invalid Host: {exc}")
    return None


async def decide_access(request: web.Request, ctx: RequestContext, view: Described) -> Decision:
    """Steps 2-5 on a located request outside {prefix}: match, allowlist, authenticate, authorize.

    Fills ctx (app, surface, principal, auth, email, role) as it goes and returns the decision;
    the caller settles it and answers.
    """
    snapshot = ctx.snapshot
    assert ctx.path is not None
    app = decide.match_route(snapshot, ctx.host.name if ctx.host else None, ctx.path)
    if app is None:
        await note_signed_in(request, ctx)  # the 404 page says who is signed in
        return decide.deny(decide.NOT_FOUND, "no app matches host and path")
    ctx.app, ctx.surface = app, app.surface
    if app.surface == "api":
        return decide_api(ctx, view)

    verdict = admit(ctx, view)
    if not verdict.allowed:
        return verdict
    verdict = await authenticate_dashboard(request, ctx)
    if not verdict.allowed:
        return verdict
    request.app[SERVICES].security.count_request(ctx.principal)  # type: ignore[arg-type]
    return authorize(ctx, view)


def decide_api(ctx: RequestContext, view: Described) -> Decision:
    """Steps 3-5 on the api surface, for a request matched to ctx.app. Nothing here awaits:
    the key, the account and the rules are all in the snapshot."""
    verdict = admit(ctx, view)
    if not verdict.allowed:
        return verdict
    verdict = authenticate_api(ctx, view)
    if not verdict.allowed:
        return verdict
    return authorize(ctx, view)


def admit(ctx: RequestContext, view: Described) -> Decision:
    """Step 3, and a cross-site WebSocket handshake refused before any credential is read."""
    verdict = check_surface(ctx)
    if not verdict.allowed:
        return verdict
    refused = check_origin(view.headers, view.host, ctx)  # cross-site WebSocket hijacking
    return verdict if refused is None else refused


def authorize(ctx: RequestContext, view: Described) -> Decision:
    """Step 5: the principal's grant for ctx.app, its role, the role's rules (sets ctx.role)."""
    snapshot = ctx.snapshot
    assert ctx.app is not None and ctx.path is not None
    grants = (
        snapshot.users[ctx.principal].grants
        if ctx.auth != "api-key"
        else snapshot.accounts[ctx.principal].grants  # type: ignore[index]
    )
    verdict, ctx.role = decide.authorize(
        snapshot, grants, ctx.app, view.method, ctx.path, requested_overrides(view)
    )
    return verdict


def requested_overrides(view: Described) -> tuple[str, ...]:
    """Method overrides a backend may honour (X-HTTP-Method-Override..., `_method=`)."""
    headers = view.headers
    values = [v for name in decide.METHOD_OVERRIDE_HEADERS for v in headers.getall(name, ())]
    query = view.query[1:]
    if not values and "%" not in query and "method" not in query.lower():
        return ()
    return decide.method_overrides(values, query)


def sends_to_sign_in(ctx: RequestContext, view: Described, verdict: Decision) -> bool:
    """A dashboard page load without a session goes to the login page instead of a 401."""
    return (
        verdict.code == decide.UNAUTHENTICATED
        and ctx.surface == "dashboard"
        and view.method in ("GET", "HEAD")
    )


def login_url(ctx: RequestContext, view: Described) -> str:
    """The login page, relative, with `next` = the normalised path and the query as received."""
    target = (ctx.path or "/") + view.query
    return f"{ctx.snapshot.prefix}/login?next={quote(target, safe='')}"


def check_surface(ctx: RequestContext) -> Decision:
    """Step 3: the surface allowlist; monitor mode lets through and notes the would-be denial."""
    snapshot = ctx.snapshot
    surface = snapshot.surfaces[ctx.surface]  # type: ignore[index]
    verdict = decide.check_allowlist(surface, snapshot.protection_enabled, ctx.client_addr)
    if verdict.monitored:
        ctx.monitored.append(f"deny:{verdict.code}")
        ctx.reasons.append(verdict.reason)
    return verdict


def presented_api_key(headers: CIMultiDictProxy[str]) -> str | None:
    header = headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("X-API-Key", "").strip()
    return key or None


def authenticate_api(ctx: RequestContext, view: Described) -> Decision:
    """Step 4 on the api surface: a service account's key; passwords never work here."""
    key = presented_api_key(view.headers)
    if key is None:
        return decide.deny(decide.UNAUTHENTICATED, NO_KEY_REASON)
    # surrogateescape: header bytes that are not UTF-8 hash as they came (an unknown key),
    # instead of failing the request
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    account = decide.find_account(ctx.snapshot, digest)
    if account is None:
        return decide.deny(decide.UNAUTHENTICATED, "unknown API key")
    ctx.principal = account.name
    verdict = decide.check_account(account, ctx.client_addr, time.time())
    if verdict.allowed:
        ctx.auth = "api-key"
        ctx.reasons.append(verdict.reason)
    return verdict


async def authenticate_dashboard(request: web.Request, ctx: RequestContext) -> Decision:
    """Step 4 on the dashboard surface: a complete sign-in (the session cookie of `request`)."""
    login = await current_login(request, ctx)
    if login is None:
        return decide.deny(decide.UNAUTHENTICATED, "no valid session")
    ctx.principal, ctx.auth, ctx.email = login.user.name, login.auth, login.user.email
    return decide.allow(f"signed in as {login.user.name!r} ({login.auth})")
