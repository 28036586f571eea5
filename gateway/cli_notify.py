"""`gateway notify test`, `gateway outbox` and `gateway retention run` (docs/notifications.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

from gateway.services.notify.messages import utc

EXIT_OK, EXIT_INVALID = 0, 1
TEST_WAIT = 60.0  # seconds `notify test` waits for the mail to be handed over


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    notify = sub.add_parser("notify", parents=[common], help="notifications")
    notify_sub = notify.add_subparsers(dest="action", required=True, metavar="ACTION")
    test = notify_sub.add_parser("test", parents=[common], help="send a test mail now")
    test.add_argument("--to", help="the address to send it to (default: every gateway admin)")
    sub.add_parser("outbox", parents=[common], help="pending and given-up notifications")
    retention = sub.add_parser("retention", parents=[common], help="data retention")
    retention_sub = retention.add_subparsers(dest="action", required=True, metavar="ACTION")
    retention_sub.add_parser("run", parents=[common], help="purge now what retention says is old")


def cmd_notify(args: argparse.Namespace) -> int:
    from gateway.cli import _with_store
    from gateway.services.notify import Notifier, Sender, admin_emails

    async def job(snapshot, store, audit) -> int:  # type: ignore[no-untyped-def]
        if snapshot.config.smtp is None:
            print("no smtp: in the config; nothing can be sent", file=sys.stderr)
            return EXIT_INVALID
        recipients = [args.to] if args.to else admin_emails(snapshot)
        if not recipients:
            print("no gateway admin has an email; pass --to EMAIL", file=sys.stderr)
            return EXIT_INVALID
        new_id = await Notifier(store).test(snapshot, recipients)
        assert new_id is not None
        audit.record("notification.test", flush=True, recipients=recipients, by="cli")
        sender = Sender(store, audit, lambda: snapshot)
        deadline = time.monotonic() + TEST_WAIT
        while time.monotonic() < deadline:
            await sender.send_one()  # may send other due notices too: they are due anyway
            for state in ("sent", "failed"):
                for row in await store.outbox_list(state, 200):
                    if row.id == new_id:
                        detail = f" ({row.last_error})" if row.last_error else ""
                        print(f"{state}: {row.message_id} to {', '.join(row.recipients)}{detail}")
                        return EXIT_OK if state == "sent" else EXIT_INVALID
            if sender.failing_since is not None:
                print(f"not sent yet: {sender.last_error}; retrying", file=sys.stderr)
                await asyncio.sleep(2)
            else:
                await asyncio.sleep(0.2)
        print(
            "not sent within a minute: the notice stays in the outbox (`gateway outbox`)",
            file=sys.stderr,
        )
        return EXIT_INVALID

    return _with_store(args, job)


def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway.cli import _with_store

    async def job(snapshot, store, audit) -> int:  # type: ignore[no-untyped-def]
        await audit.close()  # only reads
        stats = await store.outbox_stats()
        oldest = (
            "" if stats.oldest_pending_at is None else f", oldest {utc(stats.oldest_pending_at)}"
        )
        print(f"pending: {stats.pending}{oldest}; given up: {stats.failed}; sent: {stats.sent}")
        if stats.last_error:
            print(f"last error: {stats.last_error}")
        for state in ("pending", "failed"):
            for row in await store.outbox_list(state, 100):
                due = f"due {utc(row.not_before)}" if state == "pending" else "given up"
                error = f"  [{row.last_error}]" if row.last_error else ""
                print(
                    f"{row.id:>6}  {state:<7}  {row.kind:<16}  {utc(row.created_at)}  {due}  "
                    f"attempts {row.attempts}  to {', '.join(row.recipients)}{error}"
                )
        return EXIT_OK

    return _with_store(args, job)


def cmd_retention(args: argparse.Namespace) -> int:
    from gateway.cli import _with_store
    from gateway.services.retention import run_retention

    async def job(snapshot, store, audit) -> int:  # type: ignore[no-untyped-def]
        report = await run_retention(snapshot, store, audit)
        rules = snapshot.policy.retention
        print(
            f"login history: {report.login_history} row(s) older than "
            f"{rules.login_history_days} days"
        )
        print(f"notifications: {report.outbox} finished outbox row(s) deleted")
        print(f"incidents: {report.incidents} closed over {rules.incidents_days} days ago")
        if report.audit_files:
            first, last = report.audit_range or ("", "")
            print(
                f"audit files: {len(report.audit_files)} removed ({first} to {last}), "
                f"checkpoint for {len(report.checkpoint)} chain(s) in retention.purged"
            )
        else:
            print(f"audit files: none older than {rules.audit_days} days")
        return EXIT_OK

    return _with_store(args, job)


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "notify": cmd_notify,
    "outbox": cmd_outbox,
    "retention": cmd_retention,
}
