"""Error pages for people (gateway/web/errors.py): who is signed in, what was denied, a way back;
never the query string; problem+json unchanged for programs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.admin.conftest import PREFIX, console_files
from tests.factories import (
    RunningGateway,
    client,
    echo_app,
    gateway_files,
    running_gateway,
    serve,
)
from tests.web.test_signin import Form, fetch, quick_users, sign_in

HTML = {"Accept": "text/html"}


@pytest.fixture
async def gw(tmp_path) -> AsyncIterator[RunningGateway]:
    async with serve(echo_app()) as upstream:
        files = console_files(tmp_path)
        files.config["apps"]["console"]["upstream"] = upstream
        files.write()
        async with running_gateway(files) as gateway:
            yield gateway


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    async with client() as session:
        yield session


class TestErrorPages:
    """403, 404 and the allowlist's 403 as a browser sees them."""

    async def test_forbidden_names_the_user_the_request_and_the_app(self, gw, http):
        assert (await sign_in(http, gw, "bob")).status == 302
        reply = await fetch(http, "POST", f"{gw.url}/settings?token=s3cret", headers=HTML)
        assert reply.status == 403
        assert "bob (bob@example.com)" in reply.text
        assert "POST /settings (app console)" in reply.text
        assert "s3cret" not in reply.text
        links = Form(reply.text).links
        assert links[:3] == ["/", f"{PREFIX}/account", f"{PREFIX}/logout"]
        assert "Acme Mail" in reply.text  # the product's name

    async def test_not_found_without_and_with_a_session(self, gw, http):
        reply = await fetch(http, "GET", f"{gw.url}{PREFIX}/nothing", headers=HTML)
        assert reply.status == 404
        assert "nobody (not signed in)" in reply.text
        assert f"{PREFIX}/login" in Form(reply.text).links
        assert (await sign_in(http, gw, "alice")).status == 302
        reply = await fetch(http, "GET", f"{gw.url}{PREFIX}/nothing", headers=HTML)
        assert "alice (alice@example.com)" in reply.text
        assert f"{PREFIX}/account" in Form(reply.text).links

    async def test_problem_json_is_unchanged(self, gw, http):
        reply = await fetch(
            http, "GET", f"{gw.url}{PREFIX}/nothing", headers={"Accept": "application/json"}
        )
        assert reply.status == 404
        body = reply.json()
        assert body["code"] == "not_found" and "principal" not in body

    async def test_allowlist_denial_says_which_address(self, tmp_path):
        files = gateway_files(
            tmp_path,
            users=quick_users(),
            allowlists={
                "dashboard": {"enabled": True, "entries": [{"ip": "192.0.2.1"}]},
                "api": {"enabled": False},
            },
        )
        async with running_gateway(files) as gw, client() as http:
            reply = await fetch(http, "GET", f"{gw.url}/x", headers=HTML)
            assert reply.status == 403
            assert "Your address" in reply.text and "127.0.0.1" in reply.text
            assert "GET /x (app console)" in reply.text
