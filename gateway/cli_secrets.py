"""`gateway hash-password` and `gateway apikey create`: what goes into the policy files, checked
against that policy when there is one, and printed ready to paste."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import re
import secrets
import sys
from pathlib import Path
from typing import Any

# The same rule as the policy schema's names (gateway/policy/schema.py `Name`).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def add_parsers(sub: Any, _common: argparse.ArgumentParser) -> None:
    """`--config` is optional here: given, the policy in it checks the password or the name.

    These verbs get their own `--config` (default None) rather than `set_defaults(config=None)`
    on the shared one: parents share their Action objects, so set_defaults would change the
    default of every verb's --config.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help="check against this gateway.yaml's policy (optional)",
    )
    hp = sub.add_parser(
        "hash-password",
        parents=[common],
        help="argon2id hash for users: (stdin or prompt); with --config, checked against its "
        "password policy",
    )
    hp.add_argument("--user", help="check against this user's rules (their apps' overrides)")
    apikey = sub.add_parser("apikey", parents=[common], help="service account keys")
    apikey_sub = apikey.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = apikey_sub.add_parser(
        "create",
        parents=[common],
        help="print a new key and its hash; with --config, refuse a name already taken",
    )
    create.add_argument("name")


def _read_password() -> str | None:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return None
        return password
    return sys.stdin.readline().rstrip("\r\n")


def cmd_hash_password(args: argparse.Namespace) -> int:
    from gateway.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE
    from gateway.services.passwords import (
        MAX_PASSWORD_LENGTH,
        PasswordRules,
        check_new_password,
        hash_password,
    )

    password = _read_password()
    if password is None:
        return EXIT_USAGE
    if not password:
        print("empty password", file=sys.stderr)
        return EXIT_USAGE
    if len(password) > MAX_PASSWORD_LENGTH:
        print(f"longer than {MAX_PASSWORD_LENGTH} characters", file=sys.stderr)
        return EXIT_USAGE
    rules, name, email = PasswordRules(), args.user or "", None
    if args.config is not None:
        # The policy in force decides; a user's own rules (their apps' overrides) when named.
        from gateway.cli import _load_or_report

        result = _load_or_report(args.config)
        if result is None or result.snapshot is None:
            return EXIT_INVALID
        snapshot = result.snapshot
        user = snapshot.users.get(name) if name else None
        if user is not None:
            rules, email = user.password_rules, user.email
        else:
            policy = snapshot.policy.password_policy
            rules = PasswordRules(
                policy.min_length, policy.min_strength, policy.max_age_days, policy.history
            )
    violations = check_new_password(
        rules, password, username=name, email=email, history_hashes=(), current_hash=None
    )
    if violations:
        where = f"the password policy of {args.config}" if args.config else "the default policy"
        print(f"refused by {where}:", file=sys.stderr)
        for violation in violations:
            print(f"  {violation.message}", file=sys.stderr)
        return EXIT_INVALID
    print(hash_password(password))
    return EXIT_OK


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from gateway.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE

    name = args.name
    if not NAME.match(name):
        print(
            f"{name!r} is not a valid service account name: start with a letter or digit, then "
            "letters, digits, '.', '_', '@' or '-' (at most 128)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.config is not None:
        from gateway.cli import _load_or_report

        result = _load_or_report(args.config)
        if result is None or result.snapshot is None:
            return EXIT_INVALID
        taken = {n.casefold(): n for n in [*result.snapshot.accounts, *result.snapshot.users]}
        if name.casefold() in taken:
            print(
                f"{name!r} is taken (by {taken[name.casefold()]!r} in "
                f"{result.snapshot.paths.policies_dir}); choose another name, or replace that "
                "account's key_sha256 by hand to rotate its key",
                file=sys.stderr,
            )
            return EXIT_INVALID
    key = "gwk_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"key: {key}")
    print(f"key_sha256: {digest}")
    print(
        "\n# The key is shown only now: give it to the program. Paste this under "
        "service_accounts: in policies/ and add its grants:\n"
        f"  {name}:\n"
        f'    key_sha256: "{digest}"\n'
        "    grants: {}   # e.g. {protection-api: writer}",
        file=sys.stderr,
    )
    return EXIT_OK
