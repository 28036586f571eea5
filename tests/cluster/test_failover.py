"""Losing an instance (kill -9) in the middle of a load through nginx: no session lost, no
failure beyond the requests that were in flight on it, every audit chain still verifies
(docs/cluster.md)."""

from __future__ import annotations

import asyncio
import re
import time

from tests.cluster.harness import audit_verify, cluster, echo_backend
from tests.cluster.load import Load
from tests.cluster.test_shared_state import SECURITY, USERS
from tests.factories import client
from tests.web.test_signin import SESSION_COOKIE, fetch, jar_cookie, sign_in

SESSIONS = 6


async def test_kill_9_one_instance_under_load(tmp_path) -> None:
    with (
        echo_backend() as backend,
        cluster(tmp_path, backend=backend, users=USERS, security=SECURITY) as running,
    ):
        cookies = []
        for i in range(SESSIONS):
            async with client() as http:
                user = ("load1", "load2")[i % 2]
                assert (await sign_in(http, running.lb, user)).status == 302
                cookies.append({SESSION_COOKIE: jar_cookie(http, SESSION_COOKIE)})
        load = Load(f"{running.url}/", cookies, requests=300)
        task = asyncio.create_task(load.run())
        await asyncio.sleep(1.0)
        killed_port = running.nodes[1].url.rsplit(":", 1)[1]
        killed_at = time.monotonic()
        running.kill(1)
        await asyncio.sleep(2.0)
        load.stop.set()
        await asyncio.wait_for(task, 30)

        in_flight = [o for o in load.outcomes if o.in_flight_at(killed_at)]
        failed = load.failed()
        after = [o for o in load.outcomes if o.started > killed_at]
        print(
            f"\nkill -9 under load: {len(load.outcomes)} requests, {len(after)} after the kill, "
            f"{len(in_flight)} in flight at the kill, {len(failed)} failed"
        )
        assert len(after) > 50  # the load went on after the kill
        assert all(o.in_flight_at(killed_at) for o in failed), failed
        assert len(failed) <= len(in_flight) <= SESSIONS
        assert all(o.echoed for o in load.outcomes if o not in failed)  # no session lost

        # nginx's view: every 5xx it answered came from the killed instance.
        await asyncio.sleep(1.2)  # nginx flushes its access log every second
        log = (tmp_path / "log" / "nginx-access.log").read_text().splitlines()
        fives = [line for line in log if re.match(r"^\S+ 5\d\d ", line)]
        assert all(f"127.0.0.1:{killed_port}" in line for line in fives), fives
        retried = [line for line in log if f"127.0.0.1:{killed_port}, " in line]
        print(f"nginx: {len(fives)} 5xx, {len(retried)} requests retried on another instance")

        # Every session still works, through nginx and on each surviving instance.
        for cookie in cookies:
            async with client() as http:
                http.cookie_jar.update_cookies(cookie)
                for node in (running.lb, running.nodes[0], running.nodes[2]):
                    assert (await fetch(http, "GET", f"{node.url}/")).is_echo

        await asyncio.sleep(1.2)  # the survivors' chain heads reach the store every second
        verify = await audit_verify(running.files)
        assert verify.returncode == 0, verify.stdout + verify.stderr
