"""Trusted IPs, incidents and the notification outbox across three real instances behind nginx
(docs/notifications.md, docs/incidents.md, docs/cluster.md): each is shared through PostgreSQL, each
notification is sent once, and a notification leased by an instance killed mid-send is sent by
another."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cluster.harness import Cluster, cluster, echo_backend
from tests.factories import PASSWORD, client, write_country_mmdb
from tests.mail import MailSink, sink, wait_for
from tests.web.test_incidents import COUNTRIES, GB, JP, NO, SE, sign_in_from
from tests.web.test_notifications import SlowHandler
from tests.web.test_signin import post_form, quick_hash, sign_in


def _person(email: str, admin: bool = False) -> dict[str, Any]:
    return {"email": email, "password_hash": quick_hash(), "admin": admin, "grants": {}}


USERS = {
    "alice": {**_person("alice@example.com", admin=True), "grants": {"console": "admin"}},
    "dave": _person("dave@example.com"),
    "erin": _person("erin@example.net"),
    "frank": _person("frank@example.org"),
}


@dataclass
class Ops:
    cluster: Cluster
    mail: MailSink
    handler: SlowHandler


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    root = tmp_path_factory.mktemp("ops")
    (root / "config").mkdir()
    write_country_mmdb(root / "config" / "country.mmdb", COUNTRIES)
    handler = SlowHandler()
    with echo_backend() as backend, sink(handler=handler) as mail:
        smtp = {"host": "127.0.0.1", "port": mail.port, "from": "gateway@example.com"}
        extra = {
            "geoip": {"database": "country.mmdb"},
            "smtp": {**smtp, "timeout": "1s", "retry_max": "0.5s"},
        }
        security = {
            "two_factor": {"enforce": "none"},
            "incidents": {"window": "24h", "distinct_countries": 2},
            "notifications": {"enabled": True, "coalesce": "2s"},
            "login_regulation": {"max_failures": 50},
        }
        with cluster(
            root, backend=backend, users=USERS, security=security, extra_config=extra
        ) as running:
            yield Ops(running, mail, handler)


def opened(ops: Ops, user: str) -> list[dict[str, Any]]:
    return [
        r for r in ops.cluster.audit() if r["event"] == "incident.opened" and r["principal"] == user
    ]


class TestTrustedIps:
    async def test_added_on_a_applies_on_c(self, ops: Ops) -> None:
        a, _, c = ops.cluster.nodes
        async with client() as http:
            assert (await sign_in(http, a, "alice")).status == 302
            form = {"cidr": "2a02:cf40::/48", "scope": "example.com", "description": "VPN"}
            added = await post_form(http, a, "admin/trusted-ips", form)
            assert added.status == 303, added.text[:300]
        await sign_in_from(c.url, "dave", GB)
        await sign_in_from(c.url, "dave", NO)  # trusted for example.com a moment ago, on A
        await asyncio.sleep(0.5)
        assert opened(ops, "dave") == []
        await sign_in_from(c.url, "dave", JP)
        await wait_for(lambda: len(opened(ops, "dave")) == 1, timeout=10)
        assert opened(ops, "dave")[0]["countries"] == ["GB", "JP"]


class TestIncidents:
    async def test_concurrent_sign_ins_on_two_instances_open_one(self, ops: Ops) -> None:
        a, b, _ = ops.cluster.nodes
        await sign_in_from(a.url, "erin", GB)
        await asyncio.gather(
            *(
                sign_in_from(node.url, "erin", ip)
                for node, ip in [(a, NO), (b, SE), (a, JP), (b, NO)] * 2
            )
        )
        await asyncio.sleep(1.5)  # every instance's audit buffer reached the file
        assert len(opened(ops, "erin")) == 1


def _reloads(ops: Ops) -> int:
    return sum(
        1
        for r in ops.cluster.audit()
        if r["event"] == "policy.reloaded" and r.get("generation", 0) > 1
    )


class TestNotifications:
    async def test_a_reload_on_all_three_sends_one_mail(self, ops: Ops) -> None:
        before = len(ops.mail.received)
        ops.cluster.files.write_policy(
            "access",
            {
                "protection": {"enabled": False},
                "allowlists": {"dashboard": {"enabled": False}, "api": {"enabled": False}},
            },
        )
        await wait_for(lambda: _reloads(ops) >= 3, timeout=20)  # all three reloaded
        await wait_for(lambda: len(ops.mail.received) > before, timeout=20)
        await asyncio.sleep(3.0)  # a second mail from another instance would show by now
        subjects = [m.subject for m in ops.mail.received[before:] if "Policy" in m.subject]
        assert subjects == ["[gateway] Policy changed: Global protection turned OFF"]

    async def test_kill_9_of_the_instance_holding_a_lease(self, ops: Ops) -> None:
        """Last in this module: it kills an instance."""
        ops.handler.hold.set()
        before = len(ops.mail.received)
        async with client() as http:  # a failed sign-in of a known user: mailed to the admins
            reply = await sign_in(http, ops.cluster.lb, "frank", "wrong-" + PASSWORD)
            assert reply.status == 401
        await wait_for(lambda: len(ops.handler.held) == 1, timeout=30)
        holder = _smtp_client_pid(ops.mail.port)
        pids = [ops.cluster.pid(i) for i in range(3)]
        assert holder in pids, (holder, pids)
        ops.cluster.kill(pids.index(holder))  # SIGKILL while its send waits for the server
        ops.handler.hold.clear()
        # Its lease (5 s here) runs out; one of the two others sends the same notification.
        await wait_for(lambda: len(ops.mail.received) > before, timeout=30)
        await asyncio.sleep(1.0)
        mails = ops.mail.received[before:]
        assert [m.message_id for m in mails] == [ops.handler.held[0]]
        assert "Failed sign-in for frank" in mails[0].subject
        sent = [
            r
            for r in ops.cluster.audit()
            if r["event"] == "notification.sent" and r["message_id"] == mails[0].message_id
        ]
        assert len(sent) == 1


def _smtp_client_pid(port: int) -> int:
    """The process with an established connection to the SMTP sink (from `ss`)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dport", "=", f":{port}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    pids = {int(p.split("=", 1)[1]) for p in out.replace(",", " ").split() if p.startswith("pid=")}
    assert len(pids) == 1, out
    return pids.pop()
