"""CSRF protection for every form and state-changing endpoint of the gateway.

Signed double submit: a random cookie (HttpOnly, SameSite=Strict) and, in each form, an HMAC of
it keyed with a sub-key of the secret key. It needs no session, so the login form is covered too.
A POST whose token does not match, or whose Origin header names another site, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from html import escape
from typing import Final

from aiohttp import web

from gateway.context import context_of
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
        value = request.cookies.get(COOKIE) or request.get(_PENDING)
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
            response.set_cookie(
                COOKIE,
                pending,
                path="/",
                httponly=True,
                samesite="Strict",
                secure=context_of(request).secure,
            )

    def valid(self, request: web.Request, submitted: str | None) -> bool:
        origin = request.headers.get("Origin")
        # The Origin names the site the form was on: ours, as the browser addressed it.
        if (
            origin
            and origin != "null"
            and origin.split("://", 1)[-1].rstrip("/") != public_host(request)
        ):
            return False
        cookie = request.cookies.get(COOKIE)
        if not cookie or not submitted:
            return False
        return hmac.compare_digest(self._sign(cookie), submitted)
