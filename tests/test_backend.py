"""The verification helper for backends: GatewayVerifier and the aiohttp middleware.

The JWKS is served over real HTTP on 127.0.0.1 by an aiohttp test server; tokens come from the
gateway's own signing code, forgeries are built by hand or with PyJWT.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.backend import (
    GatewayVerifier,
    Identity,
    InvalidAssertion,
    gateway_auth_middleware,
    request_identity,
    verify_assertion,
)
from gateway.services.signing import Signer, mint, public_jwk

JWKS_PATH = "/_gateway/jwks.json"


def make_signer() -> Signer:
    private_key = Ed25519PrivateKey.generate()
    jwk = public_jwk(private_key.public_key())
    return Signer(jwk["kid"], private_key, (jwk,))


def assertion(signer: Signer, *, app: str = "console", now: float | None = None, **kw: Any) -> str:
    fields: dict[str, Any] = {
        "sub": "alice",
        "email": "alice@example.com",
        "role": "admin",
        "auth": "password+totp",
        "jti": "7d0c1f6e-2b1c-4f3e-9a61-0c7f0e6a5b21",
    }
    fields.update(kw)
    return mint(signer, app=app, now=time.time() if now is None else now, **fields)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_built(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    """A compact JWS whose signature is whatever `sign(signing_input)` returns."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def good_claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "access-gateway",
        "sub": "alice",
        "aud": "console",
        "app": "console",
        "role": "admin",
        "auth": "password",
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }


@dataclass
class JwksEndpoint:
    """A JWKS served over HTTP; `document` may be replaced, `status` set to fail, `hits` counted."""

    document: dict[str, Any]
    url: str = ""
    status: int = 200
    hits: int = 0


@pytest.fixture
def signer() -> Signer:
    return make_signer()


@pytest.fixture
async def endpoint(aiohttp_server: Any, signer: Signer) -> JwksEndpoint:
    endpoint = JwksEndpoint(signer.jwks())

    async def jwks(request: web.Request) -> web.Response:
        endpoint.hits += 1
        if endpoint.status != 200:
            return web.Response(status=endpoint.status, text="down")
        return web.json_response(endpoint.document)

    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks)
    server = await aiohttp_server(app, host="127.0.0.1")
    endpoint.url = str(server.make_url(JWKS_PATH))
    return endpoint


async def verify(verifier: GatewayVerifier, token: str) -> Identity:
    """The blocking verify, off the event loop that serves the JWKS."""
    return await asyncio.to_thread(verifier.verify, token)


async def reason(verifier: GatewayVerifier, token: str) -> str:
    with pytest.raises(InvalidAssertion) as caught:
        await verify(verifier, token)
    return caught.value.reason


