"""The password page and the password policy over real HTTP: refusals in plain words, history,
expiry (forced change before anything else), `gateway user expire-password`, apps_policy
inheritance, and users.yaml resets taking precedence (docs/configuration.md, docs/http.md,
docs/cli.md)."""

from __future__ import annotations

import contextlib
import copy
import sqlite3

import pytest

from tests.factories import (
    PASSWORD,
    GatewayFiles,
    client,
    gateway_files,
    running_gateway,
    serve,
)
from tests.web.test_signin import (
    LOGIN,
    PREFIX,
    Form,
    Reply,
    assert_login_redirect,
    audit_records,
    counting_echo,
    fetch,
    post_form,
    quick_hash,
    quick_users,
    run_cli,
    sign_in,
    wait_for_audit,
    wait_for_generation,
)

PASSWORD_PAGE = f"{PREFIX}/password"
FIRST = "Velvet-Marmot-Quarry-93"
SECOND = "Orchid-Tundra-Piano-58"
SIXTEEN = "Kx9#mQ2!vL7@pR4z"  # strong, but 16 characters
DAY = 86_400


def security(**policy: object) -> dict:
    rules = {"min_length": 12, "min_strength": 3, "history": 5, "max_age_days": 0, **policy}
    return {"two_factor": {"enforce": "none"}, "password_policy": rules}


async def change(http, gw, current: str, new: str, confirm: str | None = None) -> Reply:  # type: ignore[no-untyped-def]
    return await post_form(
        http,
        gw,
        "password",
        {
            "current_password": current,
            "new_password": new,
            "new_password_confirm": new if confirm is None else confirm,
        },
    )


def problems(reply: Reply) -> str:
    return Form(reply.text).error


def age_password(files: GatewayFiles, user: str, days: float) -> int:
    """Move the date the user's password in force was set `days` into the past, directly in the
    test gateway's SQLite state store (tables from migrations/sqlite/0001_init.sql)."""
    db = files.root / "state" / "gateway.db"
    with contextlib.closing(sqlite3.connect(db, timeout=10, isolation_level=None)) as conn:
        rows = conn.execute(
            "UPDATE passwords SET changed_at = changed_at - ? "
            "WHERE username = ? AND hash IS NOT NULL",
            (days * DAY, user),
        ).rowcount
        rows += conn.execute(
            "UPDATE password_seen SET first_seen = first_seen - ? WHERE username = ?",
            (days * DAY, user),
        ).rowcount
    return rows


@pytest.fixture
async def backend():
    app, hits = counting_echo()
    async with serve(app) as url:
        yield url, hits


class TestPasswordPage:
    """The page has the section-10 fields, and only a signed-in user reaches it."""

    async def test_form_fields(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=security())
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            assert_login_redirect(await fetch(http, "GET", f"{gw.url}{PASSWORD_PAGE}"))
            await sign_in(http, gw)
            page = await fetch(http, "GET", f"{gw.url}{PASSWORD_PAGE}")
            assert page.status == 200
            form = Form(page.text)
            assert form.forms[0] == {"method": "post", "action": PASSWORD_PAGE}
            assert form.inputs["current_password"]["autocomplete"] == "current-password"
            assert form.inputs["new_password"]["autocomplete"] == "new-password"
            assert form.inputs["new_password_confirm"]["autocomplete"] == "new-password"
            for name in ("current_password", "new_password", "new_password_confirm"):
                assert form.inputs[name]["type"] == "password"
                assert form.inputs[name]["id"] in form.label_for
            assert form.csrf
            assert "At least 12 characters" in page.text


class TestRefusals:
    """Each refused password says why in plain words and changes nothing."""

    async def test_each_reason(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=security())
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            await sign_in(http, gw)
            cases = [
                (PASSWORD, "Short-1a!", None, "Use at least 12 characters (this one has 9)."),
                (PASSWORD, "password12345", None, "This password is too easy to guess."),
                (PASSWORD, FIRST, SECOND, "The two new passwords are not the same."),
                ("not-my-password-at-all", FIRST, None, "Your current password is not correct."),
                (
                    PASSWORD,
                    "alice-Quarry-Marmot-93",
                    None,
                    "Leave your username out of your password.",
                ),
                (PASSWORD, PASSWORD, None, "This is your current password. Choose a new one."),
            ]
            for current, new, confirm, message in cases:
                reply = await change(http, gw, current, new, confirm)
                assert reply.status == 400, (new, reply.status)
                assert message in problems(reply), (new, problems(reply))
                assert new not in reply.text  # never echoed back
            # nothing was changed: the original password still signs in
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            assert (await sign_in(http, gw)).status == 302
            assert (await sign_in(http, gw, password=FIRST)).status == 401
        assert not [r for r in audit_records(files) if r["event"] == "password.changed"]


