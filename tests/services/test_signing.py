"""Signing keys for X-Gateway-Assertion: minting, the JWKS, creation, rotation, sealing.

Every token is verified with PyJWT (not with the gateway's own code) against the published JWKS.

`MemoryKeyStore` below is a temporary stand-in for the state store: it mirrors the SQL
semantics (rows ordered by created_at then kid; retiring only touches unretired rows; deleting
an unknown kid is a no-op) and yields to the event loop on every call so concurrent workers
interleave. The real stores are checked by the store conformance suite.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gateway.services import signing
from gateway.services.secret_key import SealError, SecretKey
from gateway.services.signing import (
    PUBLISH_LEEWAY,
    ROTATION_GRACE,
    KeyRing,
    Signer,
    SigningKeyError,
    SigningKeyRecord,
    load_or_create,
    mint,
    refresh,
    rotate,
)

TTL = 60
T0 = 1_700_000_000.0


def new_secret() -> SecretKey:
    return SecretKey(os.urandom(32), "test")


SECRET = new_secret()


class MemoryKeyStore:
    """Temporary in-memory SigningKeyStore (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: dict[str, SigningKeyRecord] = {}

    async def signing_keys(self) -> list[SigningKeyRecord]:
        await asyncio.sleep(0)
        return sorted(self.rows.values(), key=lambda r: (r.created_at, r.kid))

    async def signing_key_add(self, record: SigningKeyRecord) -> None:
        await asyncio.sleep(0)
        self.rows[record.kid] = record

    async def signing_key_retire(self, kid: str, at: float) -> None:
        await asyncio.sleep(0)
        row = self.rows.get(kid)
        if row is not None and row.retired_at is None:
            self.rows[kid] = dataclasses.replace(row, retired_at=at)

    async def signing_key_delete(self, kid: str) -> None:
        await asyncio.sleep(0)
        self.rows.pop(kid, None)


def verify(token: str, jwks: dict[str, Any], audience: str = "console") -> dict[str, Any]:
    """Verify like a backend would: PyJWT, the key named by the token's kid, EdDSA only."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key, algorithms=["EdDSA"], audience=audience, issuer="access-gateway")


def mint_for_alice(signer: Signer, now: float | None = None) -> str:
    return mint(
        signer,
        sub="alice",
        email="alice@example.com",
        role="admin",
        app="console",
        auth="password+totp",
        jti=str(uuid.uuid4()),
        now=time.time() if now is None else now,
    )


def kids(signer: Signer) -> list[str]:
    return [jwk["kid"] for jwk in signer.jwks()["keys"]]


def make_signer() -> Signer:
    private_key = Ed25519PrivateKey.generate()
    jwk = signing.public_jwk(private_key.public_key())
    return Signer(jwk["kid"], private_key, (jwk,))


class TestPublicJwk:
    def test_rfc8037_thumbprint_is_the_kid(self) -> None:
        """The kid is the RFC 7638 thumbprint, checked against the RFC 8037 A.3 example."""
        x = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        jwk = signing.public_jwk(Ed25519PublicKey.from_public_bytes(x))

        assert jwk == {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
            "use": "sig",
            "alg": "EdDSA",
        }


class TestSigner:
    def test_token_verifies_with_pyjwt_against_the_jwks(self) -> None:
        """A signed token verifies with PyJWT using the key the JWKS publishes."""
        signer = make_signer()
        claims = {"iss": "access-gateway", "aud": "console", "sub": "alice", "n": 1}

        assert verify(signer.sign(claims), signer.jwks()) == claims

    def test_header_names_algorithm_and_kid(self) -> None:
        """The JOSE header is exactly alg EdDSA, the active kid and typ JWT."""
        signer = make_signer()

        header = jwt.get_unverified_header(signer.sign({"sub": "alice"}))

        assert header == {"alg": "EdDSA", "kid": signer.kid, "typ": "JWT"}

    def test_non_ascii_claims_survive(self) -> None:
        """Claims outside ASCII are signed as UTF-8 JSON and decode unchanged."""
        signer = make_signer()
        claims = {"iss": "access-gateway", "aud": "console", "sub": "zoë", "role": "редактор"}

        assert verify(signer.sign(claims), signer.jwks()) == claims

    def test_signature_covers_the_payload(self) -> None:
        """Changing one claim after signing breaks the signature."""
        signer = make_signer()
        token = signer.sign({"iss": "access-gateway", "aud": "console", "role": "viewer"})
        forged_payload = signing._b64url(b'{"iss":"access-gateway","aud":"console","role":"admin"}')
        head, _, signature = token.split(".")

        with pytest.raises(jwt.InvalidSignatureError):
            verify(f"{head}.{forged_payload}.{signature}", signer.jwks())

    def test_jwks_members(self) -> None:
        """The JWKS lists OKP/Ed25519 keys with x, kid, use sig and alg EdDSA."""
        signer = make_signer()

        (key,) = signer.jwks()["keys"]

        assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}
        assert (key["kty"], key["crv"], key["use"], key["alg"]) == (
            "OKP",
            "Ed25519",
            "sig",
            "EdDSA",
        )
        assert key["kid"] == signer.kid

    def test_jwks_is_a_copy_and_jwks_json_matches(self) -> None:
        """Changing the returned JWKS does not change the Signer; jwks_json is the same document."""
        signer = make_signer()

        signer.jwks()["keys"][0]["kid"] = "changed"

        assert kids(signer) == [signer.kid]
        assert jwt.PyJWKSet.from_json(signer.jwks_json.decode())[signer.kid]

    def test_is_immutable(self) -> None:
        """A Signer cannot be changed after it is built."""
        signer = make_signer()

        with pytest.raises(dataclasses.FrozenInstanceError):
            signer.kid = "other"  # type: ignore[misc]

    def test_repr_hides_the_private_key(self) -> None:
        """The repr names the kid but not the private key."""
        assert "private" not in repr(make_signer())


class TestMint:
    def test_user_claims(self) -> None:
        """A user's assertion carries exactly the contract's claims, aud = app, jti = request id."""
        signer = make_signer()
        now = time.time() - 0.5  # fractional: iat is truncated to whole seconds

        token = mint(
            signer,
            sub="alice",
            email="alice@example.com",
            role="admin",
            app="console",
            auth="password+totp",
            jti="req-1",
            now=now,
        )

        assert verify(token, signer.jwks()) == {
            "iss": "access-gateway",
            "sub": "alice",
            "email": "alice@example.com",
            "aud": "console",
            "app": "console",
            "role": "admin",
            "auth": "password+totp",
            "iat": int(now),
            "exp": int(now) + 60,
            "jti": "req-1",
        }

    def test_service_account_has_no_email(self) -> None:
        """A service account's assertion omits the email claim."""
        signer = make_signer()

        token = mint(
            signer,
            sub="billing-sync",
            email=None,
            role="writer",
            app="protection-api",
            auth="api-key",
            jti="req-2",
            now=time.time(),
        )

        claims = verify(token, signer.jwks(), audience="protection-api")
        assert "email" not in claims
        assert (claims["sub"], claims["auth"]) == ("billing-sync", "api-key")

    def test_ttl_and_issuer(self) -> None:
        """ttl sets exp - iat, issuer sets iss."""
        signer = make_signer()

        token = mint(
            signer,
            sub="alice",
            email=None,
            role="viewer",
            app="console",
            auth="password",
            jti="req-3",
            now=time.time(),
            ttl=30,
            issuer="gw-eu",
        )

        claims = jwt.decode(token, options={"verify_signature": False})
        assert (claims["exp"] - claims["iat"], claims["iss"]) == (30, "gw-eu")

    def test_unknown_auth_is_refused(self) -> None:
        """auth must be one of the contract's three values."""
        with pytest.raises(ValueError, match="'totp'"):
            mint(
                make_signer(),
                sub="alice",
                email=None,
                role="viewer",
                app="console",
                auth="totp",
                jti="req-4",
                now=T0,
            )


class TestLoadOrCreate:
    async def test_first_start_creates_and_seals_one_key(self) -> None:
        """On an empty store one EdDSA key is created, its private half sealed, its public half
        published."""
        store = MemoryKeyStore()

        signer = await load_or_create(store, SECRET, T0)

        (row,) = store.rows.values()
        assert (row.kid, row.algorithm, row.created_at, row.retired_at) == (
            signer.kid,
            "EdDSA",
            T0,
            None,
        )
        assert signer.jwks() == {"keys": [row.public_jwk]}
        raw = signer.private_key.private_bytes_raw()
        assert raw not in row.sealed_private
        opened = SECRET.sealer("signing-keys").open(row.sealed_private, row.kid.encode())
        assert opened == raw

    async def test_second_load_returns_the_same_key(self) -> None:
        """A restart loads the stored key instead of creating another."""
        store = MemoryKeyStore()
        first = await load_or_create(store, SECRET, T0)

        second = await load_or_create(store, SECRET, T0 + 3600)

        assert second.kid == first.kid
        assert len(store.rows) == 1
        token = mint_for_alice(second)
        assert verify(token, first.jwks())["sub"] == "alice"

    async def test_concurrent_workers_converge_on_one_key(self) -> None:
        """Workers starting at once on an empty store all sign with the same (oldest) key."""
        store = MemoryKeyStore()

        signers = await asyncio.gather(
            *(load_or_create(store, SECRET, T0 + i / 10) for i in range(4))
        )

        oldest = min(store.rows.values(), key=lambda r: (r.created_at, r.kid))
        assert {s.kid for s in signers} == {oldest.kid}
        # Each worker publishes every key that exists, so any worker's JWKS verifies.
        assert all(set(kids(s)) == set(store.rows) for s in signers)

    async def test_all_keys_retired_creates_a_new_one(self) -> None:
        """A store whose keys are all retired gets a new active key."""
        store = MemoryKeyStore()
        old = await load_or_create(store, SECRET, T0)
        await store.signing_key_retire(old.kid, T0 + 10)

        signer = await load_or_create(store, SECRET, T0 + 20, token_ttl=TTL)

        assert signer.kid != old.kid
        assert set(kids(signer)) == {signer.kid, old.kid}

    async def test_purges_keys_past_their_publication(self) -> None:
        """A key retired longer ago than ttl + leeway is deleted at start-up."""
        store = MemoryKeyStore()
        old = await load_or_create(store, SECRET, T0)
        await store.signing_key_retire(old.kid, T0 + 10)

        await load_or_create(store, SECRET, T0 + 10 + TTL + PUBLISH_LEEWAY, token_ttl=TTL)

        assert old.kid not in store.rows
        assert len(store.rows) == 1


class TestSealing:
    async def test_other_secret_key_cannot_open_the_private_key(self) -> None:
        """The sealed private key does not open with another secret key."""
        store = MemoryKeyStore()
        signer = await load_or_create(store, SECRET, T0)
        row = store.rows[signer.kid]

        with pytest.raises(SealError):
            new_secret().sealer("signing-keys").open(row.sealed_private, row.kid.encode())

    async def test_load_with_other_secret_key_fails_clearly(self) -> None:
        """A worker with a different secret key refuses to start and says why."""
        store = MemoryKeyStore()
        signer = await load_or_create(store, SECRET, T0)

        with pytest.raises(SigningKeyError, match=f"signing key {signer.kid} cannot be opened"):
            await load_or_create(store, new_secret(), T0 + 1)

    async def test_sealed_key_is_bound_to_its_kid(self) -> None:
        """A sealed private key copied onto another row does not open."""
        store = MemoryKeyStore()
        first = await load_or_create(store, SECRET, T0)
        await rotate(store, SECRET, T0 + 1, TTL, grace=0)
        second = next(r for r in store.rows.values() if r.kid != first.kid)
        store.rows[second.kid] = dataclasses.replace(
            second, sealed_private=store.rows[first.kid].sealed_private
        )

        with pytest.raises(SigningKeyError, match="cannot be opened"):
            await refresh(store, SECRET, T0 + 2, TTL)


class TestRotate:
    async def test_new_key_is_published_at_once_and_used_after_the_grace(self) -> None:
        """During the grace the new key is in the JWKS but the old one still signs."""
        store = MemoryKeyStore()
        old = await load_or_create(store, SECRET, T0)

        during = await rotate(store, SECRET, T0 + 100, TTL)
        after = await refresh(store, SECRET, T0 + 100 + ROTATION_GRACE, TTL)

        new_kid = next(kid for kid in store.rows if kid != old.kid)
        assert during.kid == old.kid
        assert set(kids(during)) == {old.kid, new_kid}
        assert after.kid == new_kid
        assert store.rows[old.kid].retired_at == T0 + 100 + ROTATION_GRACE

    async def test_zero_grace_switches_at_once(self) -> None:
        """rotate(grace=0) signs with the new key immediately and retires the old one at now."""
        store = MemoryKeyStore()
        old = await load_or_create(store, SECRET, T0)

        new = await rotate(store, SECRET, T0 + 100, TTL, grace=0)

        assert new.kid != old.kid
        assert store.rows[old.kid].retired_at == T0 + 100
        assert kids(new) == [new.kid, old.kid]

    async def test_old_tokens_verify_until_they_expire(self) -> None:
        """A token signed with the old key verifies against the JWKS after rotation; once
        expired it does not."""
        store = MemoryKeyStore()
        now = time.time()
        old = await load_or_create(store, SECRET, now - 30)
        fresh = mint_for_alice(old, now=now - 1)
        stale = mint_for_alice(old, now=now - TTL - 10)

        new = await rotate(store, SECRET, now, TTL, grace=0)

        assert verify(fresh, new.jwks())["sub"] == "alice"
        with pytest.raises(jwt.ExpiredSignatureError):
            verify(stale, new.jwks())

    async def test_old_key_dropped_after_ttl_and_leeway(self) -> None:
        """The retired key leaves the JWKS at retired_at + ttl + leeway and is deleted by the
        next rotation, not before."""
        store = MemoryKeyStore()
        old = await load_or_create(store, SECRET, T0)
        await rotate(store, SECRET, T0 + 100, TTL, grace=0)
        end = T0 + 100 + TTL + PUBLISH_LEEWAY

        just_before = await refresh(store, SECRET, end - 1, TTL)
        at_end = await refresh(store, SECRET, end, TTL)
        assert old.kid in kids(just_before)
        assert old.kid not in kids(at_end)
        assert old.kid in store.rows  # refresh never writes

        await rotate(store, SECRET, end, TTL, grace=0)
        assert old.kid not in store.rows
        assert len(store.rows) == 2

    async def test_concurrent_rotations_converge(self) -> None:
        """Two workers rotating at once end up signing with one key after the grace."""
        store = MemoryKeyStore()
        old = await load_or_create(store, SECRET, T0)

        await asyncio.gather(
            rotate(store, SECRET, T0 + 100, TTL), rotate(store, SECRET, T0 + 100.5, TTL)
        )
        later = T0 + 101 + ROTATION_GRACE
        a, b = await asyncio.gather(
            refresh(store, SECRET, later, TTL), refresh(store, SECRET, later, TTL)
        )

        assert a.kid == b.kid != old.kid
        assert set(kids(a)) == set(store.rows)


class TestRefresh:
    async def test_picks_up_a_rotation_by_another_worker(self) -> None:
        """A worker sees the key another worker rotated to."""
        store = MemoryKeyStore()
        worker_b = await load_or_create(store, SECRET, T0)
        rotated = await rotate(store, SECRET, T0 + 10, TTL, grace=0)

        worker_b = await refresh(store, SECRET, T0 + 20, TTL, current=worker_b)

        assert worker_b.kid == rotated.kid
        assert kids(worker_b) == kids(rotated)

    async def test_unchanged_keys_keep_the_same_signer(self) -> None:
        """Refreshing without a change returns the current Signer itself."""
        store = MemoryKeyStore()
        current = await load_or_create(store, SECRET, T0)

        assert await refresh(store, SECRET, T0 + 30, TTL, current=current) is current


class TestKeyRing:
    async def test_signer_before_load_is_an_error(self) -> None:
        """Asking for the signer before load_or_create names the missing step."""
        ring = KeyRing(MemoryKeyStore(), SECRET)

        with pytest.raises(SigningKeyError, match="load_or_create"):
            ring.signer  # noqa: B018

    async def test_load_rotate_refresh_swap_the_signer(self) -> None:
        """Each operation replaces the ring's Signer, using the ring's clock."""
        clock = [T0]
        ring = KeyRing(MemoryKeyStore(), SECRET, token_ttl=TTL, clock=lambda: clock[0])

        first = await ring.load_or_create()
        await ring.rotate()
        clock[0] += ROTATION_GRACE
        second = await ring.refresh()

        assert ring.signer is second
        assert second.kid != first.kid
        assert set(kids(second)) == {first.kid, second.kid}

    async def test_failed_refresh_keeps_the_current_signer(self) -> None:
        """When the store has no usable key, refresh raises and the ring keeps signing."""
        store = MemoryKeyStore()
        ring = KeyRing(store, SECRET, token_ttl=TTL, clock=lambda: T0)
        current = await ring.load_or_create()
        store.rows.clear()

        with pytest.raises(SigningKeyError, match="no active signing key"):
            await ring.refresh()

        assert ring.signer is current
