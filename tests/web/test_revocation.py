"""Signed-in users lose access at their very next request when the policy or an admin says so:
hot-reloaded policy files (user removed, grant lowered, 2FA now required) and the `gateway user
revoke-sessions` command (README.md, docs/configuration.md, docs/http.md, docs/cli.md)."""

from __future__ import annotations

import copy

import pytest

from tests.factories import client, gateway_files, running_gateway, serve
from tests.web.test_signin import (
    PREFIX,
    Form,
    assert_login_redirect,
    counting_echo,
    fetch,
    quick_users,
    run_cli,
    sign_in,
    wait_for_audit,
    wait_for_generation,
)


@pytest.fixture
async def backend():
    app, hits = counting_echo()
    async with serve(app) as url:
        yield url, hits


@pytest.fixture
async def gw(tmp_path, backend):
    files = gateway_files(tmp_path, dashboard_upstream=backend[0], users=quick_users())
    async with running_gateway(files) as running:  # watches the policy files
        yield running


def change_people(gw, edit) -> int:  # type: ignore[no-untyped-def]
    """Rewrite policies/people.yaml with `edit` applied; returns the generation before."""
    before = gw.holder.current.generation
    people = copy.deepcopy(gw.files.policies["people"])
    edit(people)
    gw.files.policies["people"] = people
    gw.files.write_policy("people", people)
    return before


async def assert_sent_to_sign_in(http, gw, path: str = "/") -> None:  # type: ignore[no-untyped-def]
    """Sent to the login page, and the login page shows its form (no redirect loop)."""
    reply = await fetch(http, "GET", f"{gw.url}{path}")
    assert_login_redirect(reply)
    page = await fetch(http, "GET", f"{gw.url}{reply.location}")
    assert page.status == 200, (page.status, page.location)
    assert "username" in Form(page.text).inputs


class TestUserRemoved:
    """A user deleted from the policy files is signed out at the next request."""

    async def test_removed_user(self, gw, backend):
        async with client() as alice, client() as bob:
            assert (await sign_in(alice, gw)).status == 302
            assert (await sign_in(bob, gw, "bob")).status == 302
            assert (await fetch(alice, "GET", f"{gw.url}/")).is_echo
            before = change_people(gw, lambda p: p["users"].pop("alice"))
            await wait_for_generation(gw, before)
            hits = len(backend[1])
            await assert_sent_to_sign_in(alice, gw)
            assert (await fetch(alice, "POST", f"{gw.url}/x")).status == 401
            assert (await fetch(alice, "GET", f"{gw.url}{PREFIX}/account")).status == 302
            assert len(backend[1]) == hits
            assert (await fetch(bob, "GET", f"{gw.url}/")).is_echo  # others are untouched
            assert (await sign_in(alice, gw)).status == 401

    async def test_restoring_the_user_does_not_revive_the_session(self, gw):
        async with client() as alice:
            assert (await sign_in(alice, gw)).status == 302
            assert (await fetch(alice, "GET", f"{gw.url}/")).is_echo
            removed = copy.deepcopy(gw.files.policies["people"]["users"]["alice"])
            before = change_people(gw, lambda p: p["users"].pop("alice"))
            await wait_for_generation(gw, before)
            revoked = await wait_for_audit(gw.files, "session.revoked", principal="alice")
            assert revoked and revoked[0]["reason"] == "user removed from the policy"
            assert revoked[0]["sessions_revoked"] == 1
            before = change_people(gw, lambda p: p["users"].update(alice=removed))
            await wait_for_generation(gw, before)
            # Back in the policy, alice must sign in again: the old cookie opens nothing.
            await assert_sent_to_sign_in(alice, gw)


class TestGrantLowered:
    """A grant changed from admin to viewer applies to the next request of the open session."""

    async def test_admin_to_viewer(self, gw):
        async with client() as http:
            await sign_in(http, gw)
            reply = await fetch(http, "POST", f"{gw.url}/x", data={"a": "1"})
            assert reply.backend_headers()["x-gateway-role"] == "admin"

            def lower(people):  # type: ignore[no-untyped-def]
                people["users"]["alice"]["grants"] = {"console": "viewer"}

            before = change_people(gw, lower)
            await wait_for_generation(gw, before)
            reply = await fetch(http, "POST", f"{gw.url}/x", data={"a": "1"})
            assert reply.status == 403 and not reply.is_echo
            reply = await fetch(http, "GET", f"{gw.url}/x")
            assert reply.backend_headers()["x-gateway-role"] == "viewer"

    async def test_grant_removed(self, gw):
        async with client() as http:
            await sign_in(http, gw)

            def drop(people):  # type: ignore[no-untyped-def]
                people["users"]["alice"]["grants"] = {}

            before = change_people(gw, drop)
            await wait_for_generation(gw, before)
            reply = await fetch(http, "GET", f"{gw.url}/")
            assert reply.status == 403 and not reply.is_echo


class TestTwoFactorNowRequired:
    """Turning 2FA on stops password-only sessions at once and sends them to sign in again."""

    async def test_enforce_all_after_sign_in(self, gw):
        async with client() as http:
            await sign_in(http, gw, "bob")
            assert (await fetch(http, "GET", f"{gw.url}/")).is_echo
            before = gw.holder.current.generation
            gw.files.write_policy("security", {"two_factor": {"enforce": "all"}})
            await wait_for_generation(gw, before)
            await assert_sent_to_sign_in(http, gw)
            reply = await sign_in(http, gw, "bob")
            assert reply.location == f"{PREFIX}/2fa/enroll"


class TestRevokeSessionsCommand:
    """`gateway user revoke-sessions USER` ends every session of that user, and only theirs."""

    async def test_cli_revokes_all_sessions_of_user(self, gw):
        async with client() as laptop, client() as phone, client() as bob:
            await sign_in(laptop, gw)
            await sign_in(phone, gw)
            await sign_in(bob, gw, "bob")
            done = await run_cli(gw.files, "user", "revoke-sessions", "alice")
            assert done.returncode == 0, done.stderr
            assert "2 session(s) ended" in done.stdout
            await assert_sent_to_sign_in(laptop, gw)
            await assert_sent_to_sign_in(phone, gw)
            assert (await fetch(bob, "GET", f"{gw.url}/")).is_echo
        records = await wait_for_audit(gw.files, "session.revoked", principal="alice", by="cli")
        assert records and records[0]["sessions_revoked"] == 2

    async def test_unknown_user(self, gw):
        done = await run_cli(gw.files, "user", "revoke-sessions", "mallory")
        assert done.returncode == 1
        assert "mallory" in done.stderr
