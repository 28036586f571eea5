"""Pure access decisions with reason codes, shared by the request path and `gateway explain`.

The codes are the fixed set of docs/http.md; the same code appears in the response, the
audit record and the explanation.
"""

from __future__ import annotations

import hmac
from typing import Final, NamedTuple
from urllib.parse import unquote_plus

from gateway.policy.snapshot import AppRoute, Role, ServiceAccount, Snapshot, SurfacePolicy
from gateway.web.paths import path_has_prefix

IP_NOT_ALLOWED: Final = "ip_not_allowed"
UNAUTHENTICATED: Final = "unauthenticated"
FORBIDDEN: Final = "forbidden"
BAD_REQUEST: Final = "bad_request"
NOT_FOUND: Final = "not_found"
UPSTREAM_UNAVAILABLE: Final = "upstream_unavailable"
UPSTREAM_TIMEOUT: Final = "upstream_timeout"


# A NamedTuple, not a frozen dataclass: as immutable, and built in half the time (several per
# request; a frozen dataclass sets each field through object.__setattr__).
class Decision(NamedTuple):
    allowed: bool
    code: str | None = None  # the reason code of a denial (or of a monitored would-be denial)
    reason: str = ""  # one sentence for people: audit `reasons`, `gateway explain`
    monitored: bool = False  # denied by policy but let through because the surface monitors

    @property
    def label(self) -> str:
        return "allow" if self.allowed else f"deny:{self.code}"


def allow(reason: str) -> Decision:
    return Decision(True, None, reason)


def deny(code: str, reason: str) -> Decision:
    return Decision(False, code, reason)


def match_route(snapshot: Snapshot, host: str | None, path: str) -> AppRoute | None:
    """Host (case-insensitive, no port) + longest path prefix; tables are ordered at compile."""
    routes = snapshot.routes_by_host.get(host, snapshot.default_routes) if host else None
    for route in routes if routes is not None else snapshot.default_routes:
        if path_has_prefix(path, route.prefix):
            return route
    return None


def check_allowlist(
    surface: SurfacePolicy, protection_enabled: bool, ip: tuple[int, int] | None
) -> Decision:
    if not protection_enabled:
        return allow("protection is disabled: allowlists are not applied")
    if not surface.allowlist_enabled:
        return allow(f"the {surface.name} allowlist is disabled")
    if ip is not None:
        version, value = ip
        index = surface.allowlist.which(value, version)
        if index is not None:
            entry = surface.entries[index]
            label = f" ({entry.description})" if entry.description else ""
            return allow(f"allowlists.{surface.name}.entries[{index}] {entry.ip}{label} matches")
    reason = f"the client IP is in no entry of allowlists.{surface.name}"
    if surface.monitor:
        return Decision(True, IP_NOT_ALLOWED, reason + " (monitor mode: let through)", True)
    return deny(IP_NOT_ALLOWED, reason)


def find_account(snapshot: Snapshot, digest: bytes) -> ServiceAccount | None:
    """Look the key's sha256 up, then compare in constant time (defence in depth)."""
    account = snapshot.accounts_by_digest.get(digest)
    if account is not None and hmac.compare_digest(account.key_digest, digest):
        return account
    return None


def check_account(account: ServiceAccount, ip: tuple[int, int] | None, now: float) -> Decision:
    if account.expires_at is not None and now >= account.expires_at:
        return deny(UNAUTHENTICATED, f"service account {account.name!r} has expired")
    if account.allow is not None and (ip is None or not account.allow.contains(ip[1], ip[0])):
        return deny(
            IP_NOT_ALLOWED,
            f"the client IP is not in service_accounts.{account.name}.allow",
        )
    return allow(f"API key of service account {account.name!r}")


def authorize(
    snapshot: Snapshot,
    grants: dict[str, str] | object,
    app: AppRoute,
    method: str,
    path: str,
    overrides: tuple[str, ...] = (),
) -> tuple[Decision, str | None]:
    """The grant on the app names a role; the role's rules decide. -> (decision, role)

    `overrides` are the methods a backend may read instead of `method` (method_overrides):
    each must be allowed as well.
    """
    role_name = grants.get(app.name)  # type: ignore[attr-defined]
    if role_name is None:
        return deny(FORBIDDEN, f"no grant on app {app.name!r}"), None
    role = snapshot.roles.get(role_name)
    if role is None:  # validation refuses this; fail closed all the same
        return deny(FORBIDDEN, f"role {role_name!r} is not defined"), role_name
    relative = app.relative(path)
    verdict = check_role(role, method, relative)
    for override in overrides:
        if not verdict.allowed:
            break
        if override != method:
            verdict = check_role(role, override, relative, overridden=True)
    return verdict, role_name


def check_role(role: Role, method: str, path: str, *, overridden: bool = False) -> Decision:
    """Deny rules win over allow rules; nothing matched is denied.

    Deny rules match the path case-insensitively (their prefixes are lower-cased at compile).
    """
    shown = f"{method} (method override)" if overridden else method
    folded = None
    for rule in role.deny:
        if rule.methods is None or method in rule.methods:
            if folded is None:
                folded = path.lower()
            if path_has_prefix(folded if rule.folded else path, rule.prefix):
                return deny(FORBIDDEN, f"{rule.describe(role.name)} denies {shown} {path}")
    for rule in role.allow:
        if (rule.methods is None or method in rule.methods) and path_has_prefix(path, rule.prefix):
            return allow(f"{rule.describe(role.name)} allows {shown} {path}")
    return deny(FORBIDDEN, f"no rule of role {role.name!r} allows {shown} {path}")


METHOD_OVERRIDE_HEADERS: Final = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


def method_overrides(header_values: list[str], query: str) -> tuple[str, ...]:
    """The methods a backend framework may act on instead of the request's own.

    `header_values`: every value of the METHOD_OVERRIDE_HEADERS (comma lists split); `query`: the
    raw query string, read for `_method=` (Rails, Laravel, Symfony, method-override for Express)
    in any case and percent-encoding of the name. Upper-cased, as frameworks compare them.
    """
    found: list[str] = []
    for value in header_values:
        found.extend(part.strip().upper() for part in value.split(","))
    if query:
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            if unquote_plus(name).strip().lower() == "_method":
                found.append(unquote_plus(value).strip().upper())
    return tuple(dict.fromkeys(m for m in found if m))
