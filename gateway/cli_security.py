"""`gateway incidents`, `gateway logins` and `gateway trusted-ips` (docs/incidents.md, docs/cli.md).

The listing verbs only read: they create no state database, no secret key and no audit file
(a gateway that never ran has nothing to show, and says so). The verbs that change something
(resolve, acknowledge, add, remove) open the store and the audit trail like the other admin
verbs and are audited with `by: "cli"`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.policy.snapshot import Snapshot
from gateway.services.store.url import redact

EXIT_OK, EXIT_INVALID = 0, 1


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    # --config may come before or after the verb and its action: only the top-level parser
    # holds the default, so a nested parser's default cannot overwrite a value given earlier.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="the gateway.yaml to use (default config/gateway.yaml)",
    )
    incidents = sub.add_parser(
        "incidents", parents=[common], help="security incidents (several countries in a window)"
    )
    incidents.add_argument("--open", action="store_true", help="only open incidents")
    incidents.add_argument(
        "--state", choices=["open", "acknowledged", "resolved"], help="only incidents in this state"
    )
    incidents.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    actions = incidents.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", parents=[common], help="an incident and its sign-ins")
    show.add_argument("id", type=int)
    ack = actions.add_parser("acknowledge", parents=[common], help="someone is looking at it")
    ack.add_argument("id", type=int)
    resolve = actions.add_parser("resolve", parents=[common], help="close it, with a note")
    resolve.add_argument("id", type=int)
    resolve.add_argument("--note", required=True, help="why it is resolved (mandatory)")

    logins = sub.add_parser("logins", parents=[common], help="a user's last sign-ins")
    logins.add_argument("user")
    logins.add_argument("--limit", type=int, default=20, help="at most this many (20)")

    trusted = sub.add_parser(
        "trusted-ips", parents=[common], help="login IPs marked safe, per email domain"
    )
    trusted_sub = trusted.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = trusted_sub.add_parser("list", parents=[common], help="policy and run-time entries")
    listing.add_argument("--scope", help="one email domain")
    listing.add_argument("--search", help="an address inside the entry, or text")
    add = trusted_sub.add_parser("add", parents=[common], help="mark an address or network safe")
    add.add_argument("cidr", help="an address, or IPv4 /31../22 or /17, IPv6 /64../48")
    add.add_argument("--scope", required=True, help="the email domain it is trusted for")
    add.add_argument("--description", required=True, help="why it is safe (mandatory)")
    remove = trusted_sub.add_parser("remove", parents=[common], help="remove a run-time entry")
    remove.add_argument("id", type=int)


def utc(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


class _ReadOnlyAudit:
    """The audit trail of a listing verb: it never writes (and so never creates the file)."""

    def record(self, event: str, /, **fields: Any) -> None:
        raise RuntimeError(f"a read-only command tried to write {event!r}")


def _read_only(args: argparse.Namespace, job: Callable[..., Awaitable[int]]) -> int:
    """Run job(snapshot, security) on the existing state store, creating nothing."""
    from gateway.cli import _load_or_report
    from gateway.cli_readonly import store_if_present
    from gateway.services.security import SecurityOps

    result = _load_or_report(args.config)
    if result is None:
        return EXIT_INVALID
    snapshot = result.snapshot
    assert snapshot is not None

    async def go() -> int:
        store = await store_if_present(snapshot)
        if store is None:
            print(
                f"nothing recorded yet: no state database ({redact(snapshot.config.state)})",
                file=sys.stderr,
            )
            return EXIT_OK
        try:
            return await job(snapshot, SecurityOps(store, _ReadOnlyAudit(), lambda: snapshot))
        finally:
            await store.close()

    return asyncio.run(go())


def _writing(args: argparse.Namespace, job: Callable[..., Awaitable[int]]) -> int:
    from gateway.cli import _with_store
    from gateway.services.security import SecurityOps

    async def run(snapshot: Snapshot, store: Any, audit: Any) -> int:
        return await job(snapshot, SecurityOps(store, audit, lambda: snapshot))

    return _with_store(args, run)


def _refused(exc: Exception) -> int:
    print(f"refused: {getattr(exc, 'message', exc)}", file=sys.stderr)
    return EXIT_INVALID


# -- incidents ----------------------------------------------------------------------------------


def cmd_incidents(args: argparse.Namespace) -> int:
    from gateway.services.security import Actor, SecurityError

    if args.action in ("acknowledge", "resolve"):

        async def change(snapshot: Snapshot, security: Any) -> int:
            try:
                if args.action == "acknowledge":
                    incident = await security.acknowledge(args.id, Actor.cli())
                else:
                    incident = await security.resolve(args.id, args.note, Actor.cli())
            except SecurityError as exc:
                return _refused(exc)
            print(f"incident {incident.id} of {incident.user}: {incident.state}")
            return EXIT_OK

        return _writing(args, change)

    if args.action == "show":

        async def show(snapshot: Snapshot, security: Any) -> int:
            try:
                detail = await security.incident(args.id)
            except SecurityError as exc:
                return _refused(exc)
            i = detail.incident
            print(f"incident {i.id}: {i.user}, {i.state}")
            print(f"countries: {', '.join(i.countries)}")
            print(f"opened:    {utc(i.opened_at)}   last evidence: {utc(i.updated_at)}")
            if i.acknowledged_at is not None:
                print(f"acknowledged: {utc(i.acknowledged_at)} by {i.acknowledged_by}")
            if i.resolved_at is not None:
                print(f"resolved:  {utc(i.resolved_at)} by {i.resolved_by}: {i.note}")
            print(f"trusted IPs apply from: {detail.scope or '(no email domain)'}")
            print()
            print(_sign_in_table(detail.sign_ins))
            return EXIT_OK

        return _read_only(args, show)

    async def listing(snapshot: Snapshot, security: Any) -> int:
        state = "open" if args.open else args.state
        incidents = await security.list_incidents(state, limit=args.limit)
        if not incidents:
            print(f"no {state + ' ' if state else ''}incidents")
            return EXIT_OK
        rows = [["ID", "STATE", "USER", "COUNTRIES", "OPENED", "LAST EVIDENCE"]]
        rows += [
            [
                str(i.id),
                i.state,
                i.user,
                ",".join(i.countries),
                utc(i.opened_at),
                utc(i.updated_at),
            ]
            for i in incidents
        ]
        print(_table(rows))
        return EXIT_OK

    return _read_only(args, listing)


def _sign_in_table(views: list[Any]) -> str:
    if not views:
        return "no sign-ins recorded"
    rows = [["TIME", "RESULT", "IP", "COUNTRY", "TRUSTED", "GEOIP", "USER AGENT"]]
    for v in views:
        s = v.record
        rows.append(
            [
                utc(s.at),
                s.result,
                s.ip or "-",
                s.country or "-",
                "yes" if v.trusted else "no",
                s.geoip_source or "-",
                (s.user_agent or "-")[:60],
            ]
        )
    return _table(rows)


# -- logins -------------------------------------------------------------------------------------


def cmd_logins(args: argparse.Namespace) -> int:
    async def job(snapshot: Snapshot, security: Any) -> int:
        views = await security.sign_ins(args.user, limit=max(1, args.limit))
        if not views and args.user not in snapshot.users:
            print(f"no user {args.user!r} and no sign-ins recorded for that name", file=sys.stderr)
            return EXIT_INVALID
        print(_sign_in_table(views))
        return EXIT_OK

    return _read_only(args, job)


# -- trusted IPs --------------------------------------------------------------------------------


def cmd_trusted_ips(args: argparse.Namespace) -> int:
    from gateway.services.security import Actor, SecurityError

    if args.action == "list":

        async def listing(snapshot: Snapshot, security: Any) -> int:
            scope = args.scope.strip().lower().removeprefix("@") if args.scope else None
            entries = await security.trusted_ips(scope, args.search)
            if not entries:
                print("no trusted login IPs" + (f" for {scope}" if scope else ""))
                return EXIT_OK
            rows = [["ID", "SCOPE", "NETWORK", "DESCRIPTION", "SOURCE", "ADDED"]]
            for e in entries:
                added = f"{utc(e.created_at)} by {e.created_by}" if e.id is not None else "-"
                source = "run time" if e.id is not None else "policy (read-only)"
                rows.append([str(e.id or "-"), e.scope, e.cidr, e.description, source, added])
            print(_table(rows))
            return EXIT_OK

        return _read_only(args, listing)

    async def change(snapshot: Snapshot, security: Any) -> int:
        try:
            if args.action == "add":
                entry = await security.add_trusted_ip(
                    args.cidr, args.scope, args.description, Actor.cli()
                )
                print(f"added {entry.id}: {entry.cidr} trusted for {entry.scope}")
            else:
                entry = await security.remove_trusted_ip(args.id, Actor.cli())
                print(f"removed {entry.id}: {entry.cidr} for {entry.scope}")
        except SecurityError as exc:
            return _refused(exc)
        return EXIT_OK

    return _writing(args, change)


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "incidents": cmd_incidents,
    "logins": cmd_logins,
    "trusted-ips": cmd_trusted_ips,
}
