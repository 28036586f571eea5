"""Signing keys for `X-Gateway-Assertion`: creation, rotation, the JWKS, and minting tokens.

The gateway signs short-lived JWTs for proxied requests (EdDSA over Ed25519, docs/backends.md);
gateway.web.identity reuses one for up to 30 s per principal, app, role and auth. The keys live in
the state store, the private half sealed with the secret key, so every worker and every instance
signs with the same key and publishes the same JWKS.

Who uses what:

- `KeyRing` is what the app holds: `await ring.load_or_create()` at start-up, `await
  ring.refresh()` every `REFRESH_INTERVAL` seconds, `mint(ring.signer, ...)` per request and
  `ring.signer.jwks_json` for `{prefix}/jwks.json`.
- `load_or_create`, `rotate` and `refresh` are the same operations as plain functions taking an
  explicit `now`, for the CLI and the tests.

Several workers, one active key. The active key is always the *oldest* key that is not retired
(retired_at is None or still in the future), ties broken by kid. Every worker applies the same
rule to the same rows, so they agree without a lock:

- First start: a worker that finds no active key adds one, then re-reads the store and uses the
  oldest active key, which may be the one another worker added a moment earlier. The loser's key
  stays in the store and in the JWKS (harmless: it is a real gateway key) until the next
  rotation retires it. In the rare interleaving where a worker re-read before a concurrent add
  landed, it converges at its next `refresh`.
- Rotation: `rotate` adds a new key and schedules every active key to retire at
  `now + grace` (default `ROTATION_GRACE`, longer than `REFRESH_INTERVAL`). During the grace
  every worker already *publishes* the new key (it picks it up at its next refresh) while still
  *signing* with the old one; only after the grace do the workers switch. Without the grace, a
  backend that refetched the JWKS from a worker that had not refreshed yet would reject every
  token signed with the new key until its next refetch. `grace=0` switches immediately (for a
  suspected key compromise, where that short disturbance is the lesser evil).
- A retired key stays in the JWKS until `retired_at + token_ttl + PUBLISH_LEEWAY`, so tokens it
  signed (including those signed by a worker that had not refreshed yet) verify until they
  expire. `REFRESH_INTERVAL` must stay below `PUBLISH_LEEWAY` for that to hold. Keys past that
  point are deleted by the next `load_or_create` or `rotate` (`refresh` never writes).

Cost of `Signer.sign`, measured on the development machine (2 shared cores, Python 3.11,
PyJWT 2.15, cryptography 50, the 10 claims `mint` produces): `jwt.encode` took 45-64 us per
call (median of runs about 60 us), over the ~60 us budget for a per-request step; the Ed25519
signature alone is about 37-45 us. So `sign` builds the JWS compact serialisation itself around
the library signature: the header segment is encoded once per key, the claims with orjson,
measuring 35-48 us (median about 45 us). No cryptography is hand-written: the signature is
cryptography's Ed25519, and the tests verify every token with PyJWT.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.services.secret_key import Sealer, SealError, SecretKey

ALGORITHM = "EdDSA"
DEFAULT_ISSUER = "access-gateway"
DEFAULT_TOKEN_TTL = 60
SEAL_PURPOSE = "signing-keys"
AUTH_METHODS = frozenset({"password+totp", "password", "api-key"})

PUBLISH_LEEWAY = 60.0
"""Seconds a retired key stays published after the last token it signed has expired."""
REFRESH_INTERVAL = 3.0
"""How often each worker re-reads the keys (`KeyRing.refresh`); below PUBLISH_LEEWAY. A few
seconds, so a rotation (even `--immediately`) is seen by every instance sharing the store within
seconds; an unchanged refresh is one small query."""
ROTATION_GRACE = 45.0
"""Seconds between publishing a new key and signing with it; above REFRESH_INTERVAL."""


class SigningKeyError(Exception):
    """The signing keys in the store cannot be used; the message says which key and why."""


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """One signing key as the state store keeps it; the private half is sealed."""

    kid: str
    algorithm: str
    sealed_private: bytes
    public_jwk: dict[str, Any]
    created_at: float
    retired_at: float | None = None


class SigningKeyStore(Protocol):
    """The part of the state store this module needs.

    The store may return its own record type: only the attribute names of `SigningKeyRecord`
    are read. Retiring an already retired key and deleting an unknown kid are not errors
    (several workers may do either at once).
    """

    async def signing_keys(self) -> Sequence[SigningKeyRecord]: ...

    async def signing_key_add(self, record: SigningKeyRecord) -> None: ...

    async def signing_key_retire(self, kid: str, at: float) -> None: ...

    async def signing_key_delete(self, kid: str) -> None: ...


def _b64url_bytes(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64url(data: bytes) -> str:
    return _b64url_bytes(data).decode("ascii")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK of an Ed25519 public key; the kid is its RFC 7638 thumbprint."""
    x = _b64url(public_key.public_bytes_raw())
    # RFC 7638: the required members in lexicographic order, no whitespace.
    thumbprint = orjson.dumps({"crv": "Ed25519", "kty": "OKP", "x": x})
    kid = _b64url(hashlib.sha256(thumbprint).digest())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": ALGORITHM}


