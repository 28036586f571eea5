"""Identity headers for backends (docs/backends.md). Added after every inbound claim is gone.

Assertion reuse: signing an Ed25519 JWT is the most expensive step of a proxied request (about
40 us, as much as the rest of the gate), so one signed assertion serves every request of the same
principal, app, role, auth and email while it is less than `REUSE_FOR` seconds old. A reused
token still has at least `DEFAULT_TOKEN_TTL - REUSE_FOR` (30) seconds to live when it is sent.
Each token has its own random `jti`; backends correlate requests with X-Gateway-Request-Id.
A new signing key (rotation, or a refresh that changed the published keys) is a new Signer
object, and the cache starts empty for it: no token of a retired key is handed out again.
"""

from __future__ import annotations

from typing import Final

from gateway.context import RequestContext
from gateway.services.signing import Signer, mint

REUSE_FOR: Final = 30.0
MAX_ENTRIES: Final = 10_000  # principals x apps x roles in use; cleared whole when full


class AssertionCache:
    """Signed assertions by (principal, app, role, auth, email), for one Signer at a time."""

    __slots__ = ("_signer", "_tokens")

    def __init__(self) -> None:
        self._signer: Signer | None = None
        self._tokens: dict[tuple[str, str, str, str, str | None], tuple[str, int]] = {}

    def token(self, signer: Signer, ctx: RequestContext, now: float) -> str:
        assert ctx.principal is not None and ctx.app is not None and ctx.auth is not None
        if signer is not self._signer:
            self._tokens.clear()
            self._signer = signer
        role = ctx.role or ""
        key = (ctx.principal, ctx.app.name, role, ctx.auth, ctx.email)
        hit = self._tokens.get(key)
        if hit is not None and 0 <= now - hit[1] < REUSE_FOR:
            return hit[0]
        iat = int(now)
        token = mint(
            signer,
            sub=ctx.principal,
            email=ctx.email,
            role=role,
            app=ctx.app.name,
            auth=ctx.auth,
            now=iat,
        )
        if len(self._tokens) >= MAX_ENTRIES:
            self._tokens.clear()
        self._tokens[key] = (token, iat)
        return token


# One per process: the key holds everything a token says, and the Signer check drops tokens of
# another key, so gateways sharing a process (tests) cannot see each other's tokens.
ASSERTIONS: Final = AssertionCache()


def identity_headers(ctx: RequestContext, signer: Signer, now: float) -> dict[str, str]:
    assert ctx.principal is not None and ctx.auth is not None
    headers = {
        "X-Gateway-User": ctx.principal,
        "X-Gateway-Role": ctx.role or "",
        "X-Gateway-Auth": ctx.auth,
        "X-Gateway-Assertion": ASSERTIONS.token(signer, ctx, now),
    }
    if ctx.email:
        headers["X-Gateway-Email"] = ctx.email
    return headers