class TestCurrentPasswordGuessing:
    """Wrong current passwords on the password page count toward the ban, which the page obeys."""

    async def test_banned_after_max_failures(self, tmp_path):
        policy = security()
        policy["login_regulation"] = {"max_failures": 3, "window": "10m", "ban": "15m"}
        files = gateway_files(tmp_path, users=quick_users(), security=policy)
        async with running_gateway(files, watch_files=False) as gw:
            async with client("127.0.0.2") as http:
                await sign_in(http, gw)
                for guess in ("guess-one-1234", "guess-two-1234", "guess-three-123"):
                    assert (await change(http, gw, guess, FIRST)).status == 400
                reply = await change(http, gw, PASSWORD, FIRST)
                assert reply.status == 429
                assert "Too many failed attempts" in problems(reply)
            async with client("127.0.0.3") as http:  # nothing was changed; alice is banned
                assert (await sign_in(http, gw, password=FIRST)).status == 429
            assert await wait_for_audit(files, "login.banned", principal="alice")


class TestChange:
    """A good new password replaces the old one for signing in."""

    async def test_new_signs_in_old_does_not(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=security())
        async with running_gateway(files, watch_files=False) as gw:
            async with client() as http:
                await sign_in(http, gw)
                reply = await change(http, gw, PASSWORD, FIRST)
                assert reply.status == 200, problems(reply)
                assert "Your password was changed." in reply.text
                assert (await fetch(http, "GET", f"{gw.url}/")).status != 302  # still signed in
            async with client() as http:
                assert (await sign_in(http, gw, password=PASSWORD)).status == 401
                assert (await sign_in(http, gw, password=FIRST)).status == 302
            changed = await wait_for_audit(files, "password.changed", principal="alice")
            assert changed and FIRST not in files.audit_file.read_text()

    async def test_history(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=security(history=5))
        async with running_gateway(files, watch_files=False) as gw, client() as http:
            await sign_in(http, gw)
            assert (await change(http, gw, PASSWORD, FIRST)).status == 200
            assert (await change(http, gw, FIRST, SECOND)).status == 200
            reply = await change(http, gw, SECOND, FIRST)
            assert reply.status == 400
            assert "You used this password recently" in problems(reply)
            # the password from users.yaml was one of the last five too
            reply = await change(http, gw, SECOND, PASSWORD)
            assert reply.status == 400
            assert "You used this password recently" in problems(reply)


class TestExpiry:
    """A password older than max_age_days must be changed before anything else is reachable."""

    async def test_expired_password_forces_change_first(self, tmp_path, backend):
        files = gateway_files(
            tmp_path,
            dashboard_upstream=backend[0],
            users=quick_users(),
            security=security(max_age_days=1),
        )
        async with running_gateway(files, watch_files=False) as gw:
            async with client() as http:  # fresh: not expired
                assert (await sign_in(http, gw)).location == "/"
            assert age_password(files, "alice", 2) == 1
            async with client() as http:
                reply = await sign_in(http, gw, next_="/target")
                assert (reply.status, reply.location) == (302, PASSWORD_PAGE)
                page = await fetch(http, "GET", f"{gw.url}{PASSWORD_PAGE}")
                assert "older than 1 days" in page.text
                hits = list(backend[1])
                for path in (
                    "/",
                    "/target",
                    f"{PREFIX}/account",
                    f"{PREFIX}/2fa/enroll",
                    f"{PREFIX}/2fa/verify",
                    f"{PREFIX}/2fa/continue",
                ):
                    reply = await fetch(http, "GET", f"{gw.url}{path}")
                    assert reply.status == 302 and not reply.is_echo, path
                assert (await fetch(http, "POST", f"{gw.url}/x")).status == 401
                assert backend[1] == hits
                # a refused new password keeps the user on the page
                reply = await change(http, gw, PASSWORD, "short")
                assert reply.status == 400
                assert not (await fetch(http, "GET", f"{gw.url}/target")).is_echo
                reply = await change(http, gw, PASSWORD, FIRST)
                assert (reply.status, reply.location) == (302, "/target")
                assert (await fetch(http, "GET", f"{gw.url}/target")).is_echo
            async with client() as http:  # the new password is fresh
                assert (await sign_in(http, gw, password=FIRST)).location == "/"
            # and it expires in turn
            assert age_password(files, "alice", 2) >= 1
            async with client() as http:
                assert (await sign_in(http, gw, password=FIRST)).location == PASSWORD_PAGE

    async def test_cli_expire_password(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=security())
        async with running_gateway(files, watch_files=False) as gw:
            done = await run_cli(files, "user", "expire-password", "bob")
            assert done.returncode == 0, done.stderr
            async with client() as http:
                reply = await sign_in(http, gw, "bob", next_="/b")
                assert reply.location == PASSWORD_PAGE
                page = await fetch(http, "GET", f"{gw.url}{PASSWORD_PAGE}")
                assert "An administrator asked you to choose a new password." in page.text
                assert (await fetch(http, "GET", f"{gw.url}/b")).status == 302
                reply = await change(http, gw, PASSWORD, FIRST)
                assert (reply.status, reply.location) == (302, "/b")
            async with client() as http:
                assert (await sign_in(http, gw, "bob", FIRST)).location == "/"
            async with client() as http:  # alice was not touched
                assert (await sign_in(http, gw)).location == "/"
        assert await wait_for_audit(files, "password.expired", principal="bob")

    async def test_forced_change_comes_before_enrollment(self, tmp_path):
        policy = {**security(), "two_factor": {"enforce": "all"}}
        files = gateway_files(tmp_path, users=quick_users(), security=policy)
        async with running_gateway(files, watch_files=False) as gw:
            assert (await run_cli(files, "user", "expire-password", "alice")).returncode == 0
            async with client() as http:
                assert (await sign_in(http, gw)).location == PASSWORD_PAGE
                assert (await fetch(http, "GET", f"{gw.url}{PREFIX}/2fa/enroll")).status == 302
                reply = await change(http, gw, PASSWORD, FIRST)
                assert (reply.status, reply.location) == (302, f"{PREFIX}/2fa/enroll")
                assert not (await fetch(http, "GET", f"{gw.url}/")).is_echo