@dataclass(frozen=True, slots=True, eq=False)
class Signer:
    """The active private key and the public keys to publish; replaced whole, never changed."""

    kid: str
    private_key: Ed25519PrivateKey = field(repr=False)
    public_jwks: tuple[Mapping[str, Any], ...]
    jwks_json: bytes = field(init=False, repr=False)
    """The JWKS document, serialised once, for `{prefix}/jwks.json`."""
    _head: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        header = {"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}
        object.__setattr__(self, "_head", _b64url_bytes(orjson.dumps(header)) + b".")
        object.__setattr__(self, "jwks_json", orjson.dumps(self.jwks()))

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (RFC 7515) of the claims with the active key; runs once per request."""
        signing_input = self._head + _b64url_bytes(orjson.dumps(claims))
        signature = self.private_key.sign(signing_input)
        return (signing_input + b"." + _b64url_bytes(signature)).decode("ascii")

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys as a JWK Set (a fresh copy: callers may not change the Signer's)."""
        return {"keys": [dict(jwk) for jwk in self.public_jwks]}


def mint(
    signer: Signer,
    *,
    sub: str,
    email: str | None,
    role: str,
    app: str,
    auth: str,
    now: float,
    jti: str | None = None,
    ttl: int = DEFAULT_TOKEN_TTL,
    issuer: str = DEFAULT_ISSUER,
) -> str:
    """An `X-Gateway-Assertion`; `email` is None for service accounts. `jti` is random unless
    given: a token may serve several requests (docs/backends.md), so it is not a request id."""
    if auth not in AUTH_METHODS:
        raise ValueError(f"auth must be one of {sorted(AUTH_METHODS)}, not {auth!r}")
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": sub,
        "aud": app,
        "app": app,
        "role": role,
        "auth": auth,
        "iat": iat,
        "exp": iat + ttl,
        "jti": jti or secrets.token_hex(16),
    }
    if email is not None:
        claims["email"] = email
    return signer.sign(claims)


# -- selection rules (pure) -------------------------------------------------------------------


def _is_active(record: SigningKeyRecord, now: float) -> bool:
    return record.retired_at is None or record.retired_at > now


def _active(records: Sequence[SigningKeyRecord], now: float) -> SigningKeyRecord | None:
    """The oldest key not retired at `now`; every worker picks the same one from the same rows."""
    candidates = [r for r in records if _is_active(r, now)]
    return min(candidates, key=lambda r: (r.created_at, r.kid), default=None)


def _published_until(record: SigningKeyRecord, token_ttl: float) -> float:
    if record.retired_at is None:
        return float("inf")
    return record.retired_at + token_ttl + PUBLISH_LEEWAY


def _published(
    records: Sequence[SigningKeyRecord], now: float, token_ttl: float
) -> list[SigningKeyRecord]:
    """Keys whose tokens may still be valid, newest first."""
    live = [r for r in records if now < _published_until(r, token_ttl)]
    return sorted(live, key=lambda r: (r.created_at, r.kid), reverse=True)


# -- sealing ----------------------------------------------------------------------------------


def _sealer(secret_key: SecretKey) -> Sealer:
    return secret_key.sealer(SEAL_PURPOSE)


def _new_record(secret_key: SecretKey, now: float) -> SigningKeyRecord:
    private_key = Ed25519PrivateKey.generate()
    jwk = public_jwk(private_key.public_key())
    kid = jwk["kid"]
    # The kid is the associated data: a sealed key copied onto another row does not open.
    sealed = _sealer(secret_key).seal(private_key.private_bytes_raw(), kid.encode())
    return SigningKeyRecord(kid, ALGORITHM, sealed, jwk, now, None)


