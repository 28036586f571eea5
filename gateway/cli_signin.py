"""`gateway unlock --ip IP` and `gateway user unlock USER`: lift sign-in bans, and say exactly
what was lifted and what still applies (docs/sign-in.md)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.services.store import StateStore


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    unlock = sub.add_parser(
        "unlock", parents=[common], help="lift a sign-in ban on a client address"
    )
    unlock.add_argument("--ip", required=True, help="the client address (IPv6: its /64)")


def _when(until: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until))


def _subject_label(subject: str) -> str:
    return subject.split(":", 1)[1]


async def unlock_user(store: StateStore, name: str, audit: Any, fields: dict[str, Any]) -> str:
    """Clear the name's failures and ban; the answer also names address bans still in force."""
    from gateway.services import accounts, regulation

    now = time.time()
    subject = regulation.user_subject(name)
    bans = await store.login_bans_active(now)
    failures = await store.login_failures_since(subject, 0)
    await accounts.unlock(store, name)
    audit.record("login.unlocked", flush=True, failures_cleared=failures, **fields)
    lifted = "sign-in ban lifted" if subject in bans else "no sign-in ban was in force"
    lines = [f"{name}: {lifted}; {failures} failed attempt(s) cleared"]
    ip_bans = {s: u for s, u in bans.items() if s.startswith("ip:")}
    if ip_bans:
        lines.append(
            "Still paused for every user signing in from these addresses (an address ban is "
            "separate from the user's):"
        )
        lines += [f"  {_subject_label(s)} until {_when(u)}" for s, u in sorted(ip_bans.items())]
        lines.append("Lift one with: gateway unlock --ip ADDRESS")
    return "\n".join(lines)


def cmd_unlock(args: argparse.Namespace) -> int:
    from gateway.cli import EXIT_OK, EXIT_USAGE, _with_store
    from gateway.services import accounts, regulation

    try:
        address = str(ipaddress.ip_address(args.ip.strip()))
    except ValueError:
        print(f"--ip: {args.ip!r} is not an IP address", file=sys.stderr)
        return EXIT_USAGE

    async def job(snapshot, store: StateStore, audit) -> int:  # type: ignore[no-untyped-def]
        now = time.time()
        subject = regulation.ip_subject(address)
        banned = subject in await store.login_bans_active(now)
        failures = await store.login_failures_since(subject, 0)
        await accounts.unlock_ip(store, address)
        audit.record(
            "login.unlocked",
            flush=True,
            principal=None,
            surface=None,
            decision=None,
            by="cli",
            address=_subject_label(subject),
            failures_cleared=failures,
        )
        lifted = "sign-in ban lifted" if banned else "no sign-in ban was in force"
        print(f"{_subject_label(subject)}: {lifted}; {failures} failed attempt(s) cleared")
        return EXIT_OK

    return _with_store(args, job)
