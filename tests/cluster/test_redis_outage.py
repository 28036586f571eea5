"""Redis restarted in the middle of a load through nginx (a redis-server of the test's own,
without persistence, like a session cache): while it is down sign-in and signed-in requests get
a clean 503 and readyz says why; after, every instance serves again by itself. The sessions
did not survive (no persistence): their owners are sent to sign in, and a new sign-in works."""

from __future__ import annotations

import asyncio
import os
import time

from tests.cluster.harness import cluster, echo_backend
from tests.cluster.load import Load
from tests.cluster.test_shared_state import SECURITY, USERS
from tests.factories import client
from tests.redis_server import redis_server
from tests.web.test_signin import (
    PREFIX,
    SESSION_COOKIE,
    assert_login_redirect,
    fetch,
    jar_cookie,
    sign_in,
)


async def _ready(nodes) -> list[int]:  # type: ignore[no-untyped-def]
    async with client() as http:
        return [(await fetch(http, "GET", f"{n.url}{PREFIX}/readyz")).status for n in nodes]


async def test_redis_restart_mid_load(tmp_path) -> None:
    async with redis_server(tmp_path / "redis") as server:
        with (
            echo_backend() as backend,
            cluster(
                tmp_path / "cluster",
                backend=backend,
                sessions=server.url,
                users=USERS,
                security=SECURITY,
            ) as running,
        ):
            pids = [running.pid(i) for i in range(3)]
            cookies = []
            for user in ("load1", "load2", "load1"):
                async with client() as http:
                    assert (await sign_in(http, running.lb, user)).status == 302
                    cookies.append({SESSION_COOKIE: jar_cookie(http, SESSION_COOKIE)})
            load = Load(f"{running.url}/", cookies, requests=2000, pause=0.01)
            task = asyncio.create_task(load.run())
            await asyncio.sleep(0.5)

            down_at = time.monotonic()
            server.stop()
            await asyncio.sleep(0.5)
            async with client() as http:
                reply = await sign_in(http, running.lb, "load1")
                assert reply.status == 503 and reply.headers["Retry-After"] == "5"
                assert jar_cookie(http, SESSION_COOKIE) is None
                assert "session store" in reply.text
            assert await _ready(running.nodes) == [503, 503, 503]

            server.start()
            await server.wait_ready()
            up_at = time.monotonic()
            deadline = up_at + 10
            while await _ready(running.nodes) != [200, 200, 200]:
                assert time.monotonic() < deadline, "an instance did not reconnect by itself"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            load.stop.set()
            await asyncio.wait_for(task, 30)

            statuses = {o.status for o in load.outcomes}
            print(f"\nRedis restart: {len(load.outcomes)} requests, statuses {sorted(statuses)}")
            assert statuses <= {200, 302, 503}, statuses  # never a 500, 502 or a dropped one
            assert any(o.status == 503 for o in load.outcomes)
            for o in load.outcomes:
                if o.status == 503:
                    assert down_at <= o.ended and o.started <= up_at + 1.0, o
                if o.status == 200:  # before the outage only: the session did not survive
                    assert o.started < down_at, o
            assert any(o.status == 302 and o.started > up_at for o in load.outcomes)

            # The old sessions are gone; their owners sign in again, on any instance.
            async with client() as http:
                http.cookie_jar.update_cookies(cookies[0])
                assert_login_redirect(await fetch(http, "GET", f"{running.url}/"))
                assert (await sign_in(http, running.lb, "load1")).status == 302
                for node in (running.lb, *running.nodes):
                    assert (await fetch(http, "GET", f"{node.url}/")).is_echo
            # No instance was restarted.
            assert [running.pid(i) for i in range(3)] == pids
            for pid in pids:
                os.kill(pid, 0)
