"""`gateway user ...` run as a real process against a running gateway's config and state store
(docs/cli.md); sign-in state is checked over real HTTP."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from tests.factories import client, gateway_files, running_gateway, serve
from tests.web.test_signin import (
    Form,
    counting_echo,
    fetch,
    quick_users,
    run_cli,
    sign_in,
    wait_for_audit,
)
from tests.web.test_two_factor import ENROLL, VERIFY, enroll, security, submit_code, totp_code


@pytest.fixture
async def backend():
    app, hits = counting_echo()
    async with serve(app) as url:
        yield url, hits


def stored_2fa(files, user: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(authenticators, recovery codes) the state store holds for `user`."""
    db = files.root / "state" / "gateway.db"
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        (secrets,) = conn.execute(
            "SELECT COUNT(*) FROM totp WHERE username = ?", (user,)
        ).fetchone()
        (codes,) = conn.execute(
            "SELECT COUNT(*) FROM recovery_codes WHERE username = ?", (user,)
        ).fetchone()
    return secrets, codes


class TestResetTwoFactor:
    """reset-2fa removes the authenticator, ends the sessions, is audited and forces enrollment."""

    async def test_reset_then_enroll_again(self, tmp_path, backend):
        files = gateway_files(
            tmp_path, dashboard_upstream=backend[0], users=quick_users(), security=security("all")
        )
        async with running_gateway(files, watch_files=False) as gw:
            async with client() as alice, client() as bob:
                secret, recovery, reply = await enroll(alice, gw)
                assert reply.location == "/"
                _, _, reply = await enroll(bob, gw, "bob")
                assert (await fetch(alice, "GET", f"{gw.url}/")).is_echo
                assert stored_2fa(files, "alice") == (1, 10)

                done = await run_cli(files, "user", "reset-2fa", "alice")
                assert done.returncode == 0, done.stderr
                assert "1 session(s) ended" in done.stdout

                reply = await fetch(alice, "GET", f"{gw.url}/")
                assert reply.status == 302 and not reply.is_echo
                assert (await fetch(bob, "GET", f"{gw.url}/")).is_echo  # bob keeps his
            assert stored_2fa(files, "alice") == (0, 0)
            assert stored_2fa(files, "bob") == (1, 10)
            records = await wait_for_audit(files, "totp.reset", principal="alice")
            assert records and records[0]["by"] == "cli"
            assert records[0]["sessions_revoked"] == 1

            async with client() as http:  # next sign-in: enroll again, no code prompt
                reply = await sign_in(http, gw)
                assert reply.location == ENROLL
                assert (await fetch(http, "GET", f"{gw.url}{VERIFY}")).status == 302
                assert not (await fetch(http, "GET", f"{gw.url}/")).is_echo
                page = await fetch(http, "GET", f"{gw.url}{ENROLL}")
                assert page.status == 200 and "data-totp-secret" in page.text
            async with client() as http:  # the old authenticator and codes are gone
                _, new_codes, reply = await enroll(http, gw)
                assert reply.location == "/"
                assert not set(new_codes) & set(recovery)
            async with client() as http:
                assert (await sign_in(http, gw)).location == VERIFY
                assert (await submit_code(http, gw, recovery[0])).status == 401
                old = await totp_code(secret, 1)
                assert (await submit_code(http, gw, old)).status == 401

    async def test_reset_with_2fa_optional(self, tmp_path, backend):
        """Where 2FA is not required, a reset user signs in with the password alone."""
        files = gateway_files(
            tmp_path, dashboard_upstream=backend[0], users=quick_users(), security=security("none")
        )
        async with running_gateway(files, watch_files=False) as gw:
            async with client() as http:  # enroll voluntarily once signed in
                assert (await sign_in(http, gw)).location == "/"
                form = Form((await fetch(http, "GET", f"{gw.url}{ENROLL}")).text)
                code = await totp_code(form.totp_secret)
                done = await fetch(
                    http, "POST", f"{gw.url}{ENROLL}", data={"code": code, "csrf_token": form.csrf}
                )
                assert len(Form(done.text).recovery_codes) == 10
            assert stored_2fa(files, "alice") == (1, 10)
            async with client() as http:  # from now on the code is asked for
                assert (await sign_in(http, gw)).location == VERIFY
            done = await run_cli(files, "user", "reset-2fa", "alice")
            assert done.returncode == 0, done.stderr
            async with client() as http:
                reply = await sign_in(http, gw)
                assert reply.location == "/"
                seen = (await fetch(http, "GET", f"{gw.url}/")).backend_headers()
                assert seen["x-gateway-auth"] == "password"


class TestUserCommandErrors:
    """Unknown users and missing arguments give the documented exit codes."""

    @pytest.mark.parametrize("action", ["reset-2fa", "revoke-sessions", "expire-password"])
    async def test_unknown_user(self, tmp_path, action):
        files = gateway_files(tmp_path, users=quick_users())
        done = await run_cli(files, "user", action, "mallory")
        assert done.returncode == 1
        assert "mallory" in done.stderr

    async def test_usage_error(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users())
        done = await run_cli(files, "user", "reset-2fa")
        assert done.returncode == 2
