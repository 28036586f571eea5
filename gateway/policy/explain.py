"""`gateway explain`: the decision for a surface, IP, principal, method and path, step by step,
made by the same pure functions the request path uses (decide.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.policy import decide
from gateway.policy.ipset import parse_client_ip
from gateway.policy.snapshot import Snapshot
from gateway.web.paths import AmbiguousPath, normalize_path


@dataclass
class Explanation:
    steps: list[tuple[str, str]] = field(default_factory=list)  # (step, what happened)
    decision: str = "allow"

    def add(self, step: str, text: str) -> None:
        self.steps.append((step, text))

    def stop(self, code: str, step: str, text: str) -> Explanation:
        self.add(step, text)
        self.decision = f"deny:{code}"
        return self

    def render(self) -> str:
        width = max(len(s) for s, _ in self.steps) if self.steps else 0
        lines = [
            f"{i}. {step.ljust(width)}  {text}" for i, (step, text) in enumerate(self.steps, 1)
        ]
        return "\n".join([*lines, f"=> {self.decision}"])


def explain(
    snapshot: Snapshot,
    *,
    surface: str | None = None,
    ip: str,
    method: str,
    path: str,
    user: str | None = None,
    account: str | None = None,
    host: str | None = None,
    now: float | None = None,
) -> Explanation:
    out = Explanation()
    now = time.time() if now is None else now
    addr = parse_client_ip(ip)
    if addr is None:
        return out.stop(decide.BAD_REQUEST, "client ip", f"{ip!r} is not an IP address")
    out.add("client ip", f"{ip} (as the gateway would see it after trusted_proxies)")
    try:
        normal = normalize_path(path.split("?", 1)[0])
    except AmbiguousPath as exc:
        return out.stop(decide.BAD_REQUEST, "path", f"{path!r} is ambiguous ({exc.reason}): 400")
    out.add("path", normal if normal == path else f"{path} normalised to {normal}")
    route = decide.match_route(snapshot, host.lower() if host else None, normal)
    if route is None:
        return out.stop(decide.NOT_FOUND, "app", "no app matches this host and path: 404")
    out.add(
        "app",
        f"{route.name} (prefix {route.prefix}, surface {route.surface}, "
        f"upstream {route.upstream}{route.upstream_target(normal)})",
    )
    if surface is not None and route.surface != surface:
        out.add("surface", f"note: the path belongs to the {route.surface} surface, not {surface}")
    verdict = decide.check_allowlist(
        snapshot.surfaces[route.surface],
        snapshot.protection_enabled,
        addr,  # type: ignore[index]
    )
    if not verdict.allowed:
        return out.stop(verdict.code or decide.IP_NOT_ALLOWED, "allowlist", verdict.reason)
    out.add("allowlist", verdict.reason)
    method = method.upper()
    if route.surface == "api":
        if user is not None:
            return out.stop(
                decide.UNAUTHENTICATED,
                "authenticate",
                "users' passwords never work on the api surface; use --account",
            )
        acct = snapshot.accounts.get(account or "")
        if acct is None:
            return out.stop(
                decide.UNAUTHENTICATED,
                "authenticate",
                f"no service account {account!r}: 401"
                if account
                else "no --account given: an API request without a key gets 401",
            )
        verdict = decide.check_account(acct, addr, now)
        if not verdict.allowed:
            return out.stop(verdict.code or decide.UNAUTHENTICATED, "authenticate", verdict.reason)
        out.add("authenticate", verdict.reason)
        grants = acct.grants
    else:
        person = snapshot.users.get(user or "")
        if person is None:
            return out.stop(
                decide.UNAUTHENTICATED,
                "authenticate",
                f"no user {user!r}: sent to sign in"
                if user
                else "no --user given: a browser without a session is sent to sign in",
            )
        factor = "password + TOTP" if person.requires_2fa else "password"
        out.add("authenticate", f"user {person.name!r} signed in with {factor}")
        grants = person.grants
    verdict, role = decide.authorize(snapshot, grants, route, method, normal)
    step = f"authorize ({role})" if role else "authorize"
    if not verdict.allowed:
        return out.stop(verdict.code or decide.FORBIDDEN, step, verdict.reason)
    out.add(step, verdict.reason)
    out.add("forward", f"{method} {route.upstream}{route.upstream_target(normal)}")
    return out
