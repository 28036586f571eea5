"""Forward-auth decisions the front takes itself (docs/forward-auth.md).

nginx's auth_request and Traefik's and Caddy's forward-auth ask `{prefix}/authz/...` about every
request they proxy. When the request they describe goes to an app of the `api` surface, the
answer needs nothing but the snapshot (allowlist, API key, role), so the front answers it the way
it serves API requests, with the same steps and the same answers as aiohttp's side
(gateway.web.forward_auth). Anything else (a dashboard app and its sessions, a gateway page, a
description that is missing or malformed, a path Traefik or Caddy must be redirected to, a peer
that is not a trusted proxy) is handed to aiohttp, which answers as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from multidict import CIMultiDictProxy

from gateway.context import RequestContext
from gateway.policy import decide
from gateway.policy.ipset import parse_client_ip
from gateway.policy.snapshot import Snapshot
from gateway.web import forward_auth, gate
from gateway.web.gate import Described
from gateway.web.paths import path_has_prefix

if TYPE_CHECKING:
    from gateway.services.signing import Signer
    from gateway.web.front.proxied import FastRequest

# page name -> (how the proxy describes the request, whether the path must be in normal form)
ENDPOINTS: Final[dict[str, tuple[Callable[[CIMultiDictProxy[str]], Described], bool]]] = {
    "authz/auth-request": (forward_auth.from_original_url, False),
    "authz/forward-auth": (forward_auth.from_forwarded, True),
}
AUTH_REQUEST: Final = "authz/auth-request"


def endpoint(ctx: RequestContext, snapshot: Snapshot) -> str | None:
    """The forward-auth endpoint a located request is for, if any."""
    assert ctx.path is not None
    name = ctx.path[len(snapshot.prefix) :].lstrip("/")
    return name if name in ENDPOINTS else None


def described_for_here(
    ctx: RequestContext,
    name: str,
    method: str,
    headers: CIMultiDictProxy[str],
    peer: str | None,
) -> Described | None:
    """The described request, if the front decides it (an api app, asked by a trusted proxy);
    ctx then describes it. None: aiohttp's side answers."""
    snapshot = ctx.snapshot
    if method not in forward_auth.METHODS:
        return None
    address = parse_client_ip(peer) if peer else None
    trusted = snapshot.trusted_proxies
    if address is None or trusted.empty or not trusted.contains(address[1], address[0]):
        return None
    parse, normal_form = ENDPOINTS[name]
    try:
        view = parse(headers)
    except forward_auth.NotDescribed:
        return None
    if forward_auth.locate_described(ctx, view, normal_form=normal_form) is not None:
        return None
    assert ctx.path is not None
    if path_has_prefix(ctx.path, snapshot.prefix):
        return None
    app = decide.match_route(snapshot, ctx.host.name if ctx.host else None, ctx.path)
    if app is None or app.surface != "api":
        return None
    ctx.app, ctx.surface = app, app.surface
    return view


def answer(request: FastRequest, signer: Signer) -> tuple[int, list[tuple[str, str]]] | gate.Denial:
    """Decide; the status and headers of the proxy's answer, or a Denial to answer as in
    full-proxy mode (Traefik and Caddy pass those answers on to the client)."""
    ctx = request.ctx
    decision = gate.decide_api(ctx, request.view)
    if decision.allowed:
        gate.settle(ctx, decision)
        return 200, list(forward_auth.allowed_headers(ctx, signer).items())
    if request.kind != AUTH_REQUEST:
        return gate.denial(ctx, decision)
    gate.settle(ctx, decision)
    status, headers = forward_auth.nginx_denial(ctx, request.view, decision)
    return status, list(headers.items())
