"""The console's forms over real HTTP: audit search and export, a user's page and its actions
(confirmation steps, audit records with the admin as principal)."""

from __future__ import annotations

import orjson

from tests.admin.conftest import ADMIN, PREFIX
from tests.factories import client
from tests.web.test_signin import Form, fetch, post_form, sign_in, wait_for_audit


async def signed_in_admin(http, gw) -> None:  # type: ignore[no-untyped-def]
    assert (await sign_in(http, gw, "alice")).status == 302


class TestAuditSearch:
    """admin/audit: a GET form, newest first, paginated, JSON Lines export."""

    async def test_filter_page_and_export(self, gw, http):
        async with client() as other:
            for _ in range(3):
                assert (await sign_in(other, gw, "bob", "wrong-password")).status == 401
        await signed_in_admin(http, gw)
        await wait_for_audit(gw.files, "login.failure", 3)
        reply = await fetch(http, "GET", f"{gw.url}{ADMIN}audit?event=login.failure&principal=bob")
        assert reply.status == 200, reply.text[:300]
        assert reply.text.count("<td>login.failure</td>") == 3
        form = Form(reply.text)
        for name in ("since", "until", "event", "principal", "client_ip", "app", "decision"):
            assert name in form.inputs, name
        assert form.inputs["principal"]["value"] == "bob"
        assert any("format=jsonl" in link for link in form.links)

        export = await fetch(
            http, "GET", f"{gw.url}{ADMIN}audit?event=login.failure&principal=bob&format=jsonl"
        )
        assert export.status == 200
        assert export.headers["Content-Type"].startswith("application/jsonl")
        assert "attachment" in export.headers["Content-Disposition"]
        records = [orjson.loads(line) for line in export.text.splitlines()]
        assert len(records) == 3
        assert {r["event"] for r in records} == {"login.failure"}
        assert [r["ts"] for r in records] == sorted((r["ts"] for r in records), reverse=True)
        assert all("hash" in r for r in records)  # as stored, chain fields included

    async def test_pages(self, gw, http):
        await signed_in_admin(http, gw)
        for _ in range(55):
            assert (await fetch(http, "GET", f"{gw.url}/x")).status == 200
        await wait_for_audit(gw.files, "request", 55, principal="alice", path="/x")
        first = await fetch(http, "GET", f"{gw.url}{ADMIN}audit?event=request&app=console")
        assert first.text.count("<td>request</td>") == 50
        older = [link for link in Form(first.text).links if "page=2" in link]
        assert older, "no link to the next page"
        second = await fetch(http, "GET", f"{gw.url}{older[0]}")
        assert 5 <= second.text.count("<td>request</td>") < 50
        assert "Newer records" in second.text

    async def test_bad_values_are_explained(self, gw, http):
        await signed_in_admin(http, gw)
        reply = await fetch(http, "GET", f"{gw.url}{ADMIN}audit?since=yesterday")
        assert reply.status == 400
        assert "since: &#x27;yesterday&#x27; is not an ISO 8601 date or time" in reply.text
        assert Form(reply.text).inputs["since"]["value"] == "yesterday"
        page = await fetch(http, "GET", f"{gw.url}{ADMIN}audit?page=0")
        assert page.status == 400
        export = await fetch(http, "GET", f"{gw.url}{ADMIN}audit?client_ip=x&format=jsonl")
        assert export.status == 400


class TestUserPage:
    """admin/users/{name}: facts, and the actions with their confirmation step."""

    async def test_end_all_sessions_confirmed_then_audited(self, gw, http):
        async with client() as bob:
            assert (await sign_in(bob, gw, "bob")).status == 302
            assert (await fetch(bob, "GET", f"{gw.url}/")).status == 200
            await signed_in_admin(http, gw)
            page = await fetch(http, "GET", f"{gw.url}{ADMIN}users/bob")
            assert page.status == 200
            assert "bob@example.com" in page.text
            ask = await fetch(http, "GET", f"{gw.url}{ADMIN}users/bob?confirm=end_sessions")
            assert ask.status == 200
            form = Form(ask.text)
            assert form.inputs["action"]["value"] == "end_sessions"
            assert form.forms[-1]["method"] == "post"
            assert (await fetch(bob, "GET", f"{gw.url}/")).status == 200  # asking changed nothing
            done = await post_form(http, gw, "admin/users/bob", {"action": "end_sessions"})
            assert (done.status, done.location) == (303, f"{ADMIN}users/bob")
            after = await fetch(http, "GET", f"{gw.url}{ADMIN}users/bob")
            assert "1 session(s) of bob ended." in after.text
            gone = await fetch(bob, "GET", f"{gw.url}/")
            assert (
                gone.status == 302 and gone.location and gone.location.startswith(f"{PREFIX}/login")
            )
        records = await wait_for_audit(gw.files, "admin.sessions.revoked")
        assert records[0]["principal"] == "alice"
        assert records[0]["user"] == "bob"
        assert records[0]["sessions_revoked"] == 1

    async def test_unlock_and_unknown_user(self, gw, http):
        async with client("127.0.0.2") as other:  # bans its own address too
            for _ in range(5):
                await sign_in(other, gw, "bob", "wrong-password")
        await signed_in_admin(http, gw)
        page = await fetch(http, "GET", f"{gw.url}{ADMIN}users/bob")
        assert "Sign-in ban</dt><dd>until" in page.text
        done = await post_form(http, gw, "admin/users/bob", {"action": "unlock"})
        assert done.status == 303
        page = await fetch(http, "GET", f"{gw.url}{ADMIN}users/bob")
        assert "Sign-in ban</dt><dd>none" in page.text
        assert "bob can sign in again." in page.text
        assert (await wait_for_audit(gw.files, "admin.user.unlocked"))[0]["principal"] == "alice"
        missing = await fetch(http, "GET", f"{gw.url}{ADMIN}users/nobody")
        assert missing.status == 404

    async def test_users_list(self, gw, http):
        await signed_in_admin(http, gw)
        reply = await fetch(http, "GET", f"{gw.url}{ADMIN}users")
        assert reply.status == 200
        assert f"{ADMIN}users/bob" in Form(reply.text).links


class TestHome:
    """admin/: the policy's last rejection stays visible after it was fixed."""

    async def test_policy_rejection_then_fixed(self, gw, http):
        await signed_in_admin(http, gw)
        good = gw.files.policies["security"]
        gw.files.write_policy("security", "two_factor: {enforce: sometimes}\n")
        await gw.holder.reload()
        home = await fetch(http, "GET", f"{gw.url}{ADMIN}")
        assert "is rejected now: the last good policy stays in force" in home.text
        assert "two_factor.enforce" in home.text
        gw.files.write_policy("security", good)
        await gw.holder.reload()
        home = await fetch(http, "GET", f"{gw.url}{ADMIN}")
        assert "was rejected, and fixed since" in home.text
