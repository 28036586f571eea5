"""Client IP: the TCP peer, unless the peer is a trusted proxy (docs/http.md, request path step 1).

From a trusted peer, the right-most address that is not itself a trusted proxy in the one header
`client_ip_header` names: X-Forwarded-For (several header lines are joined in order, RFC 9110
5.3) or Forwarded (RFC 7239), never the other one: a proxy that writes Forwarded passes a
client's own X-Forwarded-For through untouched, and reading it would let the client choose its
IP. The scheme comes from the same place (X-Forwarded-Proto, or Forwarded's `proto=`). From any
other peer those headers, and X-Real-IP, are ignored. An address we cannot parse where one was
expected gives no client IP at all, which enabled allowlists deny: fail closed.
"""

from __future__ import annotations

from typing import NamedTuple

from multidict import CIMultiDictProxy

from gateway.policy.ipset import CompiledIPSet, parse_client_ip


class ClientAddress(NamedTuple):  # immutable; cheaper to build than a frozen dataclass
    text: str | None
    parsed: tuple[int, int] | None  # (version, integer value)
    via_proxy: bool
    proto: str | None  # X-Forwarded-Proto from a trusted proxy


def _forwarded_pairs(line: str) -> list[dict[str, str]]:
    """The elements of a Forwarded header (RFC 7239), each as {lower-case name: unquoted value}."""
    out = []
    for element in line.split(","):
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            name, _, val = pair.strip().partition("=")
            pairs[name.lower()] = val.strip().strip('"')
        out.append(pairs)
    return out


def _forwarded_address(found: str) -> str:
    """A `for=` value without brackets and port."""
    if found.startswith("["):
        return found[1 : found.find("]")] if "]" in found else ""
    if found.count(":") == 1:
        return found.split(":", 1)[0]
    return found


def _xff_hops(headers: CIMultiDictProxy[str]) -> tuple[list[str] | None, str | None]:
    proto = headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower() or None
    xff = headers.getall("X-Forwarded-For", None)
    if not xff:
        return None, proto
    return [part.strip() for line in xff for part in line.split(",")], proto


def _forwarded_hops(headers: CIMultiDictProxy[str]) -> tuple[list[str] | None, str | None]:
    lines = headers.getall("Forwarded", None)
    if not lines:
        return None, None
    elements = [pairs for line in lines for pairs in _forwarded_pairs(line)]
    proto = elements[-1].get("proto", "").lower() or None
    return [_forwarded_address(pairs.get("for", "")) for pairs in elements], proto


_READERS = {"x-forwarded-for": _xff_hops, "forwarded": _forwarded_hops}


def resolve_client(
    peer: str | None,
    headers: CIMultiDictProxy[str],
    trusted: CompiledIPSet,
    header: str = "x-forwarded-for",
) -> ClientAddress:
    parsed_peer = parse_client_ip(peer) if peer else None
    if parsed_peer is None or trusted.empty or not trusted.contains(parsed_peer[1], parsed_peer[0]):
        return ClientAddress(peer, parsed_peer, False, None)
    hops, proto = _READERS[header](headers)
    if not hops:
        return ClientAddress(peer, parsed_peer, False, proto)
    for hop in reversed(hops):
        parsed = parse_client_ip(hop)
        if parsed is None:
            return ClientAddress(None, None, True, proto)
        if not trusted.contains(parsed[1], parsed[0]):
            return ClientAddress(hop, parsed, True, proto)
    # Every hop is a trusted proxy: the left-most one is where the request came from.
    return ClientAddress(hops[0], parse_client_ip(hops[0]), True, proto)
