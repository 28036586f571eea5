"""CSRF protection for every form and state-changing endpoint of the gateway.

Signed double submit: a random cookie (HttpOnly, SameSite=Strict; `__Host-` over TLS, so no
sibling subdomain can plant one) and, in each form, an HMAC of it keyed with a sub-key of the
secret key: the token is bound to the browser's own pre-session cookie. It needs no session, so
the login form is covered too. A POST whose token does not match is refused, and so is one whose
Origin is not exactly ours: same scheme, host and port (`null`, sent by sandboxed frames, data:
URLs and some redirects, is refused; so is ftp:// or any other scheme). A POST without Origin
(older browsers, automation) relies on the token alone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from html import escape
from typing import Final

from aiohttp import web

from gateway.context import context_of
from gateway.web.cookies import cookie_name, read_cookie
from gateway.web.hosts import BadHost, Host, canonical_host
from gateway.web.origin import public_host

COOKIE: Final = "gateway_csrf"
FIELD: Final = "csrf_token"
_PENDING: Final = web.RequestKey("gateway.csrf_cookie", str)


class Csrf:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def token(self, request: web.Request) -> str:
        """The token for forms on this response; sets the cookie when the client has none."""
        value = read_cookie(request, COOKIE, context_of(request).secure) or request.get(_PENDING)
        if not value or len(value) > 64:
            value = secrets.token_urlsafe(24)
            request[_PENDING] = value
        return self._sign(value)

    def field(self, request: web.Request) -> str:
        return f'<input type="hidden" name="{FIELD}" value="{escape(self.token(request))}">'

    def finish(self, request: web.Request, response: web.StreamResponse) -> None:
        """Set the cookie a token was issued for (call before the response is sent)."""
        pending = request.get(_PENDING)
        if pending:
            secure = context_of(request).secure
            response.set_cookie(
                cookie_name(COOKIE, secure),
                pending,
                path="/",
                httponly=True,
                samesite="Strict",
                secure=secure,
            )

    def valid(self, request: web.Request, submitted: str | None) -> bool:
        secure = context_of(request).secure
        origin = request.headers.get("Origin")
        # The Origin names the site the form was on: ours, as the browser addressed it.
        if origin is not None and not same_origin(origin, secure, public_host(request)):
            return False
        cookie = read_cookie(request, COOKIE, secure)
        if not cookie or not submitted:
            return False
        # As bytes: compare_digest raises TypeError on a str with non-ASCII characters.
        return hmac.compare_digest(self._sign(cookie).encode(), submitted.encode())


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def same_origin(origin: str, secure: bool, host: str) -> bool:
    """`origin` (scheme://host[:port], RFC 6454) is exactly the gateway's: the scheme the client
    uses, the host it addressed and the same port (default ports spelled or not)."""
    scheme, sep, authority = origin.strip().partition("://")
    if not sep or scheme.lower() != ("https" if secure else "http"):
        return False  # "null", "ftp://...", http:// for an https page
    try:
        theirs, ours = canonical_host(authority), canonical_host(host)
    except BadHost:
        return False
    default = _DEFAULT_PORTS[scheme.lower()]
    return theirs.name == ours.name and _port(theirs, default) == _port(ours, default)


def _port(host: Host, default: int) -> int:
    _, sep, port = host.header.rpartition(":")
    return int(port) if sep and host.header != host.name else default