def _open(record: SigningKeyRecord, secret_key: SecretKey) -> Ed25519PrivateKey:
    if record.algorithm != ALGORITHM:
        raise SigningKeyError(
            f"signing key {record.kid}: algorithm {record.algorithm!r} is not supported, "
            f"only {ALGORITHM!r}"
        )
    try:
        raw = _sealer(secret_key).open(record.sealed_private, record.kid.encode())
    except SealError as exc:
        raise SigningKeyError(
            f"signing key {record.kid} cannot be opened with this secret key: the secret key "
            "was replaced, or workers use different ones; give every worker the same key, or "
            "rotate the signing key with the new secret key"
        ) from exc
    private_key = Ed25519PrivateKey.from_private_bytes(raw)
    if public_jwk(private_key.public_key())["x"] != record.public_jwk.get("x"):
        raise SigningKeyError(
            f"signing key {record.kid}: the stored public key does not match the private key"
        )
    return private_key


def _build(
    records: Sequence[SigningKeyRecord],
    secret_key: SecretKey,
    now: float,
    token_ttl: float,
    current: Signer | None = None,
) -> Signer:
    active = _active(records, now)
    if active is None:
        raise SigningKeyError("the state store holds no active signing key")
    published = tuple(dict(r.public_jwk) for r in _published(records, now, token_ttl))
    if current is not None and current.kid == active.kid and current.public_jwks == published:
        return current
    return Signer(active.kid, _open(active, secret_key), published)


async def _purge(
    store: SigningKeyStore, records: Sequence[SigningKeyRecord], now: float, token_ttl: float
) -> None:
    for record in records:
        if _published_until(record, token_ttl) <= now:
            await store.signing_key_delete(record.kid)


# -- store operations -------------------------------------------------------------------------


async def load_or_create(
    store: SigningKeyStore,
    secret_key: SecretKey,
    now: float,
    *,
    token_ttl: float = DEFAULT_TOKEN_TTL,
) -> Signer:
    """The Signer for this worker; creates, seals and stores a key if none is active."""
    records = await store.signing_keys()
    if _active(records, now) is None:
        await store.signing_key_add(_new_record(secret_key, now))
        # Other workers may have added theirs at the same time: all use the oldest.
        records = await store.signing_keys()
    await _purge(store, records, now, token_ttl)
    return _build(records, secret_key, now, token_ttl)


async def rotate(
    store: SigningKeyStore,
    secret_key: SecretKey,
    now: float,
    token_ttl: float = DEFAULT_TOKEN_TTL,
    *,
    grace: float = ROTATION_GRACE,
) -> Signer:
    """Add a new key, retire the current ones at `now + grace`, delete long-expired ones.

    The returned Signer publishes the new key at once and signs with it from `now + grace`
    on (after the next refresh); with `grace=0` it signs with the new key immediately.
    """
    before = await store.signing_keys()
    await store.signing_key_add(_new_record(secret_key, now))
    for record in before:
        if record.retired_at is None:
            await store.signing_key_retire(record.kid, now + grace)
    await _purge(store, before, now, token_ttl)
    return _build(await store.signing_keys(), secret_key, now, token_ttl)


async def refresh(
    store: SigningKeyStore,
    secret_key: SecretKey,
    now: float,
    token_ttl: float = DEFAULT_TOKEN_TTL,
    *,
    current: Signer | None = None,
) -> Signer:
    """Re-read the keys (rotation by another worker, end of a grace, expiry); never writes.

    Returns `current` itself when nothing changed, so an unchanged refresh costs one query.
    """
    return _build(await store.signing_keys(), secret_key, now, token_ttl, current)


class KeyRing:
    """The worker's current Signer; every operation replaces it with one assignment."""

    def __init__(
        self,
        store: SigningKeyStore,
        secret_key: SecretKey,
        *,
        token_ttl: int = DEFAULT_TOKEN_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._secret_key = secret_key
        self._clock = clock
        self.token_ttl = token_ttl
        self._signer: Signer | None = None

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            raise SigningKeyError("KeyRing.load_or_create() has not run yet")
        return self._signer

    async def load_or_create(self) -> Signer:
        self._signer = await load_or_create(
            self._store, self._secret_key, self._clock(), token_ttl=self.token_ttl
        )
        return self._signer

    async def rotate(self, *, grace: float = ROTATION_GRACE) -> Signer:
        self._signer = await rotate(
            self._store, self._secret_key, self._clock(), self.token_ttl, grace=grace
        )
        return self._signer

    async def refresh(self) -> Signer:
        """Pick up changes made elsewhere; on error the current Signer stays in force."""
        self._signer = await refresh(
            self._store, self._secret_key, self._clock(), self.token_ttl, current=self._signer
        )
        return self._signer
