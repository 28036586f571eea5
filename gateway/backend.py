"""Verify `X-Gateway-Assertion` in a Python backend behind the access gateway.

Copy this file into a backend, or import it from the installed package: it needs only PyJWT
with its crypto extra (and aiohttp for `gateway_auth_middleware`), and imports nothing else
from the gateway. See docs/backends.md for examples (aiohttp, Flask/WSGI, FastAPI/ASGI).

    verifier = GatewayVerifier("https://gw.example.com/_gateway/jwks.json", audience="billing")
    identity = verifier.verify(request.headers["X-Gateway-Assertion"])   # or InvalidAssertion

Why verify instead of reading `X-Gateway-User`: anyone who can reach the backend without
going through the gateway can send any header. Only the gateway holds the private key.

The JWKS is fetched on first use and kept for `cache_ttl` seconds. A token signed with a key
the cache does not know triggers one refetch (at most one fetch per `min_refetch_interval`
seconds, so forged kids cannot make the backend hammer the gateway); that is how a rotated key
is picked up. If a refetch fails, the keys already known stay in use.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    from aiohttp import web

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
    Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

HEADER = "X-Gateway-Assertion"
REQUEST_ID_HEADER = "X-Gateway-Request-Id"
REQUEST_KEY = "gateway_identity"
DEFAULT_ISSUER = "access-gateway"
MAX_JWKS_BYTES = 1 << 20

# The algorithms a gateway key may use, by key type. Anything else, "none" and every HS*
# included, is refused before a key is even looked up.
_ALGORITHM_FOR_KEY = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}
ALLOWED_ALGORITHMS = frozenset(_ALGORITHM_FOR_KEY.values())
_REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "exp", "jti"]


class InvalidAssertion(Exception):
    """The assertion is missing, malformed, forged, expired or not meant for this backend.

    `reason` is a short stable code (`expired`, `bad_signature`, `wrong_audience`, ...);
    `detail` a sentence for logs. Neither contains the token.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the gateway let through: the verified claims of one assertion."""

    user: str
    email: str | None
    role: str
    app: str
    auth: str
    token_id: str  # the assertion's jti; one token may serve several requests (up to 30 s)
    claims: Mapping[str, Any]
    request_id: str | None = None  # X-Gateway-Request-Id, set by gateway_auth_middleware


def _keys_from_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWK Set by kid; unusable entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWK Set is an object with a "keys" list')
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        algorithm = _ALGORITHM_FOR_KEY.get((entry.get("kty"), entry.get("crv")))
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=algorithm)
        except jwt.PyJWTError:
            continue
    return keys


class GatewayVerifier:
    """Verifies assertions for one app (`audience`) against the gateway's JWKS.

    Give either `jwks_url` (fetched, cached, refetched) or a fixed `jwks` document. Safe to
    share between threads and between the requests of one event loop.
    """

    def __init__(
        self,
        jwks_url: str | None = None,
        *,
        jwks: dict[str, Any] | None = None,
        audience: str,
        issuer: str = DEFAULT_ISSUER,
        leeway: float = 5,
        cache_ttl: float = 300,
        min_refetch_interval: float = 30,
        timeout: float = 5,
    ) -> None:
        if (jwks_url is None) == (jwks is None):
            raise ValueError("give exactly one of jwks_url and jwks")
        if jwks_url is not None and urllib.parse.urlsplit(jwks_url).scheme not in (
            "http",
            "https",
        ):
            raise ValueError(f"jwks_url must be an http(s) URL, not {jwks_url!r}")
        if not audience:
            raise ValueError("audience (the app name in the gateway's config) is required")
        self.jwks_url = jwks_url
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.cache_ttl = cache_ttl
        self.min_refetch_interval = min_refetch_interval
        self.timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {} if jwks is None else _keys_from_jwks(jwks)
        self._fetched_at = float("-inf")  # monotonic time of the last successful fetch
        self._attempted_at = float("-inf")  # monotonic time of the last attempt
        self._fetch_error = ""
        self._fetch_lock = threading.Lock()  # one fetch at a time across threads
        self._lock = threading.Lock()  # guards _loop_locks
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    # -- public ---------------------------------------------------------------------------

    def verify(self, token: str) -> Identity:
        """The identity in `token`, or InvalidAssertion; may fetch the JWKS (blocking)."""
        algorithm, kid = self._header(token)
        self._refresh_keys(kid)
        return self._decode(token, algorithm, kid)

    async def verify_async(self, token: str) -> Identity:
        """As `verify`, for event loops: a JWKS fetch runs in a worker thread, and concurrent
        requests that need it wait for that one fetch instead of starting their own."""
        algorithm, kid = self._header(token)
        if self._fetch_due(kid):
            async with self._loop_lock():
                if self._fetch_due(kid):
                    await asyncio.to_thread(self._refresh_keys, kid)
        return self._decode(token, algorithm, kid)

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._lock:
            lock = self._loop_locks.get(loop)
            if lock is None:
                lock = self._loop_locks[loop] = asyncio.Lock()
        return lock

    # -- steps ----------------------------------------------------------------------------

    @staticmethod
    def _header(token: str) -> tuple[str, str]:
        if not token:
            raise InvalidAssertion("missing", f"no {HEADER} header")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidAssertion("malformed", str(exc)) from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise InvalidAssertion(
                "algorithm_not_allowed", f"alg {algorithm!r} is not one of EdDSA, ES256"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidAssertion("malformed", "the header has no kid")
        return algorithm, kid

    def _fetch_due(self, kid: str) -> bool:
        if self.jwks_url is None:
            return False
        now = time.monotonic()
        if now - self._attempted_at < self.min_refetch_interval:
            return False
        return kid not in self._keys or now - self._fetched_at >= self.cache_ttl

    def _refresh_keys(self, kid: str) -> None:
        if not self._fetch_due(kid):
            return
        with self._fetch_lock:
            if not self._fetch_due(kid):  # another thread fetched while this one waited
                return
            try:
                keys = _keys_from_jwks(self._fetch())
            except (OSError, ValueError) as exc:
                self._fetch_error = f"{self.jwks_url}: {exc}"
            else:
                self._keys = keys  # one assignment: readers see the old or the new set
                self._fetched_at = time.monotonic()
                self._fetch_error = ""
            finally:
                # Counted from the end of the attempt: while a fetch is running, callers that
                # need it queue on the lock above instead of being refused by the rate limit.
                self._attempted_at = time.monotonic()

    def _fetch(self) -> Any:
        assert self.jwks_url is not None
        # The scheme was checked to be http(s) in __init__ (no file: or custom schemes).
        request = urllib.request.Request(  # noqa: S310
            self.jwks_url, headers={"Accept": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            body = response.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return json.loads(body)

    def _decode(self, token: str, algorithm: str, kid: str) -> Identity:
        key = self._keys.get(kid)
        if key is None:
            detail = f"no gateway key with kid {kid!r}"
            if self._fetch_error:
                detail += f" (fetching the JWKS failed: {self._fetch_error})"
            raise InvalidAssertion("unknown_key", detail)
        try:
            # The key fixes the algorithm: a token cannot ask for another one (key confusion).
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": _REQUIRED_CLAIMS, "strict_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidAssertion("expired", "the assertion has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidAssertion(
                "wrong_audience", f"the assertion is not for app {self.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise InvalidAssertion(
                "wrong_issuer", f"the assertion was not issued by {self.issuer!r}"
            ) from None
        except jwt.InvalidSignatureError:
            raise InvalidAssertion("bad_signature", "the signature does not verify") from None
        except jwt.InvalidAlgorithmError as exc:
            raise InvalidAssertion("algorithm_not_allowed", str(exc)) from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidAssertion("missing_claim", str(exc)) from None
        except jwt.ImmatureSignatureError:
            raise InvalidAssertion(
                "not_yet_valid", "the assertion is issued in the future"
            ) from None
        except jwt.PyJWTError as exc:
            raise InvalidAssertion("malformed", str(exc)) from None
        return _identity(claims)


def _identity(claims: dict[str, Any]) -> Identity:
    for name in ("sub", "role", "app", "auth", "jti"):
        if not isinstance(claims.get(name), str):
            raise InvalidAssertion("missing_claim", f"claim {name!r} must be a string")
    email = claims.get("email")
    if email is not None and not isinstance(email, str):
        raise InvalidAssertion("malformed", "claim 'email' must be a string")
    return Identity(
        user=claims["sub"],
        email=email,
        role=claims["role"],
        app=claims["app"],
        auth=claims["auth"],
        token_id=claims["jti"],
        claims=MappingProxyType(claims),
    )


def verify_assertion(token: str, verifier: GatewayVerifier) -> Identity:
    """The identity in `token`, or InvalidAssertion (for WSGI apps and sync code)."""
    return verifier.verify(token)


@functools.cache
def identity_key() -> Any:
    """The request key the middleware stores the Identity under.

    A `web.RequestKey` where aiohttp has them (recent versions warn about plain string
    keys with NotAppKeyWarning), else the string "gateway_identity".
    """
    from aiohttp import web

    key_type = getattr(web, "RequestKey", None)
    return REQUEST_KEY if key_type is None else key_type(REQUEST_KEY, Identity)


def request_identity(request: web.Request) -> Identity:
    """The Identity `gateway_auth_middleware` verified for this request."""
    identity: Identity = request[identity_key()]
    return identity


def gateway_auth_middleware(
    verifier: GatewayVerifier, *, exempt_paths: Collection[str] = ()
) -> Middleware:
    """An aiohttp middleware: 401 without a valid assertion, else the request's Identity.

    Handlers read it with `request_identity(request)`. Paths in `exempt_paths` (e.g. a health
    check that the orchestrator calls directly) pass through unverified.
    """
    from aiohttp import web  # here, so WSGI/ASGI users need not install aiohttp

    exempt = frozenset(exempt_paths)
    key = identity_key()

    @web.middleware
    async def gateway_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt:
            return await handler(request)
        try:
            identity = await verifier.verify_async(request.headers.get(HEADER, ""))
        except InvalidAssertion as exc:
            return web.json_response(
                {
                    "type": "about:blank",
                    "title": "Unauthorized",
                    "status": 401,
                    "code": "unauthenticated",
                    "detail": f"{HEADER}: {exc.reason}",
                },
                status=401,
                content_type="application/problem+json",
                headers={"WWW-Authenticate": 'GatewayAssertion realm="access-gateway"'},
            )
        request[key] = replace(identity, request_id=request.headers.get(REQUEST_ID_HEADER))
        return await handler(request)

    return gateway_auth