class TestAppsPolicy:
    """A user granted an app inherits its stricter password rules; others do not."""

    async def test_min_length_of_granted_app(self, tmp_path):
        apps = {
            "console": {
                "surface": "dashboard",
                "match": {"path": "/"},
                "upstream": "http://127.0.0.1:9",
            },
            "billing": {
                "surface": "dashboard",
                "match": {"path": "/billing/"},
                "upstream": "http://127.0.0.1:9",
            },
        }
        users = {
            "alice": {
                "email": "alice@example.com",
                "password_hash": quick_hash(),
                "grants": {"console": "admin", "billing": "viewer"},
            },
            "bob": {
                "email": "bob@example.com",
                "password_hash": quick_hash(),
                "grants": {"console": "viewer"},
            },
        }
        policy = security()
        policy["apps_policy"] = {"billing": {"password_policy": {"min_length": 20}}}
        files = gateway_files(tmp_path, apps=apps, users=users, accounts={}, security=policy)
        async with running_gateway(files, watch_files=False) as gw:
            async with client() as http:
                await sign_in(http, gw)
                page = await fetch(http, "GET", f"{gw.url}{PASSWORD_PAGE}")
                assert "At least 20 characters" in page.text
                reply = await change(http, gw, PASSWORD, SIXTEEN)
                assert reply.status == 400
                assert "Use at least 20 characters (this one has 16)." in problems(reply)
                reply = await change(http, gw, PASSWORD, "Tangerine-Glacier-Fox-41")
                assert reply.status == 200, problems(reply)
            async with client() as http:
                await sign_in(http, gw, "bob")
                assert (await change(http, gw, PASSWORD, SIXTEEN)).status == 200


class TestAdminReset:
    """A new hash in users.yaml wins over a password changed at run time, and ends sessions."""

    async def test_users_yaml_hash_takes_precedence(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=security())
        async with running_gateway(files) as gw:
            async with client() as http:
                await sign_in(http, gw)
                assert (await change(http, gw, PASSWORD, FIRST)).status == 200
            async with client() as session:
                assert (await sign_in(session, gw, password=FIRST)).status == 302
                assert (await fetch(session, "GET", f"{gw.url}/")).status != 302
                reset = "Admin-reset-Walrus-Beacon-6"
                before = gw.holder.current.generation
                people = copy.deepcopy(files.policies["people"])
                people["users"]["alice"]["password_hash"] = quick_hash(reset)
                files.write_policy("people", people)
                await wait_for_generation(gw, before)
                # the open session belongs to the old password: sign in again
                assert_login_redirect(await fetch(session, "GET", f"{gw.url}/"))
                page = await fetch(session, "GET", f"{gw.url}{LOGIN}")
                assert page.status == 200
            async with client() as http:
                assert (await sign_in(http, gw, password=FIRST)).status == 401
                assert (await sign_in(http, gw, password=PASSWORD)).status == 401
                assert (await sign_in(http, gw, password=reset)).status == 302
                # a new run-time change after the reset wins again
                assert (await change(http, gw, reset, SECOND)).status == 200
            async with client() as http:
                assert (await sign_in(http, gw, password=SECOND)).status == 302
