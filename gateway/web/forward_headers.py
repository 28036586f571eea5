"""What headers cross the gateway, each way (docs/http.md, request path step 6).

Request, in this order: hop-by-hop headers (RFC 9110 7.6.1, plus every header the Connection
header names) are dropped; every inbound header that claims an identity or a client address
(X-Gateway-*, Forwarded, X-Forwarded-*, X-Real-IP) is dropped; on the api surface the headers
that carry API keys (`Authorization: Bearer`, X-API-Key) are dropped; `Expect` is dropped when
the gateway has already told the client to go on (see `request_headers`); the gateway's own
cookies are cut out of Cookie; then the gateway's own X-Forwarded-*, request id and identity
headers are added. Because ours are added last, a client can never remove or replace them,
e.g. with `Connection: X-Forwarded-For`.

Names are compared in any case and with `_` read as `-`: CGI, WSGI, PHP and many frameworks map
both `X-Forwarded-For` and `X_Forwarded_For` to the same HTTP_X_FORWARDED_FOR variable, so a
spelling that differs only there must be treated as the header itself.

Response: hop-by-hop headers are dropped, and Set-Cookie lines that would set one of the
gateway's own cookies (the session and CSRF cookies, in any spelling, also with the `__Host-` or
`__Secure-` prefix) are removed, so a backend cannot plant or overwrite them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import unquote, urlsplit

from gateway.web.csrf import COOKIE as CSRF_COOKIE

Pairs = list[tuple[str, str]]

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Exact names (after folding) that claim an identity or an address; plus the prefixes below.
CLAIMS: Final = frozenset({"forwarded", "x-real-ip"})
CLAIM_PREFIXES: Final = ("x-forwarded", "x-gateway-")
API_KEY_HEADERS: Final = frozenset({"x-api-key"})
_COOKIE_PREFIXES: Final = ("__host-", "__secure-")


def fold(name: str) -> str:
    """The name as a CGI-style backend sees it: case-insensitive, `_` the same as `-`."""
    return name.lower().replace("_", "-")


def is_claim(folded: str) -> bool:
    return folded in CLAIMS or folded.startswith(CLAIM_PREFIXES)


_DROP, _CHECK, _PASS = 0, 1, 2
_CHECKED: Final = frozenset({"authorization", "cookie", "expect"}) | API_KEY_HEADERS
_KINDS: dict[str, tuple[str, int]] = {}  # raw request header name -> (folded, kind)


def _kind(name: str) -> tuple[str, int]:
    """A request header's folded name and what to do with it; names repeat, so it is kept."""
    known = _KINDS.get(name)
    if known is None:
        folded = fold(name)
        if folded in HOP_BY_HOP or is_claim(folded) or folded == "host":
            known = (folded, _DROP)
        else:
            known = (folded, _CHECK if folded in _CHECKED else _PASS)
        if len(_KINDS) < 4096:
            _KINDS[name] = known
    return known


def _listed(folded: list[tuple[str, str, str]]) -> frozenset[str]:
    """The names the Connection header(s) list, folded (to be dropped as hop-by-hop too)."""
    tokens = [
        fold(token.strip())
        for lower, _, value in folded
        if lower == "connection"
        for token in value.split(",")
        if token.strip()
    ]
    return frozenset(tokens)


def request_headers(
    inbound: Iterable[tuple[str, str]],
    *,
    host: str | None,
    client_ip: str | None,
    secure: bool,
    request_id: str,
    identity: Mapping[str, str],
    own_cookies: tuple[str, ...],
    api_surface: bool,
    drop_expect: bool,
    upstream: str | None = None,
) -> Pairs:
    """The headers sent upstream. `host` is the canonical Host of the request (the same for
    HTTP and WebSocket); `own_cookies` the gateway's cookie names; `drop_expect` when the
    gateway already answered `100 Continue` itself (aiohttp's server does before any handler),
    so a backend that never sends 100 cannot make the body wait. `upstream` (scheme://host:port)
    gives the Host of a request that had none (HTTP/1.0): HTTP/1.1 upstream requests need one."""
    kinds = [(*_kind(name), name, value) for name, value in inbound]
    listed = (
        _listed([(f, n, v) for f, _, n, v in kinds])
        if any(f == "connection" for f, _, _, _ in kinds)
        else frozenset()
    )
    out: Pairs = []
    for folded, kind, name, value in kinds:
        if kind == _DROP or (listed and folded in listed):
            continue
        if kind == _CHECK:
            if api_surface and (
                folded in API_KEY_HEADERS
                or (folded == "authorization" and value.lstrip()[:7].lower() == "bearer ")
            ):
                continue  # the API key itself never reaches the backend (section 4 step 4)
            if drop_expect and folded == "expect":
                continue
            if folded == "cookie":
                if name.lower() != "cookie":
                    continue  # "Cookie_" spellings: not a cookie header to anyone but CGI
                value = without_cookies(value, own_cookies)
                if not value:
                    continue
        out.append((name, value))
    if host:
        out.append(("Host", host))  # backends see the host the client asked for
        out.append(("X-Forwarded-Host", host))
    elif upstream:
        out.append(("Host", urlsplit(upstream).netloc))
    if client_ip:
        out.append(("X-Forwarded-For", client_ip))
    out.append(("X-Forwarded-Proto", "https" if secure else "http"))
    out.append(("X-Gateway-Request-Id", request_id))
    out.extend(identity.items())
    return out


def own_cookie_names(session_cookie: str | None) -> tuple[str, ...]:
    return (session_cookie, CSRF_COOKIE) if session_cookie else (CSRF_COOKIE,)


def _fold_cookie_name(text: str) -> str:
    """A cookie name (or a whole Cookie header) as the most lenient backend reads it: PHP
    percent-decodes names and turns " ", "." and "[" into "_"; others ignore case."""
    if "%" in text:
        text = unquote(text)
    return text.lower().replace(" ", "_").replace(".", "_").replace("[", "_")


def _is_own_cookie(name: str, own: tuple[str, ...]) -> bool:
    name = _fold_cookie_name(name.strip())
    for prefix in _COOKIE_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return any(name == o.lower() for o in own)


def without_cookies(header: str, own: tuple[str, ...]) -> str:
    """The Cookie header minus the gateway's own cookies."""
    folded = _fold_cookie_name(header)
    if not any(o.lower() in folded for o in own):
        return header  # fast path: none of ours in it
    return "; ".join(
        part
        for part in (p.strip() for p in header.split(";"))
        if part and not _is_own_cookie(part.partition("=")[0], own)
    )


def response_headers(upstream: Iterable[tuple[str, str]], own_cookies: tuple[str, ...]) -> Pairs:
    """The upstream's response headers the client gets (the request id is added by the caller)."""
    names = [(fold(name), name, value) for name, value in upstream]
    drop = HOP_BY_HOP.union(_listed(names))
    out: Pairs = []
    for folded, name, value in names:
        if folded in drop or folded == "x-gateway-request-id":
            continue
        if folded == "set-cookie" and _is_own_cookie(value.partition("=")[0], own_cookies):
            continue
        out.append((name, value))
    return out
