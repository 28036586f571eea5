"""Client IP: the TCP peer, unless the peer is a trusted proxy (PRODUCT.md section 4 step 1).

From a trusted peer, the right-most address of X-Forwarded-For (several header lines are joined
in order, RFC 9110 5.3) or, without it, of Forwarded, that is not itself a trusted proxy. From any
other peer those headers, and X-Real-IP, are ignored. An address we cannot parse where one was
expected gives no client IP at all, which enabled allowlists deny: fail closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDictProxy

from gateway.policy.ipset import CompiledIPSet, parse_client_ip


@dataclass(frozen=True, slots=True)
class ClientAddress:
    text: str | None
    parsed: tuple[int, int] | None  # (version, integer value)
    via_proxy: bool
    proto: str | None  # X-Forwarded-Proto from a trusted proxy


def _forwarded_for(value: str) -> list[str]:
    """The `for=` values of a Forwarded header (RFC 7239), quotes, brackets and ports removed."""
    out = []
    for element in value.split(","):
        found = ""
        for pair in element.split(";"):
            name, _, val = pair.strip().partition("=")
            if name.lower() == "for":
                found = val.strip().strip('"')
        if found.startswith("["):
            found = found[1 : found.find("]")] if "]" in found else ""
        elif found.count(":") == 1:
            found = found.split(":", 1)[0]
        out.append(found)
    return out


def _hops(headers: CIMultiDictProxy[str]) -> list[str] | None:
    xff = headers.getall("X-Forwarded-For", None)
    if xff:
        return [part.strip() for line in xff for part in line.split(",")]
    forwarded = headers.getall("Forwarded", None)
    if forwarded:
        return [hop for line in forwarded for hop in _forwarded_for(line)]
    return None


def resolve_client(
    peer: str | None, headers: CIMultiDictProxy[str], trusted: CompiledIPSet
) -> ClientAddress:
    parsed_peer = parse_client_ip(peer) if peer else None
    if parsed_peer is None or trusted.empty or not trusted.contains(parsed_peer[1], parsed_peer[0]):
        return ClientAddress(peer, parsed_peer, False, None)
    proto = headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower() or None
    hops = _hops(headers)
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
