"""Three real instances behind nginx, one PostgreSQL, one Redis: they behave as one gateway
(docs/cluster.md). One cluster for the module; each test uses its own users."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.web.live_sockets import REVALIDATE_EVERY
from tests.cluster.harness import Cluster, Node, audit_verify, cluster, echo_backend
from tests.factories import client
from tests.web.test_signin import (
    PREFIX,
    SESSION_COOKIE,
    assert_login_redirect,
    fetch,
    jar_cookie,
    post_form,
    quick_hash,
    run_cli,
    sign_in,
)
from tests.web.test_two_factor import VERIFY, enroll, submit_code, totp_code
from tests.web.test_websocket import assert_ended


def _user(admin: bool = False) -> dict[str, Any]:
    return {"password_hash": quick_hash(), "admin": admin, "grants": {"console": "viewer"}}


USERS = {
    name: {**_user(admin=name.startswith("totp")), "email": f"{name}@example.com"}
    for name in ("anna", "ben", "cleo", "dora", "totp1", "load1", "load2", "wsuser")
}
SECURITY = {
    "two_factor": {"enforce": "admins", "issuer": "Cluster"},
    "login_regulation": {"max_failures": 3, "window": "10m", "ban": "15m"},
}


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with echo_backend() as backend:
        root = tmp_path_factory.mktemp("cluster")
        with cluster(root, backend=backend, users=USERS, security=SECURITY) as running:
            yield running


async def echoed(http, node: Node, path: str = "/") -> bool:  # type: ignore[no-untyped-def]
    reply = await fetch(http, "GET", f"{node.url}{path}")
    return reply.is_echo


class TestSessions:
    async def test_made_on_a_works_on_b_and_c(self, three: Cluster) -> None:
        a, b, c = three.nodes
        async with client() as http:
            assert (await sign_in(http, a, "anna")).status == 302
            for node in (a, b, c):
                reply = await fetch(http, "GET", f"{node.url}/")
                assert reply.backend_headers()["x-gateway-user"] == "anna"

    async def test_sign_out_on_b_ends_it_on_a_and_c(self, three: Cluster) -> None:
        a, b, c = three.nodes
        async with client() as http:
            assert (await sign_in(http, a, "ben")).status == 302
            sid = jar_cookie(http, SESSION_COOKIE)
            assert await echoed(http, a)
            assert (await post_form(http, b, "logout", {})).status == 200
        async with client() as replay:  # the old cookie, sent again to every instance
            replay.cookie_jar.update_cookies({SESSION_COOKIE: sid})
            for node in (a, b, c):
                assert_login_redirect(await fetch(replay, "GET", f"{node.url}/"))

    async def test_revoke_sessions_ends_them_everywhere_at_once(self, three: Cluster) -> None:
        a, b, c = three.nodes
        async with client() as first, client() as second:
            assert (await sign_in(first, a, "cleo")).status == 302
            assert (await sign_in(second, c, "cleo")).status == 302
            assert await echoed(first, b) and await echoed(second, b)
            done = await run_cli(three.files, "user", "revoke-sessions", "cleo")
            assert done.returncode == 0, done.stderr
            assert "2 session(s) ended" in done.stdout
            # The very next request, on any instance, is sent to sign in.
            for http in (first, second):
                for node in (a, b, c):
                    assert_login_redirect(await fetch(http, "GET", f"{node.url}/"))

    async def test_round_robin_through_nginx(self, three: Cluster) -> None:
        async with client() as http:
            assert (await sign_in(http, three.lb, "anna")).status == 302
            for _ in range(9):
                assert await echoed(http, three.lb)
        await asyncio.sleep(1.2)  # the audit buffer is written every 100 ms
        chains = {
            r["chain"]
            for r in three.audit()
            if r["event"] == "request" and r.get("principal") == "anna"
        }
        assert len(chains) == 3  # every instance served some


class TestWebSockets:
    async def test_socket_through_nginx_ends_at_sign_out_on_another_instance(
        self, three: Cluster
    ) -> None:
        async with client() as http:
            assert (await sign_in(http, three.lb, "wsuser")).status == 302
            ws = await http.ws_connect(f"{three.url}/live", headers={"Origin": three.url})
            await ws.send_str("hi")
            assert (await ws.receive_str(timeout=5)) == "echo:hi"
            await asyncio.sleep(REVALIDATE_EVERY + 0.5)  # re-validated once against Redis
            await ws.send_str("still")
            assert (await ws.receive_str(timeout=5)) == "echo:still"
            assert (await post_form(http, three.nodes[1], "logout", {})).status == 200
            await assert_ended(ws, within=REVALIDATE_EVERY + 3)
            await ws.close()


class TestSharedProtection:
    async def test_ban_earned_on_a_holds_on_b(self, three: Cluster) -> None:
        a, b, c = three.nodes
        async with client("127.0.0.2") as http:
            for _ in range(3):
                assert (await sign_in(http, a, "dora", "wrong-password-1")).status == 401
            assert (await sign_in(http, b, "dora")).status == 429
        async with client("127.0.0.3") as http:  # the user ban, from another address too
            assert (await sign_in(http, c, "dora")).status == 429

    async def test_totp_code_used_on_a_is_refused_on_b(self, three: Cluster) -> None:
        a, b, _ = three.nodes
        async with client() as http:
            secret, _codes, _ = await enroll(http, a, "totp1")
        code = await totp_code(secret, 1)
        async with client() as on_a, client() as on_b:
            assert (await sign_in(on_a, a, "totp1")).location == VERIFY
            assert (await sign_in(on_b, b, "totp1")).location == VERIFY
            assert (await submit_code(on_a, a, code)).status == 302
            assert await echoed(on_a, a)
            refused = await submit_code(on_b, b, code)
            assert refused.status == 401
            assert "already used" in refused.text
            assert not await echoed(on_b, b)


class TestSigningKeys:
    async def test_one_jwks_and_rotation_seen_by_all_within_seconds(self, three: Cluster) -> None:
        async def jwks() -> list[str]:
            async with client() as http:
                return [
                    (await fetch(http, "GET", f"{n.url}{PREFIX}/jwks.json")).text
                    for n in three.nodes
                ]

        before = await jwks()
        assert len(set(before)) == 1
        done = await run_cli(three.files, "keys", "rotate", "--immediately")
        assert done.returncode == 0, done.stderr
        started = time.monotonic()
        while True:
            now = await jwks()
            if len(set(now)) == 1 and now[0] != before[0]:
                break
            assert time.monotonic() - started < 10, "rotation not seen by every instance"
            await asyncio.sleep(0.2)
        assert len(json.loads(now[0])["keys"]) == len(json.loads(before[0])["keys"]) + 1


class TestAudit:
    async def test_each_instance_its_own_chain_and_all_verify(self, three: Cluster) -> None:
        async with client() as http:
            for node in three.nodes:
                await fetch(http, "GET", f"{node.url}{PREFIX}/healthz")
        await asyncio.sleep(1.2)  # heads reach the state store every second
        assert len({r["chain"] for r in three.audit()}) >= 3
        out = await audit_verify(three.files)
        assert out.returncode == 0, out.stdout + out.stderr
