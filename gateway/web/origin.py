"""Where the browser thinks it is: the Host it sent, or what a trusted proxy in front reports.

Behind nginx, Traefik or Caddy (forward-auth mode, or any TLS-terminating proxy) the gateway's
pages are reached through the proxy's origin. A proxy may rewrite Host on the way; it then says
the client's Host in X-Forwarded-Host, which counts only when the TCP peer is a trusted proxy.
"""

from __future__ import annotations

from aiohttp import web

from gateway.context import context_of
from gateway.policy.ipset import CompiledIPSet, parse_client_ip


def from_trusted_proxy(request: web.Request, trusted: CompiledIPSet) -> bool:
    """The TCP peer itself (not the client IP it reports) is in trusted_proxies."""
    peer = parse_client_ip(request.remote) if request.remote else None
    return peer is not None and not trusted.empty and trusted.contains(peer[1], peer[0])


def public_host(request: web.Request) -> str:
    """The host (with port) the browser addressed."""
    if "X-Forwarded-Host" in request.headers and from_trusted_proxy(
        request, context_of(request).snapshot.trusted_proxies
    ):
        # The right-most value is the one the proxy next to us wrote.
        return request.headers.getall("X-Forwarded-Host")[-1].split(",")[-1].strip()
    return request.headers.get("Host", "")
