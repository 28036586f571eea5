"""Forward-auth mode (docs/forward-auth.md): nginx, Traefik or Caddy proxy, the gateway decides.

The views only turn the proxy's description of the original request into a `Described` request,
run the same pipeline steps as full-proxy mode (gate.locate, gate.decide_access) and turn the
decision into the answer each proxy understands:

  {prefix}/authz/auth-request   nginx auth_request. In: X-Original-URL, X-Original-Method.
                                Out: 200 | 401 (+ X-Gateway-Login for a browser page load,
                                WWW-Authenticate on the api surface) | 403 | 400 (ambiguous).
                                nginx acts on 2xx, 401 and 403 only, so "no app matches" is a
                                403 here (audited as deny:not_found).
  {prefix}/authz/forward-auth   Traefik forwardAuth, Caddy forward_auth. In: X-Forwarded-Method,
                                -Host, -Uri (and -Proto). Out: 200 | 302 to the login page for a
                                browser page load on the dashboard surface | the answers of
                                section 4 (HTML, or problem+json on the api surface).

Both are pages with access "proxy": only peers in trusted_proxies reach them (gateway.web.pages);
the client IP is the one the proxy reports, found as for any request (observe middleware).
The session cookie and API key are read from the headers of the auth request itself: all three
proxies pass the client's headers on to it.

The backend must be sent the very path the decision was taken on. A 200 carries, besides the
identity headers of section 5, X-Gateway-Path: the normalised path, which nginx forwards
instead of the path it received. Traefik and Caddy cannot forward a path from the answer
(Caddy's rewrite re-escapes it), so forward-auth answers a path that normalising changes
("//", ".", "..", "%41") with a 308 to its normal form: the path those proxies then forward
is the normal one the decision is taken on.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.context import RequestContext, context_of
from gateway.policy import decide
from gateway.policy.decide import Decision
from gateway.web import gate
from gateway.web.gate import Described
from gateway.web.identity import identity_headers
from gateway.web.paths import path_has_prefix
from gateway.web.resources import SERVICES

if TYPE_CHECKING:
    from gateway.services.signing import Signer

MODE: Final = "forward-auth"
PATH_HEADER: Final = "X-Gateway-Path"
LOGIN_HEADER: Final = "X-Gateway-Login"
NOT_NORMAL: Final = "path not in normal form"
# Every method the described request may have had; the auth request itself is usually a GET
# (Traefik, Caddy), but nginx may send the original method.
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
# nginx's auth_request understands only these; anything else becomes a 500 there.
_NGINX_STATUS: Final = {decide.UNAUTHENTICATED: 401, decide.BAD_REQUEST: 400}


class NotDescribed(ValueError):
    """The proxy's description is missing, repeated or malformed (answered 400)."""


def _one(headers: CIMultiDictProxy[str], name: str) -> str:
    """Exactly one non-empty header: two copies would be two descriptions, so refuse."""
    values = headers.getall(name, ())
    if len(values) != 1 or not values[0].strip():
        raise NotDescribed(f"{name}: {'missing' if not values else 'repeated or empty'}")
    return values[0].strip()


