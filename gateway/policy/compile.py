"""Validated specs -> one frozen Snapshot. Everything a request needs is precomputed here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import urlsplit

from gateway.policy.ipset import CompiledIPSet
from gateway.policy.schema import AppSpec, GatewayConfig, PasswordPolicy, Policy
from gateway.policy.schema import Role as RoleSpec
from gateway.policy.snapshot import (
    SURFACES,
    AppRoute,
    Paths,
    Role,
    Rule,
    ServiceAccount,
    Snapshot,
    SurfacePolicy,
    User,
)
from gateway.services.passwords import PasswordRules, strictest

S = TypeVar("S")
T = TypeVar("T")


class CompileError(Exception):
    """A validated value that still cannot be compiled; `path` is its key path."""

    def __init__(self, where: str, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.where = where  # "config" (gateway.yaml) or "policy" (policies/*.yaml)
        self.path = path
        self.message = message


def _each(
    where: str, path: tuple[str | int, ...], items: Iterable[tuple[str, S]], build: Callable[..., T]
) -> dict[str, T]:
    """build(name, spec) for every item; a failure names the item's key path."""
    out = {}
    for name, spec in items:
        try:
            out[name] = build(name, spec)
        except Exception as exc:  # any failure: a value the validators let through
            raise CompileError(where, (*path, name), f"cannot be compiled: {exc}") from exc
    return out


def _ipset(networks: Iterable[str]) -> CompiledIPSet:
    return CompiledIPSet.build(list(networks))


def _route(name: str, spec: AppSpec, config: GatewayConfig) -> AppRoute:
    upstream = urlsplit(spec.upstream)
    prefix = spec.match.path.rstrip("/") or "/"
    return AppRoute(
        name=name,
        surface=spec.surface,
        host=spec.match.host.lower() if spec.match.host else None,
        prefix=prefix,
        upstream=f"{upstream.scheme}://{upstream.netloc}",
        upstream_path=upstream.path.rstrip("/"),
        strip_prefix=spec.strip_prefix,
        connect_timeout=spec.timeouts.connect or config.upstream_timeouts.connect,
        read_timeout=spec.timeouts.read or config.upstream_timeouts.read,
    )


def _route_tables(
    routes: Iterable[AppRoute],
) -> tuple[dict[str, tuple[AppRoute, ...]], tuple[AppRoute, ...]]:
    """Per host: that host's apps, longest prefix first, then the host-less ones likewise.

    An app bound to a host owns that host: its apps are tried before any host-less app, so a
    host-less app with a longer prefix (e.g. /api/) cannot capture requests meant for it.
    """
    routes = list(routes)
    hostless = [r for r in routes if r.host is None]

    def order(candidates: list[AppRoute]) -> tuple[AppRoute, ...]:
        return tuple(sorted(candidates, key=lambda r: (r.host is None, -len(r.prefix))))

    hosts = {r.host for r in routes if r.host is not None}
    by_host = {h: order([r for r in routes if r.host == h] + hostless) for h in hosts}
    return by_host, order(hostless)


def _rule_prefix(path: str, *, fold: bool) -> str:
    prefix = path.rstrip("/") or "/"
    return prefix.lower() if fold else prefix


def _role(name: str, spec: RoleSpec) -> Role:
    def rules(kind: str, items) -> tuple[Rule, ...]:  # type: ignore[no-untyped-def]
        return tuple(
            Rule(
                kind=kind,  # type: ignore[arg-type]
                index=i,
                methods=None if "*" in r.methods else frozenset(r.methods),
                # deny prefixes are compared lower-cased (decide.check_role)
                prefix=_rule_prefix(r.path, fold=kind == "deny"),
                folded=kind == "deny",
            )
            for i, r in enumerate(items)
        )

    return Role(name, rules("allow", spec.allow), rules("deny", spec.deny))


def _rules(policy: PasswordPolicy) -> PasswordRules:
    return PasswordRules(
        min_length=policy.min_length,
        min_strength=policy.min_strength,
        max_age_days=policy.max_age_days,
        history=policy.history,
    )


def _password_rules(policy: Policy, grants: Iterable[str]) -> PasswordRules:
    """The strictest of the global policy and the apps_policy of every granted app."""
    base = policy.password_policy
    candidates = [_rules(base)]
    for app in grants:
        override = policy.apps_policy.get(app)
        if override is None:
            continue
        values = override.password_policy.model_dump(exclude_none=True)
        candidates.append(_rules(base.model_copy(update=values)))
    return strictest(candidates)


def _expiry(day: dt.date | None) -> float | None:
    if day is None:
        return None
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return end.timestamp()


def compile_snapshot(
    config: GatewayConfig,
    policy: Policy,
    paths: Paths,
    *,
    generation: int,
    fingerprint: str,
    warnings: Iterable[str] = (),
) -> Snapshot:
    routes = list(
        _each(
            "config", ("apps",), config.apps.items(), lambda n, spec: _route(n, spec, config)
        ).values()
    )
    by_host, default = _route_tables(routes)
    surfaces = _each(
        "policy",
        ("allowlists",),
        ((name, getattr(policy.allowlists, name)) for name in SURFACES),
        lambda name, spec: SurfacePolicy(
            name=name,
            allowlist_enabled=spec.enabled,
            allowlist=_ipset(e.ip for e in spec.entries),
            entries=spec.entries,
            monitor=getattr(policy.protection.mode, name) == "monitor",
        ),
    )
    enforce = policy.two_factor.enforce
    users = _each(
        "policy",
        ("users",),
        policy.users.items(),
        lambda name, spec: User(
            name=name,
            email=spec.email,
            password_hash=spec.password_hash,
            admin=spec.admin,
            grants=MappingProxyType(dict(spec.grants)),
            requires_2fa=enforce == "all" or (enforce == "admins" and spec.admin),
            password_rules=_password_rules(policy, spec.grants),
        ),
    )
    accounts = _each(
        "policy",
        ("service_accounts",),
        policy.service_accounts.items(),
        lambda name, spec: ServiceAccount(
            name=name,
            key_digest=bytes.fromhex(spec.key_sha256),
            grants=MappingProxyType(dict(spec.grants)),
            allow=_ipset(spec.allow) if spec.allow is not None else None,
            expires_at=_expiry(spec.expires),
        ),
    )
    roles = _each("policy", ("roles",), policy.roles.items(), _role)
    return Snapshot(
        generation=generation,
        fingerprint=fingerprint,
        config=config,
        policy=policy,
        paths=paths,
        prefix=config.prefix,
        routes_by_host=MappingProxyType(by_host),
        default_routes=default,
        apps=MappingProxyType({r.name: r for r in routes}),
        protection_enabled=policy.protection.enabled,
        surfaces=MappingProxyType(surfaces),
        trusted_proxies=_ipset(config.trusted_proxies),
        ops_allow=_ipset(config.ops_allow),
        users=MappingProxyType(users),
        accounts_by_digest=MappingProxyType({a.key_digest: a for a in accounts.values()}),
        accounts=MappingProxyType(accounts),
        roles=MappingProxyType(roles),
        warnings=tuple(warnings),
    )
