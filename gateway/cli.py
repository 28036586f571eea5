"""The command line (docs/cli.md): parse, call, print. Exit 2 is a usage error."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson

from gateway import cli_schema, cli_secrets, cli_security, cli_signin
from gateway.cli_notify import VERBS as NOTIFY_VERBS
from gateway.cli_notify import add_parsers as add_notify_parsers
from gateway.policy.source import LoadResult, load

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_WARNINGS = 0, 1, 2, 3
DEFAULT_CONFIG = "config/gateway.yaml"


def _ip_argument(text: str) -> str:
    """An IP address, else a usage error (exit 2) naming the value."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=Path(DEFAULT_CONFIG),
        help=f"the gateway.yaml to use (default {DEFAULT_CONFIG})",
    )
    p = argparse.ArgumentParser(prog="gateway", description="Access gateway", parents=[common])
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = sub.add_parser("run", parents=[common], help="serve")
    run.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    run.add_argument("--port", type=int, default=None, help="override listen.port")

    check = sub.add_parser("check", parents=[common], help="validate config and policies")
    check.add_argument("--client-ip", help="warn when this IP would be locked out of a surface")

    ex = sub.add_parser(
        "explain", parents=[common], help="the decision for a request, step by step"
    )
    ex.add_argument(
        "--surface",
        choices=["dashboard", "api"],
        help="default: the surface of the app the path matches",
    )
    ex.add_argument("--ip", required=True, type=_ip_argument)
    who = ex.add_mutually_exclusive_group()
    who.add_argument("--user")
    who.add_argument("--account")
    ex.add_argument("--host", help="the Host header (apps matched by host)")
    ex.add_argument("method")
    ex.add_argument("path")

    cli_secrets.add_parsers(sub, common)

    user = sub.add_parser("user", parents=[common], help="act on a user's account")
    user_sub = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in [
        ("reset-2fa", "remove the authenticator; enroll again at next sign-in"),
        ("unlock", "lift a sign-in ban"),
        ("revoke-sessions", "sign the user out everywhere"),
        ("expire-password", "force a password change at next sign-in"),
    ]:
        a = user_sub.add_parser(action, parents=[common], help=text)
        a.add_argument("user")

    cli_signin.add_parser(sub, common)

    audit = sub.add_parser("audit", parents=[common], help="the audit trail")
    audit_sub = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", parents=[common], help="check the hash chains")
    verify.add_argument("path", nargs="*", type=Path, help="default: rotated files, then current")
    tail = audit_sub.add_parser("tail", parents=[common], help="the last records")
    tail.add_argument("path", nargs="?", type=Path)
    tail.add_argument("-n", type=int, default=20)
    tail.add_argument("-f", "--follow", action="store_true")

    keys = sub.add_parser("keys", parents=[common], help="the identity assertion's signing keys")
    keys_sub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    keys_sub.add_parser("list", parents=[common], help="the keys and their state")
    rotate = keys_sub.add_parser("rotate", parents=[common], help="start signing with a new key")
    rotate.add_argument(
        "--immediately",
        action="store_true",
        help="switch now instead of after the grace period (suspected key compromise)",
    )

    cli_schema.register(sub, common)
    add_notify_parsers(sub, common)  # notify test, outbox, retention run
    cli_security.add_parsers(sub, common)  # incidents, logins, trusted-ips

    demo = sub.add_parser("demo", parents=[common], help="gateway + demo dashboard and API")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument(
        "--forward-auth",
        action="store_true",
        help="nginx in front (if installed) asks the gateway for each decision (auth_request)",
    )
    return p