class TestGatewayVerifier:
    async def test_valid_token(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """A token minted by the gateway yields the Identity it describes."""
        verifier = GatewayVerifier(endpoint.url, audience="console")

        identity = await verify(verifier, assertion(signer))

        assert identity == Identity(
            user="alice",
            email="alice@example.com",
            role="admin",
            app="console",
            auth="password+totp",
            token_id="7d0c1f6e-2b1c-4f3e-9a61-0c7f0e6a5b21",
            claims=identity.claims,
        )
        assert identity.claims["aud"] == "console"

    async def test_async_and_function_forms(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """verify_async and verify_assertion give the same Identity as verify."""
        verifier = GatewayVerifier(endpoint.url, audience="console")
        token = assertion(signer)

        from_async = await verifier.verify_async(token)
        from_function = await asyncio.to_thread(verify_assertion, token, verifier)

        assert from_async == from_function

    async def test_service_account_has_no_email(self, signer: Signer) -> None:
        """A service account's Identity has email None."""
        verifier = GatewayVerifier(jwks=signer.jwks(), audience="api")

        identity = verifier.verify(
            assertion(signer, app="api", sub="billing-sync", email=None, auth="api-key")
        )

        assert (identity.user, identity.email, identity.auth) == ("billing-sync", None, "api-key")

    async def test_expired(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """A token past exp (plus leeway) is refused."""
        verifier = GatewayVerifier(endpoint.url, audience="console")

        assert await reason(verifier, assertion(signer, now=time.time() - 120)) == "expired"

    async def test_leeway_absorbs_small_clock_skew(self, signer: Signer) -> None:
        """A token issued a second in the future (another host's clock) is accepted."""
        verifier = GatewayVerifier(jwks=signer.jwks(), audience="console", leeway=5)

        assert verifier.verify(assertion(signer, now=time.time() + 2)).user == "alice"

    async def test_wrong_audience(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """A token for another app is refused."""
        verifier = GatewayVerifier(endpoint.url, audience="billing")

        assert await reason(verifier, assertion(signer, app="console")) == "wrong_audience"

    async def test_wrong_issuer(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """A token from another issuer is refused."""
        verifier = GatewayVerifier(endpoint.url, audience="console")

        token = assertion(signer, issuer="someone-else")

        assert await reason(verifier, token) == "wrong_issuer"

    async def test_forged_signature_with_same_kid(
        self, endpoint: JwksEndpoint, signer: Signer
    ) -> None:
        """A token signed by another key under the gateway key's kid is refused."""
        verifier = GatewayVerifier(endpoint.url, audience="console")
        impostor = make_signer()
        forged = Signer(signer.kid, impostor.private_key, impostor.public_jwks)

        assert await reason(verifier, assertion(forged)) == "bad_signature"

    async def test_alg_none(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """An unsigned token (alg none) is refused."""
        verifier = GatewayVerifier(endpoint.url, audience="console")
        header = {"alg": "none", "kid": signer.kid, "typ": "JWT"}
        signing_input = f"{b64url(json.dumps(header).encode())}."
        token = signing_input + b64url(json.dumps(good_claims()).encode()) + "."

        assert await reason(verifier, token) == "algorithm_not_allowed"

    @pytest.mark.parametrize("secret_form", ["pem", "raw", "jwks_json"])
    async def test_hs256_with_the_public_key_as_secret(
        self, endpoint: JwksEndpoint, signer: Signer, secret_form: str
    ) -> None:
        """Key confusion: an HS256 token keyed with the public key is refused."""
        verifier = GatewayVerifier(endpoint.url, audience="console")
        public = signer.private_key.public_key()
        secret = {
            "pem": public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "raw": public.public_bytes_raw(),
            "jwks_json": signer.jwks_json,
        }[secret_form]
        header = {"alg": "HS256", "kid": signer.kid, "typ": "JWT"}

        token = hand_built(
            header, good_claims(), lambda data: hmac.new(secret, data, hashlib.sha256).digest()
        )

        assert await reason(verifier, token) == "algorithm_not_allowed"

    async def test_alg_that_does_not_match_the_key(
        self, endpoint: JwksEndpoint, signer: Signer
    ) -> None:
        """An ES256 header naming the Ed25519 key's kid is refused: the key fixes the alg."""
        verifier = GatewayVerifier(endpoint.url, audience="console")
        header = {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}

        token = hand_built(header, good_claims(), signer.private_key.sign)

        assert await reason(verifier, token) == "algorithm_not_allowed"

    async def test_tampered_payload(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """Raising the role inside a genuine token breaks its signature."""
        verifier = GatewayVerifier(endpoint.url, audience="console")
        head, payload, signature = assertion(signer, role="viewer").split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["role"] = "admin"

        token = f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"

        assert await reason(verifier, token) == "bad_signature"

    async def test_unknown_kid(self, endpoint: JwksEndpoint) -> None:
        """A token whose kid the JWKS does not list is refused."""
        verifier = GatewayVerifier(endpoint.url, audience="console")

        assert await reason(verifier, assertion(make_signer())) == "unknown_key"

    async def test_missing_claim(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """A genuinely signed token without a role claim is refused."""
        verifier = GatewayVerifier(endpoint.url, audience="console")
        claims = good_claims()
        del claims["role"]

        assert await reason(verifier, signer.sign(claims)) == "missing_claim"

    @pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "e30.e30.AA"])
    async def test_malformed(self, signer: Signer, token: str) -> None:
        """Missing or garbled tokens are refused without a fetch."""
        verifier = GatewayVerifier(jwks=signer.jwks(), audience="console")

        with pytest.raises(InvalidAssertion) as caught:
            verifier.verify(token)

        assert caught.value.reason in {"missing", "malformed", "algorithm_not_allowed"}

    async def test_es256_key_is_accepted(self) -> None:
        """An ES256 token verifies against a P-256 key in the JWKS."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key()))
        jwk.update(kid="ec-1", use="sig", alg="ES256")
        verifier = GatewayVerifier(jwks={"keys": [jwk]}, audience="console")

        token = jwt.encode(good_claims(), private_key, algorithm="ES256", headers={"kid": "ec-1"})

        assert verifier.verify(token).role == "admin"

    @pytest.mark.parametrize("kid", ["enc", "odd"])
    async def test_jwks_entries_that_are_not_signing_keys_are_ignored(
        self, signer: Signer, kid: str
    ) -> None:
        """An encryption key or a key whose alg is not its type's is never used to verify."""
        (jwk,) = signer.jwks()["keys"]
        jwks = {
            "keys": [
                {"kty": "oct", "k": b64url(b"secret"), "kid": "hmac", "alg": "HS256"},
                {**jwk, "kid": "enc", "use": "enc"},
                {**jwk, "kid": "odd", "alg": "HS256"},
            ]
        }
        verifier = GatewayVerifier(jwks=jwks, audience="console")
        same_key_other_kid = Signer(kid, signer.private_key, signer.public_jwks)

        with pytest.raises(InvalidAssertion) as caught:
            verifier.verify(assertion(same_key_other_kid))

        assert caught.value.reason == "unknown_key"

    @pytest.mark.parametrize(
        ("args", "kwargs", "message"),
        [
            ((), {"audience": "console"}, "exactly one of"),
            (("https://gw/j",), {"jwks": {"keys": []}, "audience": "console"}, "exactly one of"),
            (("file:///etc/passwd",), {"audience": "console"}, "http"),
            (("https://gw/jwks.json",), {"audience": ""}, "audience"),
        ],
    )
    def test_bad_construction(self, args: tuple, kwargs: dict, message: str) -> None:
        """Misconfiguration is refused when the verifier is built."""
        with pytest.raises(ValueError, match=message):
            GatewayVerifier(*args, **kwargs)


class TestJwksFetching:
    async def test_keys_are_cached(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """Many verifications cost one fetch."""
        verifier = GatewayVerifier(endpoint.url, audience="console")

        for _ in range(3):
            await verify(verifier, assertion(signer))

        assert endpoint.hits == 1

    async def test_concurrent_cold_start_fetches_once(
        self, endpoint: JwksEndpoint, signer: Signer
    ) -> None:
        """Requests arriving together on a cold cache share one fetch."""
        verifier = GatewayVerifier(endpoint.url, audience="console")

        identities = await asyncio.gather(
            *(verifier.verify_async(assertion(signer)) for _ in range(10))
        )

        assert {i.user for i in identities} == {"alice"}
        assert endpoint.hits == 1

    async def test_concurrent_threads_fetch_once(
        self, endpoint: JwksEndpoint, signer: Signer
    ) -> None:
        """Threads of a WSGI server verifying together on a cold cache share one fetch."""
        verifier = GatewayVerifier(endpoint.url, audience="console")

        identities = await asyncio.gather(*(verify(verifier, assertion(signer)) for _ in range(8)))

        assert {i.user for i in identities} == {"alice"}
        assert endpoint.hits == 1

    async def test_rotated_key_is_fetched_on_unknown_kid(
        self, endpoint: JwksEndpoint, signer: Signer
    ) -> None:
        """A token with a new kid triggers a refetch that finds the rotated key."""
        verifier = GatewayVerifier(endpoint.url, audience="console", min_refetch_interval=0)
        await verify(verifier, assertion(signer))
        rotated = make_signer()
        endpoint.document = {"keys": [*rotated.jwks()["keys"], *signer.jwks()["keys"]]}

        identity = await verify(verifier, assertion(rotated))

        assert identity.user == "alice"
        assert endpoint.hits == 2

    async def test_unknown_kid_refetch_is_rate_limited(
        self, endpoint: JwksEndpoint, signer: Signer
    ) -> None:
        """Forged kids cannot make the verifier fetch more than once per interval."""
        verifier = GatewayVerifier(endpoint.url, audience="console", min_refetch_interval=30)
        await verify(verifier, assertion(signer))

        for _ in range(3):
            assert await reason(verifier, assertion(make_signer())) == "unknown_key"

        assert endpoint.hits == 1

    async def test_cache_expires(self, endpoint: JwksEndpoint, signer: Signer) -> None:
        """After cache_ttl the JWKS is fetched again."""
        verifier = GatewayVerifier(
            endpoint.url, audience="console", cache_ttl=0, min_refetch_interval=0
        )

        await verify(verifier, assertion(signer))
        await verify(verifier, assertion(signer))

        assert endpoint.hits == 2

    async def test_failed_refetch_keeps_known_keys(
        self, endpoint: JwksEndpoint, signer: Signer
    ) -> None:
        """When the gateway cannot serve the JWKS, the keys already known still verify."""
        verifier = GatewayVerifier(
            endpoint.url, audience="console", cache_ttl=0, min_refetch_interval=0
        )
        await verify(verifier, assertion(signer))
        endpoint.status = 500

        identity = await verify(verifier, assertion(signer))

        assert identity.user == "alice"
        assert endpoint.hits == 2

    async def test_unreachable_jwks_is_reported(
        self, endpoint: JwksEndpoint, signer: Signer
    ) -> None:
        """Without any key and without the JWKS, the reason says the fetch failed."""
        endpoint.status = 503
        verifier = GatewayVerifier(endpoint.url, audience="console")

        with pytest.raises(InvalidAssertion, match="fetching the JWKS failed") as caught:
            await verify(verifier, assertion(signer))

        assert caught.value.reason == "unknown_key"


@pytest.fixture
async def backend_client(aiohttp_client: Any, endpoint: JwksEndpoint) -> Any:
    """A backend app protected by the middleware, verifying against the endpoint."""

    async def whoami(request: web.Request) -> web.Response:
        identity = request_identity(request)
        return web.json_response({"user": identity.user, "role": identity.role})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    verifier = GatewayVerifier(endpoint.url, audience="console")
    app = web.Application(middlewares=[gateway_auth_middleware(verifier, exempt_paths={"/health"})])
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/health", health)
    return await aiohttp_client(app)


class TestGatewayAuthMiddleware:
    async def test_without_assertion_401(self, backend_client: Any) -> None:
        """A request without the header is answered 401 problem+json, handler not called."""
        response = await backend_client.get("/whoami", headers={"X-Gateway-User": "alice"})

        assert response.status == 401
        assert response.content_type == "application/problem+json"
        assert "WWW-Authenticate" in response.headers
        body = await response.json(content_type=None)
        assert (body["code"], body["detail"]) == ("unauthenticated", "X-Gateway-Assertion: missing")

    async def test_bad_assertion_401(self, backend_client: Any) -> None:
        """A request with a forged assertion is answered 401."""
        forged = assertion(make_signer())

        response = await backend_client.get("/whoami", headers={"X-Gateway-Assertion": forged})

        assert response.status == 401
        body = await response.json(content_type=None)
        assert body["detail"] == "X-Gateway-Assertion: unknown_key"

    async def test_good_assertion_reaches_the_handler(
        self, backend_client: Any, signer: Signer
    ) -> None:
        """A valid assertion puts the Identity on the request for the handler."""
        response = await backend_client.get(
            "/whoami", headers={"X-Gateway-Assertion": assertion(signer, role="viewer")}
        )

        assert response.status == 200
        assert await response.json() == {"user": "alice", "role": "viewer"}

    async def test_exempt_path_passes(self, backend_client: Any) -> None:
        """An exempt path is served without an assertion."""
        response = await backend_client.get("/health")

        assert (response.status, await response.text()) == (200, "ok")