def _method(value: str, name: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise NotDescribed(f"{name}: not an HTTP method")
    return value


def _host(value: str, name: str) -> str:
    if "," in value or not value:
        raise NotDescribed(f"{name}: not one host")
    return value


def _target(value: str, name: str) -> str:
    if value.startswith("?"):
        return "/" + value
    if not value.startswith("/"):
        raise NotDescribed(f"{name}: not an origin-form path")
    return value


def from_original_url(headers: CIMultiDictProxy[str]) -> Described:
    """nginx: X-Original-URL ($scheme://$http_host$request_uri) and X-Original-Method."""
    url = _one(headers, "X-Original-URL")
    method = _method(_one(headers, "X-Original-Method"), "X-Original-Method")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise NotDescribed("X-Original-URL: not an absolute http(s) URL")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    # An HTTP/1.0 client may send no Host: nginx then writes "http:///path", decided, as in
    # full-proxy mode, on the routes without a host.
    host = _host(rest[:cut], "X-Original-URL") if cut else None
    target = _target(rest[cut:] or "/", "X-Original-URL")
    return Described(method, host, target, _with_upgrade(headers, "X-Original-Upgrade"))


def from_forwarded(headers: CIMultiDictProxy[str]) -> Described:
    """Traefik and Caddy: X-Forwarded-Method, -Host and -Uri."""
    method = _method(_one(headers, "X-Forwarded-Method"), "X-Forwarded-Method")
    host = _host(_one(headers, "X-Forwarded-Host"), "X-Forwarded-Host")
    target = _target(_one(headers, "X-Forwarded-Uri"), "X-Forwarded-Uri")
    return Described(method, host, target, _with_upgrade(headers, "X-Forwarded-Upgrade"))


def _with_upgrade(headers: CIMultiDictProxy[str], name: str) -> CIMultiDictProxy[str]:
    """The proxies never pass the hop-by-hop Upgrade and Connection headers on to the auth
    request; the configurations send the client's Upgrade as `name` instead, and it is put
    back, so a WebSocket handshake is checked (Origin) as in full-proxy mode."""
    upgrade = headers.get(name, "").strip()
    if not upgrade:
        return headers
    described = CIMultiDict(headers)
    described["Upgrade"] = upgrade
    described["Connection"] = "upgrade"
    return CIMultiDictProxy(described)


async def decide_described(
    request: web.Request, ctx: RequestContext, view: Described, *, normal_form: bool = False
) -> Decision:
    """Steps 2-5 of section 4 on the described request; ctx then describes it too.

    normal_form: refuse a path that normalising changes (the caller redirects to the normal
    form), for proxies that cannot forward the normalised path themselves.
    """
    refusal = locate_described(ctx, view, normal_form=normal_form)
    if refusal is not None:
        return refusal
    assert ctx.path is not None
    if path_has_prefix(ctx.path, ctx.snapshot.prefix):
        # The proxy asks about the gateway's own pages (an auth middleware applied to every
        # route): they apply their own access rules when the gateway serves them, and denying
        # here would make the login page unreachable.
        return decide.allow("a gateway page: its own access rules apply where it is served")
    return await gate.decide_access(request, ctx, view)


def locate_described(
    ctx: RequestContext, view: Described, *, normal_form: bool = False
) -> Decision | None:
    """From here on ctx describes the described request (it described the auth request):
    its one normalised path and canonical host, or the refusal."""
    ctx.mode, ctx.method, ctx.raw_path = MODE, view.method, view.raw_path
    ctx.path = ctx.surface = ctx.host = None
    ctx.decision = None
    refusal = gate.locate(ctx, view)
    if refusal is not None:
        return refusal
    if normal_form and ctx.path != view.raw_path:
        return decide.deny(decide.BAD_REQUEST, f"{NOT_NORMAL}: sent to {ctx.path}")
    return None


def allowed_headers(ctx: RequestContext, signer: Signer) -> dict[str, str]:
    """A 200's headers: the path decided on and, for a principal, the identity of section 5."""
    headers = {PATH_HEADER: ctx.path or "/"}
    if ctx.principal is not None:
        headers.update(identity_headers(ctx, signer, time.time()))
    return headers


def _allowed(request: web.Request, ctx: RequestContext) -> web.Response:
    signer = request.app[SERVICES].keyring.signer
    return web.Response(status=200, headers=allowed_headers(ctx, signer))


def nginx_denial(
    ctx: RequestContext, view: Described | None, decision: Decision
) -> tuple[int, dict[str, str]]:
    """The status and headers of auth_request's answer to a denial."""
    headers: dict[str, str] = {}
    if view is not None and gate.sends_to_sign_in(ctx, view, decision):
        headers[LOGIN_HEADER] = gate.login_url(ctx, view)
    if decision.code == decide.UNAUTHENTICATED and ctx.surface == "api":
        # nginx passes a 401's WWW-Authenticate on to the client.
        headers["WWW-Authenticate"] = (
            gate.API_KEY_CHALLENGE
            if decision.reason == gate.NO_KEY_REASON
            else gate.INVALID_KEY_CHALLENGE
        )
    return _NGINX_STATUS.get(decision.code or "", 403), headers


async def _described_decision(
    request: web.Request,
    parse: Callable[[CIMultiDictProxy[str]], Described],
    *,
    normal_form: bool = False,
) -> tuple[RequestContext, Described | None, Decision]:
    ctx = context_of(request)
    ctx.mode = MODE
    try:
        view = parse(request.headers)
    except NotDescribed as exc:
        return ctx, None, decide.deny(decide.BAD_REQUEST, f"forward-auth request: {exc}")
    return ctx, view, await decide_described(request, ctx, view, normal_form=normal_form)


async def auth_request(request: web.Request) -> web.StreamResponse:
    """nginx auth_request."""
    ctx, view, decision = await _described_decision(request, from_original_url)
    gate.settle(ctx, decision)
    if decision.allowed:
        return _allowed(request, ctx)
    status, headers = nginx_denial(ctx, view, decision)
    return web.Response(status=status, headers=headers)


async def forward_auth(request: web.Request) -> web.StreamResponse:
    """Traefik forwardAuth and Caddy forward_auth."""
    ctx, view, decision = await _described_decision(request, from_forwarded, normal_form=True)
    if view is not None and ctx.path is not None and decision.reason.startswith(NOT_NORMAL):
        # Traefik and Caddy forward the path as received: the client is sent to the normal
        # form first, so the path the backend gets is the path decided on (any method: 308).
        gate.settle(ctx, decision)
        return web.Response(status=308, headers={"Location": ctx.path + view.query})
    if decision.allowed:
        gate.settle(ctx, decision)
        return _allowed(request, ctx)
    if view is not None and gate.sends_to_sign_in(ctx, view, decision):
        gate.settle(ctx, decide.deny(decide.UNAUTHENTICATED, f"{decision.reason}: sent to sign in"))
        return web.Response(status=302, headers={"Location": gate.login_url(ctx, view)})
    return gate.deny(request, ctx, decision)
