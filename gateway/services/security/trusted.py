"""Trusted login IPs: the policy's read-only `trusted_login_ips` plus run-time entries in the
state store, per email domain. Addresses trusted for a user's domain never count toward an
incident of that user."""

from __future__ import annotations

import functools
from collections.abc import Callable

from gateway.policy.ipset import CompiledIPSet, parse_client_ip
from gateway.policy.schema import TrustedLoginIp
from gateway.policy.snapshot import Snapshot
from gateway.policy.trusted_ips import (
    check_description,
    check_scope,
    check_trusted_network,
    email_domain,
)
from gateway.services.store import StateStore, StoreConflict, TrustedIpRecord

from .models import InvalidTrustedIp, TrustedIp

Matcher = Callable[[str | None], bool]
__all__ = ["Matcher", "add", "email_domain", "entries", "matcher", "matcher_for", "search"]


@functools.lru_cache(maxsize=8)
def _policy_entries(entries: tuple[TrustedLoginIp, ...]) -> tuple[TrustedIp, ...]:
    return tuple(TrustedIp(None, e.cidr, e.scope, e.description, "policy") for e in entries)


def policy_entries(snapshot: Snapshot, scope: str | None = None) -> list[TrustedIp]:
    """The policy's entries (already validated and canonical), of one scope if given."""
    entries = _policy_entries(snapshot.policy.trusted_login_ips)
    return [e for e in entries if scope is None or e.scope == scope]


def runtime_entry(record: TrustedIpRecord) -> TrustedIp:
    return TrustedIp(
        record.id,
        record.cidr,
        record.scope,
        record.description,
        "runtime",
        record.created_at,
        record.created_by,
    )


async def entries(
    store: StateStore, snapshot: Snapshot, scope: str | None = None
) -> list[TrustedIp]:
    """Policy entries first, then run-time ones, of one scope (or all)."""
    stored = [runtime_entry(r) for r in await store.trusted_ips(scope)]
    return policy_entries(snapshot, scope) + stored


def matcher(trusted: list[TrustedIp]) -> Matcher:
    """A test "is this address in one of these entries" (None and junk: never)."""
    if not trusted:
        return lambda ip: False
    networks = CompiledIPSet.build([e.cidr for e in trusted])

    def test(ip: str | None) -> bool:
        parsed = parse_client_ip(ip) if ip else None
        return parsed is not None and networks.contains(parsed[1], parsed[0])

    return test


async def matcher_for(store: StateStore, snapshot: Snapshot, scope: str | None) -> Matcher:
    """Trusted test for the users of one email domain; users without one trust nothing."""
    if scope is None:
        return lambda ip: False
    return matcher(await entries(store, snapshot, scope))


def search(trusted: list[TrustedIp], text: str) -> list[TrustedIp]:
    """Entries whose network contains the address `text`, or whose network, description or
    author contains `text` (case-insensitive)."""
    text = text.strip()
    if not text:
        return trusted
    parsed = parse_client_ip(text)
    needle = text.lower()
    out = []
    for entry in trusted:
        if (parsed is not None and matcher([entry])(text)) or any(
            needle in (v or "").lower() for v in (entry.cidr, entry.description, entry.created_by)
        ):
            out.append(entry)
    return out


def validate(cidr: str, scope: str, description: str) -> tuple[str, str, str]:
    """The canonical (cidr, scope, description), or InvalidTrustedIp naming the field."""
    checked = []
    for name, check, value in (
        ("cidr", check_trusted_network, cidr),
        ("scope", check_scope, scope),
        ("description", check_description, description),
    ):
        try:
            checked.append(check(value))
        except ValueError as exc:
            raise InvalidTrustedIp(str(exc), name) from None
    return checked[0], checked[1], checked[2]


async def add(
    store: StateStore,
    snapshot: Snapshot,
    cidr: str,
    scope: str,
    description: str,
    by: str,
    at: float,
) -> TrustedIp:
    cidr, scope, description = validate(cidr, scope, description)
    if any(e.cidr == cidr for e in policy_entries(snapshot, scope)):
        raise InvalidTrustedIp(f"{cidr} is already trusted for {scope} by the policy", "cidr")
    try:
        record = await store.trusted_ip_add(cidr, scope, description, by, at)
    except StoreConflict:
        raise InvalidTrustedIp(f"{cidr} is already trusted for {scope}", "cidr") from None
    return runtime_entry(record)
