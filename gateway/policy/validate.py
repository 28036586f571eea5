"""Validate parsed YAML against the schema and across references, collecting every problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.policy.errors import ConfigReport, KeyPath, SourceFile
from gateway.policy.schema import GatewayConfig, Policy

# Plain-words hints for fields whose pattern alone would not tell an admin what to write.
_PATTERN_HINTS = {
    "password_hash": "expected an argon2id hash as printed by `gateway hash-password`",
    "key_sha256": "expected 64 hex characters as printed by `gateway apikey create`",
    "upstream": "expected an http:// or https:// URL like http://127.0.0.1:3000",
    "prefix": "expected one path segment like /_gateway",
    "cookie_name": "expected letters, digits, '_' or '-'",
}


# Fields whose wrong values could be secrets (a plain password where its hash belongs).
_NEVER_ECHOED = frozenset({"password_hash", "key_sha256"})


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    """Walk the schema along loc to the model that owns the unknown key."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
            continue
        args = getattr(current, "__args__", ())
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:
            return None
        current = models[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return None


def _message(model: type[BaseModel], error: dict[str, Any]) -> str:
    kind, loc, value = error["type"], error["loc"], error.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        field = next((p for p in reversed(loc) if isinstance(p, str) and p != "[key]"), "")
        if loc and loc[-1] == "[key]":
            return f"{_short(value)} is not a valid name (use letters, digits, '.', '_', '@', '-')"
        hint = _PATTERN_HINTS.get(field, str(error["msg"]).lower())
        if field in _NEVER_ECHOED:
            # Whatever is there may be a real password or key pasted in the wrong place: the
            # message goes to logs, the audit trail and readyz, so it never repeats the value.
            return f"{hint} (the value is not shown)"
        return f"{hint}, got {_short(value)}"
    return f"{str(error['msg']).lower()}, got {_short(value)}"


def _loc(error: dict[str, Any]) -> KeyPath:
    return tuple(p for p in error["loc"] if p != "[key]")


def validate_config(source: SourceFile, report: ConfigReport) -> GatewayConfig | None:
    if not isinstance(source.data, dict):
        report.error(source, (), "expected a mapping of settings at the top level")
        return None
    try:
        config = GatewayConfig.model_validate(source.data)
    except ValidationError as exc:
        for error in exc.errors():
            report.error(source, _loc(error), _message(GatewayConfig, error))
        return None
    _check_apps(config, source, report)
    return config


def _check_apps(config: GatewayConfig, source: SourceFile, report: ConfigReport) -> None:
    seen: dict[tuple[str | None, str], str] = {}
    for name, app in config.apps.items():
        host = app.match.host.lower() if app.match.host else None
        where = (host, app.match.path.rstrip("/") or "/")
        if where in seen:
            report.error(
                source,
                ("apps", name, "match"),
                f"same host and path as app {seen[where]!r}; one of them would never be reached",
            )
        seen[where] = name
        if app.match.path.startswith(config.prefix + "/") or app.match.path == config.prefix:
            report.error(
                source, ("apps", name, "match", "path"), f"{config.prefix} is the gateway's own"
            )


def merge_policy_files(
    sources: Sequence[SourceFile], report: ConfigReport
) -> tuple[dict[str, object], dict[str, SourceFile]]:
    """Top-level keys from every file; a key defined in two files is an error."""
    merged: dict[str, object] = {}
    owner: dict[str, SourceFile] = {}
    for source in sources:
        if source.data in (None, {}):
            continue
        if not isinstance(source.data, dict):
            report.error(source, (), "expected a mapping of policy keys at the top level")
            continue
        for key, value in source.data.items():
            if key in owner:
                first = owner[key]
                report.error(
                    source,
                    (key,),
                    f"already defined in {first.name}:{first.line_of((key,))}; "
                    "one top-level key may appear in only one file",
                )
                continue
            merged[key] = value
            owner[key] = source
    return merged, owner


def validate_policy(
    sources: Sequence[SourceFile],
    config: GatewayConfig | None,
    report: ConfigReport,
    *,
    check_references: bool = True,
) -> Policy | None:
    merged, owner = merge_policy_files(sources, report)
    fallback = sources[0] if sources else SourceFile("policies/", {}, {})
    try:
        policy = Policy.model_validate(merged)
    except ValidationError as exc:
        for error in exc.errors():
            loc = _loc(error)
            report.error(owner.get(str(loc[0]), fallback), loc, _message(Policy, error))
        return None
    _check_names(policy, owner, fallback, report)
    if config is not None and check_references:
        _check_references(policy, config, owner, fallback, report)
    return policy


def _check_names(
    policy: Policy, owner: dict[str, SourceFile], fallback: SourceFile, report: ConfigReport
) -> None:
    """One name, one principal: `alice` and `Alice` would be two users to the gateway but one
    to most backends (and to sign-in regulation); a service account named like a user would
    reach backends with the same `X-Gateway-User` and `sub`."""
    seen: dict[str, tuple[str, str]] = {}
    for kind, names in (("users", policy.users), ("service_accounts", policy.service_accounts)):
        for name in names:
            folded = name.casefold()
            if folded in seen:
                other_kind, other = seen[folded]
                what = "user" if other_kind == "users" else "service account"
                report.error(
                    owner.get(kind, fallback),
                    (kind, name),
                    f"the same name as {what} {other!r} (names are compared without case; "
                    "backends would see one identity)",
                )
                continue
            seen[folded] = (kind, name)


def _check_references(
    policy: Policy,
    config: GatewayConfig,
    owner: dict[str, SourceFile],
    fallback: SourceFile,
    report: ConfigReport,
) -> None:
    def src(key: str) -> SourceFile:
        return owner.get(key, fallback)

    def check_grants(kind: str, name: str, grants: dict[str, str], surface: str) -> None:
        for app, role in grants.items():
            path = (kind, name, "grants", app)
            if app not in config.apps:
                known = ", ".join(sorted(config.apps)) or "none defined"
                report.error(src(kind), path, f"no app {app!r} in gateway.yaml (apps: {known})")
                continue
            if role not in policy.roles:
                known = ", ".join(sorted(policy.roles)) or "none defined"
                report.error(src(kind), path, f"no role {role!r} (roles: {known})")
            app_surface = config.apps[app].surface
            if app_surface != surface and kind == "service_accounts":
                report.error(
                    src(kind),
                    path,
                    f"app {app!r} is on the {app_surface} surface; "
                    "service accounts sign in only on the api surface",
                )
            elif app_surface != surface:
                report.warning(
                    src(kind),
                    path,
                    f"app {app!r} is on the {app_surface} surface, where passwords never work; "
                    "grant it to a service account instead",
                )

    for name, user in policy.users.items():
        check_grants("users", name, user.grants, "dashboard")
    seen_keys: dict[str, str] = {}
    for name, account in policy.service_accounts.items():
        check_grants("service_accounts", name, account.grants, "api")
        digest = account.key_sha256.lower()
        if digest in seen_keys:
            report.error(
                src("service_accounts"),
                ("service_accounts", name, "key_sha256"),
                f"the same key as service account {seen_keys[digest]!r}; create a key per account",
            )
        seen_keys[digest] = name
    for app in policy.apps_policy:
        if app not in config.apps:
            report.error(
                src("apps_policy"), ("apps_policy", app), f"no app {app!r} in gateway.yaml"
            )
