"""Assertion reuse (docs/backends.md): one signed token per principal, app, role and auth for
up to 30 s, a unique jti per token, a new token after a key rotation."""

from __future__ import annotations

import jwt

from gateway.context import RequestContext
from gateway.policy.snapshot import AppRoute
from gateway.services.signing import Signer
from gateway.web.identity import REUSE_FOR, AssertionCache
from tests.factories import api_key, client, echo_app, gateway_files, running_gateway, serve
from tests.services.test_signing import make_signer

NOW = 1_800_000_000.0


def ctx(
    principal: str = "alice", app: str = "console", role: str = "admin", **kw
) -> RequestContext:  # type: ignore[no-untyped-def]
    route = AppRoute(app, "dashboard", None, "/", "http://127.0.0.1:1", "", False, 1.0, 1.0)
    context = RequestContext(
        request_id="r",
        started=0.0,
        snapshot=None,
        client_ip=None,
        client_addr=None,
        secure=False,  # type: ignore[arg-type]
    )
    context.app, context.principal, context.role = route, principal, role
    context.auth = kw.get("auth", "password+totp")
    context.email = kw.get("email", f"{principal}@example.com")
    return context


def claims(token: str, signer: Signer, app: str = "console") -> dict:  # type: ignore[type-arg]
    key = jwt.PyJWK(signer.jwks()["keys"][0]).key
    return jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience=app,
        options={"verify_exp": False, "verify_iat": False},
    )


class TestReuse:
    def test_same_token_within_30_seconds(self):
        cache, signer = AssertionCache(), make_signer()
        first = cache.token(signer, ctx(), NOW)
        assert cache.token(signer, ctx(), NOW + REUSE_FOR - 1) == first
        later = cache.token(signer, ctx(), NOW + REUSE_FOR)
        assert later != first
        assert claims(later, signer)["jti"] != claims(first, signer)["jti"]
        # The reused token is never older than 30 s when sent: at least 30 s of its ~60 s left.
        assert claims(first, signer)["exp"] - (NOW + REUSE_FOR - 1) >= 30

    def test_each_part_of_the_key_counts(self):
        cache, signer = AssertionCache(), make_signer()
        tokens = {
            cache.token(signer, ctx(), NOW),
            cache.token(signer, ctx(principal="bob"), NOW),
            cache.token(signer, ctx(app="billing"), NOW),
            cache.token(signer, ctx(role="viewer"), NOW),
            cache.token(signer, ctx(auth="password"), NOW),
            cache.token(signer, ctx(email="new@example.com"), NOW),
        }
        assert len(tokens) == 6
        jtis = {
            claims(t, signer, jwt.decode(t, options={"verify_signature": False})["app"])["jti"]
            for t in tokens
        }
        assert len(jtis) == 6

    def test_rotation_starts_afresh(self):
        cache, old, new = AssertionCache(), make_signer(), make_signer()
        before = cache.token(old, ctx(), NOW)
        after = cache.token(new, ctx(), NOW + 1)
        assert after != before
        assert claims(after, new)["sub"] == "alice"  # signed by the new key
        assert jwt.get_unverified_header(after)["kid"] == new.kid

    def test_clock_going_back_mints_anew(self):
        cache, signer = AssertionCache(), make_signer()
        first = cache.token(signer, ctx(), NOW)
        assert cache.token(signer, ctx(), NOW - 5) != first


class TestOverTheWire:
    async def test_requests_share_a_token_not_a_request_id(self, tmp_path):
        async with serve(echo_app()) as backend:
            files = gateway_files(tmp_path, api_upstream=backend)
            async with running_gateway(files) as gw, client() as http:
                seen = []
                for _ in range(3):
                    async with http.get(
                        f"{gw.url}/api/x", headers={"X-API-Key": api_key("sync")}
                    ) as r:
                        headers = {k.lower(): v for k, v in (await r.json())["headers"]}
                        seen.append(
                            (headers["x-gateway-assertion"], headers["x-gateway-request-id"])
                        )
        assert len({token for token, _ in seen}) == 1
        assert len({rid for _, rid in seen}) == 3
