"""Host header canonicalisation (docs/http.md, request path step 2). Pure: never imports aiohttp.

`canonical_host` turns a Host header value into the one form the gateway matches apps against
and forwards upstream, or raises `BadHost` (answered 400). Name-based backends read the Host
header too; forwarding a value the gateway matched differently (`admin.example.` with its
trailing dot, `ADMIN.example`) would let a host-less app reach a vhost the user has no grant
for, so what is forwarded is exactly what was matched.

Canonical form: lower-case; one trailing dot removed; IPv6 literals in brackets, compressed;
the port kept after the host when the client sent one (as digits without leading zeros), since
backends build absolute links from it. `Host.name` (no port) is what apps are matched against.

Refused: anything that is not a DNS name or an IP literal: userinfo (`user@host`), commas (two
hosts in one header), spaces, non-ASCII (an IDN must arrive as its `xn--` A-label), empty
labels, a label over 63 characters, a name over 253, a port that is not 1..65535, IPv6 zone ids,
and names whose last label is numeric but that are not a dotted-quad IPv4 address (`127.1`,
`0x7f.1`, `010.0.0.1`: resolvers and backends read those as addresses in different ways).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass


class BadHost(ValueError):
    """The Host header is not a DNS name or IP literal (answered 400)."""


@dataclass(frozen=True, slots=True)
class Host:
    name: str  # what apps are matched against: no port, no trailing dot, lower-case
    header: str  # what is forwarded: name, plus ":port" when the client sent a port


# Lower-case labels of letters, digits, "-" and "_" (common in container service names), a last
# label that starts with a letter, an optional port: the common case needs no further work.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_FAST = re.compile(rf"(?:{_LABEL}\.)*[a-wyz_][a-z0-9_-]{{0,62}}(?::[1-9][0-9]{{0,4}})?")
_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
_PORT = re.compile(r"[0-9]{1,5}")
_DOTTED_QUAD = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")


_SEEN: dict[str, Host] = {}  # accepted values that needed the slow path (IP literals...)
_SEEN_MAX = 1024


def canonical_host(value: str) -> Host:
    if _FAST.fullmatch(value) and len(value) <= 259:
        name, _, port = value.partition(":")
        if len(name) <= 253 and (not port or int(port) <= 65535):
            return Host(name, value)
    # A gateway reached by IP address sees the same few values on every request; the slow
    # path (ipaddress parsing) cost ~10 us each time. Only accepted values are kept.
    host = _SEEN.get(value)
    if host is None:
        host = _canonical_slow(value)
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[value] = host
    return host


def _canonical_slow(value: str) -> Host:
    if not value.isascii() or not value.isprintable() or value != value.strip():
        raise BadHost("not printable ASCII")
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise BadHost("unterminated IPv6 literal")
        literal, rest = value[1:end], value[end + 1 :]
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            raise BadHost("invalid IPv6 literal") from None
        if address.scope_id is not None:
            raise BadHost("IPv6 zone id")
        name = f"[{address.compressed}]"
        if rest and not rest.startswith(":"):
            raise BadHost("text after the IPv6 literal")
        port = rest[1:] if rest else None
    else:
        name, colon, port_text = value.partition(":")
        port = port_text if colon else None
        name = name.lower()
        if name.endswith("."):
            name = name[:-1]
        if len(name) > 253 or not _NAME.fullmatch(name):
            raise BadHost("not a DNS name")
        last = name.rsplit(".", 1)[-1]
        if last.isdigit() or last.startswith("0x"):
            if not _DOTTED_QUAD.fullmatch(name):
                raise BadHost("numeric name that is not a dotted-quad IPv4 address")
            try:
                ipaddress.IPv4Address(name)
            except ValueError:
                raise BadHost("invalid IPv4 address") from None
    if port is None:
        return Host(name, name)
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise BadHost("invalid port")
    return Host(name, f"{name}:{int(port)}")
