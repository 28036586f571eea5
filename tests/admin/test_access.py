"""Who gets into the admin console, over real HTTP (docs/http.md): gateway admins after
every sign-in step; everyone else 403 `forbidden`; every change a POST with the CSRF token."""

from __future__ import annotations

from urllib.parse import unquote

from tests.admin.conftest import ADMIN, PREFIX, console_files
from tests.factories import client, running_gateway
from tests.web.test_signin import Form, fetch, post_form, sign_in, wait_for_audit
from tests.web.test_two_factor import enroll


class TestAccess:
    """The access rule of every console page."""

    async def test_nobody_signed_in_is_sent_to_sign_in(self, gw, http):
        reply = await fetch(http, "GET", f"{gw.url}{ADMIN}audit?event=x")
        assert reply.status == 302
        assert reply.location is not None
        assert unquote(reply.location) == f"{PREFIX}/login?next=/_gateway/admin/audit?event=x"

    async def test_post_without_a_session_is_forbidden(self, gw, http):
        reply = await post_form(http, gw, "admin/users/bob", {"action": "unlock"})
        assert reply.status == 403

    async def test_non_admin_gets_403_saying_who_and_what(self, gw, http):
        assert (await sign_in(http, gw, "bob")).status == 302
        reply = await fetch(http, "GET", f"{gw.url}{ADMIN}")
        assert reply.status == 403
        assert "The admin console is for gateway admins only." in reply.text
        assert "bob (bob@example.com)" in reply.text
        assert "GET /_gateway/admin/" in reply.text
        links = Form(reply.text).links
        assert "/" in links and f"{PREFIX}/account" in links
        for path in ("audit", "users/alice", "users", "nothing-here"):
            assert (await fetch(http, "GET", f"{gw.url}{ADMIN}{path}")).status == 403, path

    async def test_non_admin_post_changes_nothing(self, gw, http):
        async with client() as alice:
            assert (await sign_in(alice, gw, "alice")).status == 302
            assert (await sign_in(http, gw, "bob")).status == 302
            reply = await post_form(http, gw, "admin/users/alice", {"action": "end_sessions"})
            assert reply.status == 403
            assert (await fetch(alice, "GET", f"{gw.url}{ADMIN}")).status == 200

    async def test_admin_gets_in(self, gw, http):
        assert (await sign_in(http, gw, "alice")).status == 302
        reply = await fetch(http, "GET", f"{gw.url}{ADMIN}")
        assert reply.status == 200, reply.text[:500]
        assert "<h1>Gateway admin</h1>" in reply.text
        for section in ("System messages", "Policy", "Notification outbox", "Legal contacts"):
            assert f"<h2>{section}</h2>" in reply.text
        assert "<dt>Pending</dt><dd>0</dd>" in reply.text  # the outbox
        assert "No legal contacts in the policy" in reply.text
        assert "No policy file was rejected" in reply.text
        assert reply.headers["Cache-Control"] == "no-store"
        assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]

    async def test_admin_without_slash_and_unknown_pages(self, gw, http):
        assert (await sign_in(http, gw, "alice")).status == 302
        reply = await fetch(http, "GET", f"{gw.url}{PREFIX}/admin")
        assert (reply.status, reply.location) == (302, ADMIN)
        missing = await fetch(http, "GET", f"{gw.url}{ADMIN}nothing-here")
        assert missing.status == 404
        assert "alice" in missing.text
        wrong = await fetch(http, "POST", f"{gw.url}{ADMIN}audit", data={"x": "1"})
        assert wrong.status == 403  # no CSRF token: refused before the method is looked at

    async def test_csrf_token_required_for_every_change(self, gw, http):
        assert (await sign_in(http, gw, "alice")).status == 302
        url = f"{gw.url}{ADMIN}users/bob"
        no_token = await fetch(http, "POST", url, data={"action": "unlock"})
        assert no_token.status == 403
        forged = await fetch(http, "POST", url, data={"action": "unlock", "csrf_token": "x" * 64})
        assert forged.status == 403
        ok = await post_form(http, gw, "admin/users/bob", {"action": "unlock"})
        assert (ok.status, ok.location) == (303, f"{ADMIN}users/bob")


class TestTwoFactor:
    """An admin who has not finished every sign-in step stays out."""

    async def test_admin_half_way_through_2fa_is_forbidden(self, tmp_path):
        files = console_files(tmp_path, enforce="admins")
        async with running_gateway(files) as gw, client() as http:
            await enroll(http, gw, "alice")
            assert (await fetch(http, "GET", f"{gw.url}{ADMIN}")).status == 200
            async with client() as second:
                reply = await sign_in(second, gw, "alice")
                assert reply.location == f"{PREFIX}/2fa/verify"
                refused = await fetch(second, "GET", f"{gw.url}{ADMIN}")
                assert refused.status == 403
                assert "Finish signing in" in refused.text
                posted = await post_form(second, gw, "admin/users/bob", {"action": "unlock"})
                assert posted.status == 403
            denied = await wait_for_audit(
                gw.files, "request", 2, principal="alice", decision="deny:forbidden"
            )
            assert len(denied) == 2
            assert "admin console: sign-in not finished" in denied[0]["reasons"]


class TestAllowlist:
    """The console is on the dashboard surface, under its allowlist."""

    async def test_only_from_allowed_addresses(self, tmp_path):
        files = console_files(tmp_path)
        files.policies["access"]["allowlists"] = {
            "dashboard": {"enabled": True, "entries": [{"ip": "127.0.0.2"}]},
            "api": {"enabled": False},
        }
        files.write()
        async with running_gateway(files) as gw:
            async with client("127.0.0.2") as inside:
                assert (await sign_in(inside, gw, "alice")).status == 302
                assert (await fetch(inside, "GET", f"{gw.url}{ADMIN}")).status == 200
            async with client("127.0.0.1") as outside:
                reply = await fetch(outside, "GET", f"{gw.url}{ADMIN}")
                assert reply.status == 403
                assert "Your network is not allowed" in reply.text