def _load_or_report(config: Path) -> LoadResult | None:
    if not config.exists():
        print(f"{config}: no such file; pass --config PATH", file=sys.stderr)
        return None
    result = load(config)
    if result.snapshot is None:
        for problem in result.report.problems:
            print(problem, file=sys.stderr)
        print(f"invalid: {len(result.report.errors)} error(s)", file=sys.stderr)
        return None
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = _VERBS[args.verb]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.serve import run

    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    return run(args.config, args.workers, args.port)


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.cli_checks import run_checks

    try:
        return run_checks(args.config, args.client_ip)
    except Exception as exc:  # `check` answers in words, never with a traceback
        print(f"error: the check could not finish ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_INVALID


def cmd_explain(args: argparse.Namespace) -> int:
    from gateway.policy.explain import explain

    result = _load_or_report(args.config)
    if result is None:
        return EXIT_INVALID
    assert result.snapshot is not None
    out = explain(
        result.snapshot,
        surface=args.surface,
        ip=args.ip,
        method=args.method,
        path=args.path,
        user=args.user,
        account=args.account,
        host=args.host,
    )
    print(out.render())
    return EXIT_OK if out.decision == "allow" else EXIT_INVALID


def _with_store(args: argparse.Namespace, job: Callable[..., Awaitable[int]]) -> int:
    """Open the state store and an audit log of the config, run job(snapshot, store, audit)."""
    from gateway.services.audit import AuditLog
    from gateway.services.secret_key import load_secret_key
    from gateway.services.store import open_store

    result = _load_or_report(args.config)
    if result is None:
        return EXIT_INVALID
    snapshot = result.snapshot
    assert snapshot is not None

    async def go() -> int:
        key = load_secret_key(snapshot.paths.secret_key_file)
        store = await open_store(snapshot.config.state, snapshot.paths.config_dir)
        audit = AuditLog(
            snapshot.paths.audit_file,
            key.derive("audit-chain"),
            head_sink=lambda c, s, h: store.audit_head_put(c, s, h, time.time()),
        )
        await audit.start()
        try:
            return await job(snapshot, store, audit)
        finally:
            await audit.close()
            await store.close()

    return asyncio.run(go())


def cmd_user(args: argparse.Namespace) -> int:
    from gateway.services import accounts

    async def job(snapshot, store, audit) -> int:  # type: ignore[no-untyped-def]
        from gateway.services.session_store import open_session_store

        name = args.user
        fields = {"principal": name, "surface": None, "decision": None, "by": "cli"}
        if args.action == "unlock":  # failures are counted for any name, known or not
            print(await cli_signin.unlock_user(store, name, audit, fields))
            return EXIT_OK
        if name not in snapshot.users:
            print(f"no user {name!r} in {snapshot.paths.policies_dir}", file=sys.stderr)
            return EXIT_INVALID
        # Redis connects lazily: opening it costs nothing for the actions that do not use it.
        sessions = open_session_store(snapshot.config.sessions, store, snapshot.paths.config_dir)
        try:
            return await user_action(snapshot, store, sessions, audit, name, fields)
        finally:
            await sessions.close()

    async def user_action(snapshot, store, sessions, audit, name, fields) -> int:  # type: ignore[no-untyped-def]
        if args.action == "reset-2fa":
            revoked = await accounts.reset_2fa(store, sessions, name)
            audit.record("totp.reset", flush=True, sessions_revoked=revoked, **fields)
            from gateway.services.notify import Notifier

            await Notifier(store).two_factor_reset(snapshot, name, "an admin (command line)")
            print(
                f"{name}: authenticator removed, {revoked} session(s) ended; "
                "they enroll again at their next sign-in"
            )
        elif args.action == "revoke-sessions":
            revoked = await sessions.revoke_user(name)
            audit.record("session.revoked", flush=True, sessions_revoked=revoked, **fields)
            print(f"{name}: {revoked} session(s) ended")
        elif args.action == "expire-password":
            await store.password_expire(name)
            audit.record("password.expired", flush=True, **fields)
            print(f"{name}: must choose a new password at next sign-in")
        return EXIT_OK

    return _with_store(args, job)


def cmd_audit(args: argparse.Namespace) -> int:
    from gateway.services.audit_verify import follow, tail, verify

    if args.action == "tail":
        path = args.path or _audit_path(args.config)
        if path is None:
            return EXIT_INVALID
        if not path.exists():
            print(
                f"no audit trail at {path} yet: the gateway writes it once it runs", file=sys.stderr
            )
            return EXIT_INVALID
        records = follow(path, args.n) if args.follow else tail(path, args.n)
        for record in records:
            sys.stdout.write(orjson.dumps(record).decode() + "\n")
            sys.stdout.flush()
        return EXIT_OK

    # A read-only verb: it opens the key and the state store only if they exist already.
    from gateway.cli_readonly import secret_key_if_present, store_if_present
    from gateway.services.audit_rotate import trail_files

    result = _load_or_report(args.config)
    if result is None or result.snapshot is None:
        return EXIT_INVALID
    snapshot = result.snapshot
    paths = args.path or trail_files(snapshot.paths.audit_file)
    missing = [p for p in paths if not p.exists()] if args.path else []
    if not paths or missing:
        where = missing[0] if missing else snapshot.paths.audit_file
        print(f"no audit trail at {where} yet: the gateway writes it once it runs", file=sys.stderr)
        return EXIT_INVALID
    key = secret_key_if_present(snapshot)
    if key is None:
        print(
            f"no secret key at {snapshot.paths.secret_key_file} (nor GATEWAY_SECRET_KEY): "
            "the trail can only be verified with the key that wrote it",
            file=sys.stderr,
        )
        return EXIT_INVALID

    async def chain_heads() -> list[tuple[str, int, str]]:
        store = await store_if_present(snapshot)
        if store is None:
            return []
        try:
            return [(h.chain, h.seq, h.hash) for h in await store.audit_heads()]
        finally:
            await store.close()

    report = verify(paths, key.derive("audit-chain"), asyncio.run(chain_heads()))
    for problem in report.problems:
        print(problem)
    state = "ok" if report.ok else "FAILED"
    print(
        f"{state}: {report.records} records in {report.chains} chain(s), "
        f"{len(report.problems)} problem(s)"
    )
    return EXIT_OK if report.ok else EXIT_INVALID


def _audit_path(config: Path) -> Path | None:
    result = _load_or_report(config)
    return result.snapshot.paths.audit_file if result and result.snapshot else None


def cmd_keys(args: argparse.Namespace) -> int:
    from gateway.services import signing
    from gateway.services.secret_key import load_secret_key

    async def job(snapshot, store, audit) -> int:  # type: ignore[no-untyped-def]
        now = time.time()
        if args.action == "rotate":
            key = load_secret_key(snapshot.paths.secret_key_file)
            grace = 0.0 if args.immediately else signing.ROTATION_GRACE
            signer = await signing.rotate(store, key, now, grace=grace)
            audit.record("signing_key.rotated", flush=True, kid=signer.kid, grace_s=grace)
            within = grace + signing.REFRESH_INTERVAL
            print(f"new key published; every worker signs with it within {within:.0f} s")
        records = await store.signing_keys()
        if not records:
            print("no signing keys yet: the gateway creates one at its first start")
        for record in records:
            state = "active" if record.retired_at is None or record.retired_at > now else "retired"
            print(
                f"{record.kid}  {record.algorithm}  created "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(record.created_at))}  {state}"
            )
        return EXIT_OK

    return _with_store(args, job)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo.run import run_demo

    return run_demo(args.port, forward_auth=args.forward_auth)


_VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "check": cmd_check,
    "explain": cmd_explain,
    "hash-password": cli_secrets.cmd_hash_password,
    "apikey": cli_secrets.cmd_apikey_create,
    "user": cmd_user,
    "unlock": cli_signin.cmd_unlock,
    "audit": cmd_audit,
    "keys": cmd_keys,
    "demo": cmd_demo,
    "schema": cli_schema.cmd_schema,
}
_VERBS.update(NOTIFY_VERBS)
_VERBS.update(cli_security.VERBS)

if __name__ == "__main__":
    raise SystemExit(main())
