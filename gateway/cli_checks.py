"""`gateway check`: validate everything and say what an admin should know before saving.

Exit 0 valid, 1 invalid, 3 valid with warnings (e.g. the given --client-ip would be locked out).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gateway.policy import decide
from gateway.policy.advice import production_warnings
from gateway.policy.ipset import parse_client_ip
from gateway.policy.snapshot import SURFACES, Snapshot
from gateway.policy.source import load
from gateway.services.notify.checks import notification_warnings
from gateway.services.store.url import redact


def lockout_warnings(snapshot: Snapshot, client_ip: str) -> list[str]:
    addr = parse_client_ip(client_ip)
    if addr is None:
        return [f"--client-ip {client_ip!r} is not an IP address"]
    out = []
    for name in SURFACES:
        surface = snapshot.surfaces[name]
        verdict = decide.check_allowlist(surface, snapshot.protection_enabled, addr)
        if not verdict.allowed:
            out.append(f"{client_ip} would be locked out of the {name} surface: {verdict.reason}")
        elif verdict.monitored:
            out.append(
                f"{client_ip} is in no allowlists.{name} entry; the surface is in monitor "
                "mode now, so switching it to enforce would lock this IP out"
            )
    return out


async def two_factor_warnings(snapshot: Snapshot) -> list[str]:
    from gateway.cli_readonly import state_store_exists, store_if_present
    from gateway.services.readiness import two_factor_warning

    if snapshot.policy.two_factor.enforce == "none":
        return []
    if not state_store_exists(snapshot):
        # No state yet, so nobody has enrolled; `check` never creates the database.
        warning = await two_factor_warning(snapshot, None)
        return [warning] if warning else []
    try:
        store = await store_if_present(snapshot)
        assert store is not None
    except Exception as exc:  # reported, not fatal for a validity check
        return [
            f"state store {redact(snapshot.config.state)!r} not reachable ({exc}); "
            "could not check whether an admin has 2FA"
        ]
    try:
        warning = await two_factor_warning(snapshot, store)
    finally:
        await store.close()
    return [warning] if warning else []


def run_checks(config: Path, client_ip: str | None) -> int:
    if not config.exists():
        print(f"{config}: no such file; pass --config PATH", file=sys.stderr)
        return 1
    result = load(config)
    for problem in result.report.problems:
        print(f"{problem.severity}: {problem}")
    if result.snapshot is None:
        print(f"invalid: {len(result.report.errors)} error(s) in {', '.join(result.files)}")
        return 1
    warnings = [p for p in result.report.warnings]
    extra = production_warnings(result.snapshot)
    extra += notification_warnings(result.snapshot)
    extra += asyncio.run(two_factor_warnings(result.snapshot))
    if client_ip:
        extra += lockout_warnings(result.snapshot, client_ip)
    for text in extra:
        print(f"warning: {text}")
    count = len(warnings) + len(extra)
    summary = (
        f"valid: {len(result.files)} file(s), {len(result.snapshot.apps)} app(s), "
        f"{len(result.snapshot.users)} user(s), "
        f"{len(result.snapshot.accounts)} service account(s)"
    )
    print(summary + (f", {count} warning(s)" if count else ""))
    return 3 if count else 0
