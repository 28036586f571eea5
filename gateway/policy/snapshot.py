"""The compiled policy: frozen, complete, read once per request and never changed.

A reload builds a whole new Snapshot and swaps one reference (see source.py); a request that
started on the old one finishes on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.policy.ipset import CompiledIPSet
from gateway.policy.schema import AllowEntry, GatewayConfig, Policy
from gateway.services.passwords import PasswordRules

SurfaceName = Literal["dashboard", "api"]
SURFACES: tuple[SurfaceName, ...] = ("dashboard", "api")


@dataclass(frozen=True, slots=True)
class AppRoute:
    name: str
    surface: SurfaceName
    host: str | None
    prefix: str  # no trailing slash, except the root "/"
    upstream: str  # scheme://host:port, no path
    upstream_path: str  # the upstream URL's path, no trailing slash ("" for none)
    strip_prefix: bool
    connect_timeout: float
    read_timeout: float

    def upstream_target(self, path: str) -> str:
        """The path sent upstream for a normalised request path matched to this app."""
        if self.strip_prefix and self.prefix != "/":
            path = path[len(self.prefix) :] or "/"
            if not path.startswith("/"):
                path = "/" + path
        return self.upstream_path + path

    def relative(self, path: str) -> str:
        """The request path relative to the app's prefix (what role rules are written against)."""
        if self.prefix == "/":
            return path
        rest = path[len(self.prefix) :]
        return rest if rest.startswith("/") else "/" + rest


@dataclass(frozen=True, slots=True)
class SurfacePolicy:
    name: SurfaceName
    allowlist_enabled: bool
    allowlist: CompiledIPSet
    entries: tuple[AllowEntry, ...]
    monitor: bool  # decide and audit, never block


@dataclass(frozen=True, slots=True)
class Rule:
    kind: Literal["allow", "deny"]
    index: int
    methods: frozenset[str] | None  # None = any method
    prefix: str
    # deny rules compare lower-cased: a backend that routes case-insensitively must not serve
    # /SETTINGS/ to a role denied /settings/ (allow rules stay exact: fail closed)
    folded: bool = False

    def describe(self, role: str) -> str:
        return f"roles.{role}.{self.kind}[{self.index}]"


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    allow: tuple[Rule, ...]
    deny: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class User:
    name: str
    email: str | None
    password_hash: str
    admin: bool
    grants: Mapping[str, str]  # app -> role
    requires_2fa: bool
    password_rules: PasswordRules


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    name: str
    key_digest: bytes  # sha256 of the key
    grants: Mapping[str, str]
    allow: CompiledIPSet | None
    expires_at: float | None  # UNIX time of the end of the `expires` day (UTC)


@dataclass(frozen=True, slots=True)
class Paths:
    config_file: Path
    config_dir: Path
    policies_dir: Path
    audit_file: Path
    secret_key_file: Path | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    fingerprint: str  # sha256 over the files' bytes: equal files, equal fingerprint
    config: GatewayConfig
    policy: Policy
    paths: Paths
    prefix: str
    routes_by_host: Mapping[str, tuple[AppRoute, ...]]
    default_routes: tuple[AppRoute, ...]
    apps: Mapping[str, AppRoute]
    protection_enabled: bool
    surfaces: Mapping[SurfaceName, SurfacePolicy]
    trusted_proxies: CompiledIPSet
    ops_allow: CompiledIPSet
    users: Mapping[str, User]
    accounts_by_digest: Mapping[bytes, ServiceAccount]
    accounts: Mapping[str, ServiceAccount]
    roles: Mapping[str, Role]
    warnings: tuple[str, ...]
