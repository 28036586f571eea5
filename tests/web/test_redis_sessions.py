"""`sessions.store: redis://...`: sign-in, sign-out and revocation with sessions in a real Redis,
and what people see while Redis is unreachable (docs/configuration.md, docs/cluster.md)."""

from __future__ import annotations

import hashlib

import pytest
import redis.asyncio as aioredis

from tests.factories import client, gateway_files, running_gateway, serve
from tests.redis_server import REDIS_URL, redis_prefix, redis_server
from tests.web.test_signin import (
    LOGIN,
    PREFIX,
    SESSION_COOKIE,
    assert_login_redirect,
    counting_echo,
    fetch,
    jar_cookie,
    post_form,
    quick_users,
    run_cli,
    sign_in,
)


def _files(tmp_path, backend_url: str, store_url: str, prefix: str):  # type: ignore[no-untyped-def]
    return gateway_files(
        tmp_path,
        dashboard_upstream=backend_url,
        users=quick_users(),
        extra_config={"sessions": {"store": store_url, "key_prefix": prefix}},
    )


@pytest.fixture
async def backend():
    app, _hits = counting_echo()
    async with serve(app) as url:
        yield url


class TestRedisSessions:
    async def test_session_lives_in_redis_and_ends_there(self, tmp_path, backend):
        async with redis_prefix() as prefix:
            files = _files(tmp_path, backend, REDIS_URL, prefix)
            raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
            try:
                async with running_gateway(files, watch_files=False) as gw, client() as http:
                    assert (await sign_in(http, gw)).status == 302
                    sid = jar_cookie(http, SESSION_COOKIE)
                    assert sid
                    key = f"{prefix}session:{hashlib.sha256(sid.encode()).hexdigest()}"
                    assert await raw.hget(key, "u") == "alice"
                    assert 0 < await raw.pttl(key) <= 1800 * 1000  # the idle timeout
                    assert (await fetch(http, "GET", f"{gw.url}/")).is_echo
                    done = await run_cli(files, "user", "revoke-sessions", "alice")
                    assert done.returncode == 0, done.stderr
                    assert "1 session(s) ended" in done.stdout
                    assert not await raw.exists(key)
                    assert_login_redirect(await fetch(http, "GET", f"{gw.url}/"))
                    # sign in again, then sign out: the key goes
                    assert (await sign_in(http, gw)).status == 302
                    sid = jar_cookie(http, SESSION_COOKIE)
                    key = f"{prefix}session:{hashlib.sha256(sid.encode()).hexdigest()}"
                    assert await raw.exists(key)
                    assert (await post_form(http, gw, "logout", {})).status == 200
                    assert not await raw.exists(key)
                    assert not await raw.exists(f"{prefix}user:alice") or not await raw.zcard(
                        f"{prefix}user:alice"
                    )
            finally:
                await raw.aclose()

    async def test_redis_down_fails_closed_and_recovers(self, tmp_path, backend):
        """Without persistence a Redis restart forgets every session: people sign in again.
        While it is down, sign-in and signed-in requests get a clean 503, never a pass."""
        async with redis_server(tmp_path / "redis") as server:
            files = _files(tmp_path, backend, server.url, "gw:")
            async with running_gateway(files, watch_files=False) as gw, client() as http:
                assert (await sign_in(http, gw)).status == 302
                assert (await fetch(http, "GET", f"{gw.url}/")).is_echo
                server.stop()
                reply = await fetch(http, "GET", f"{gw.url}/")
                assert reply.status == 503 and not reply.is_echo
                assert reply.headers["Retry-After"] == "5"
                assert "session store" in reply.text
                login_page = await fetch(http, "GET", f"{gw.url}{LOGIN}")
                assert login_page.status == 503
                ready = await fetch(http, "GET", f"{gw.url}{PREFIX}/readyz")
                assert ready.status == 503
                assert "session store unreachable" in ready.text
                server.start()
                await server.wait_ready()
                ready = await fetch(http, "GET", f"{gw.url}{PREFIX}/readyz")
                assert ready.status == 200, ready.text
                # The session died with Redis (no persistence): back to the sign-in page.
                assert_login_redirect(await fetch(http, "GET", f"{gw.url}/"))
                assert (await sign_in(http, gw)).status == 302
                assert (await fetch(http, "GET", f"{gw.url}/")).is_echo
