"""The api surface: service account keys in both header forms, and nothing else, get through;
the backend receives an identity it can verify with the running gateway's JWKS."""

from __future__ import annotations

import asyncio
import base64
import json

import jwt
import pytest

from gateway.backend import GatewayVerifier, InvalidAssertion
from tests.factories import (
    PASSWORD,
    api_key,
    client,
    echo_app,
    gateway_files,
    key_sha256,
    running_gateway,
    serve,
)

ACCOUNTS = {
    "sync": {"key_sha256": key_sha256(api_key("sync")), "grants": {"protection-api": "writer"}},
    "reader": {"key_sha256": key_sha256(api_key("reader")), "grants": {"protection-api": "viewer"}},
    "expired": {
        "key_sha256": key_sha256(api_key("expired")),
        "grants": {"protection-api": "writer"},
        "expires": "2021-12-31",
    },
    "pinned": {
        "key_sha256": key_sha256(api_key("pinned")),
        "grants": {"protection-api": "writer"},
        "allow": ["127.0.0.2/32"],
    },
    "nogrant": {"key_sha256": key_sha256(api_key("nogrant")), "grants": {}},
}


@pytest.fixture
async def gw(tmp_path):
    async with serve(echo_app()) as backend:
        files = gateway_files(tmp_path, api_upstream=backend, accounts=ACCOUNTS)
        async with running_gateway(files) as running:
            yield running


async def call(gw, headers: dict[str, str], method: str = "GET", source: str | None = None):
    async with (
        client(source) as http,
        http.request(method, f"{gw.url}/api/things", headers=headers) as r,
    ):
        body = await r.json(content_type=None)
        return r.status, r.headers, body


def seen_headers(body: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in body["headers"]}


class TestKeys:
    """Both header forms work; missing, wrong and expired keys get 401 with a challenge."""

    async def test_bearer(self, gw):
        status, _, body = await call(gw, {"Authorization": f"Bearer {api_key('sync')}"})
        assert status == 200
        seen = seen_headers(body)
        assert seen["x-gateway-user"] == "sync"
        assert seen["x-gateway-role"] == "writer"
        assert seen["x-gateway-auth"] == "api-key"
        assert "x-gateway-email" not in seen
        assert "authorization" not in seen  # the key itself stays at the gateway (section 4.4)

    async def test_x_api_key(self, gw):
        status, _, body = await call(gw, {"X-API-Key": api_key("sync")})
        assert status == 200
        assert seen_headers(body)["x-gateway-user"] == "sync"

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer gwk_wrong"},
            {"X-API-Key": "gwk_wrong"},
            {"Authorization": f"Bearer {api_key('expired')}"},
            {"Authorization": "Bearer "},
        ],
        ids=["missing", "wrong-bearer", "wrong-x-api-key", "expired", "empty"],
    )
    async def test_refused(self, gw, headers):
        status, response_headers, body = await call(gw, headers)
        assert status == 401
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
        assert response_headers["Content-Type"] == "application/problem+json"
        assert body["code"] == "unauthenticated"

    async def test_user_password_never_works_on_api(self, gw):
        basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        status, _, _ = await call(gw, {"Authorization": f"Basic {basic}"})
        assert status == 401
        status, _, _ = await call(gw, {"Authorization": f"Bearer {PASSWORD}"})
        assert status == 401

    async def test_per_account_allow(self, gw):
        headers = {"Authorization": f"Bearer {api_key('pinned')}"}
        assert (await call(gw, headers, source="127.0.0.2"))[0] == 200
        status, _, body = await call(gw, headers, source="127.0.0.3")
        assert (status, body["code"]) == (403, "ip_not_allowed")

    async def test_role_limits(self, gw):
        headers = {"Authorization": f"Bearer {api_key('reader')}"}
        assert (await call(gw, headers, "GET"))[0] == 200
        status, _, body = await call(gw, headers, "POST")
        assert (status, body["code"]) == (403, "forbidden")
        status, _, body = await call(gw, {"X-API-Key": api_key("nogrant")})
        assert (status, body["code"]) == (403, "forbidden")

    async def test_key_never_in_audit(self, gw):
        await call(gw, {"Authorization": f"Bearer {api_key('sync')}"})
        await call(gw, {"Authorization": "Bearer gwk_wrong_secret_value"})
        await asyncio.sleep(0.5)  # the audit writer flushes every 100 ms
        text = gw.files.audit_file.read_text()
        assert '"principal":"sync"' in text
        assert api_key("sync") not in text and "gwk_wrong_secret_value" not in text


class TestAssertion:
    """X-Gateway-Assertion verifies against the running gateway's JWKS with the right claims."""

    async def test_verifies_with_served_jwks(self, gw):
        _, response_headers, body = await call(gw, {"X-API-Key": api_key("sync")})
        seen = seen_headers(body)
        token = seen["x-gateway-assertion"]
        verifier = GatewayVerifier(f"{gw.url}/_gateway/jwks.json", audience="protection-api")
        identity = await verifier.verify_async(token)
        assert identity.user == "sync"
        assert identity.role == "writer"
        assert identity.auth == "api-key"
        assert identity.app == "protection-api"
        assert seen["x-gateway-request-id"] == response_headers["X-Gateway-Request-Id"]
        claims = identity.claims
        assert 55 <= claims["exp"] - claims["iat"] <= 65
        assert claims["aud"] == "protection-api"
        # Not the request id: one token may serve several requests (section 5).
        assert claims["jti"] != seen["x-gateway-request-id"] and len(claims["jti"]) >= 16

    async def test_wrong_audience_and_forgery_fail(self, gw):
        _, _, body = await call(gw, {"X-API-Key": api_key("sync")})
        token = seen_headers(body)["x-gateway-assertion"]
        other = GatewayVerifier(f"{gw.url}/_gateway/jwks.json", audience="console")
        with pytest.raises(InvalidAssertion) as err:
            await other.verify_async(token)
        assert err.value.reason == "wrong_audience"
        header, _payload, signature = token.split(".")
        claims = jwt.decode(token, options={"verify_signature": False})
        claims["role"] = "admin"
        forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        verifier = GatewayVerifier(f"{gw.url}/_gateway/jwks.json", audience="protection-api")
        with pytest.raises(InvalidAssertion) as err:
            await verifier.verify_async(f"{header}.{forged_payload}.{signature}")
        assert err.value.reason == "bad_signature"
