"""The names of the gateway's own cookies (session, CSRF), as the browser holds them.

Served over TLS, or behind a TLS-terminating trusted proxy, each name carries the `__Host-`
prefix: browsers then accept the cookie only with Secure, Path=/ and no Domain, so a sibling
subdomain (or a plain-http page on the same host) cannot plant or overwrite it, the "cookie
tossing" that defeats double-submit CSRF tokens. Over plain http browsers refuse `__Host-`
cookies, so the plain name is used there.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

HOST_PREFIX: Final = "__Host-"


def cookie_name(base: str, secure: bool) -> str:
    return HOST_PREFIX + base if secure else base


def read_cookie(request: web.Request, base: str, secure: bool) -> str | None:
    """The value of our cookie `base`, if sent. Over TLS only the `__Host-` name counts (a plain
    one may have been planted). Over plain http the plain name, else the `__Host-` one: browsers
    send that only over https and only a secure origin could set it, so a request that reached
    us as http through a TLS-terminating proxy that does not say so (X-Forwarded-Proto) still
    carries its session."""
    cookies = request.cookies
    if secure:
        return cookies.get(HOST_PREFIX + base)
    return cookies.get(base) or cookies.get(HOST_PREFIX + base)
