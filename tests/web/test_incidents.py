"""Security incidents over real HTTP (docs/incidents.md): people sign in through a trusted
proxy that names their public address in X-Forwarded-For; a real MaxMind-format database maps
those addresses to countries.

Covers: several countries open one incident (and the metrics say so), the window's edge, the
trusted-IP exemption per email domain (policy and run-time entries), resolve and a new incident
after, and one incident under concurrent sign-ins on two gateway processes sharing a store.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.cli import main
from gateway.services.security import Actor
from gateway.web.resources import SERVICES
from tests.factories import (
    PASSWORD,
    GatewayFiles,
    RunningGateway,
    client,
    free_port,
    gateway_files,
    gateway_process,
    running_gateway,
    write_country_mmdb,
    written_records,
)
from tests.mail import MailSink, wait_for
from tests.services.conftest import POSTGRES_URL
from tests.web.test_signin import Form, fetch, quick_hash

PREFIX = "/_gateway"
GB, GB2, NO, SE, JP = "81.2.69.142", "81.2.69.160", "2a02:cf40::7", "89.160.20.112", "1.0.16.9"
COUNTRIES = {
    "81.2.69.0/24": "GB",
    "2a02:cf40::/32": "NO",
    "89.160.20.0/24": "SE",
    "1.0.16.0/20": "JP",
    "203.0.113.0/24": "FR",  # documentation range: mapped here, must never count
}


def people() -> dict[str, Any]:
    def person(email: str) -> dict[str, Any]:
        return {"email": email, "password_hash": quick_hash(), "grants": {"console": "viewer"}}

    return {
        "root": {**person("root@example.net"), "admin": True},
        "bob": person("bob@example.com"),
        "carol": person("carol@example.org"),
        "dave": person("dave@example.com"),
    }


def incident_files(
    root: Path, *, window: str = "24h", state: str | None = None, trusted: list[Any] | None = None
) -> GatewayFiles:
    root.mkdir(parents=True, exist_ok=True)
    write_country_mmdb(root / "country.mmdb", COUNTRIES)
    extra: dict[str, Any] = {
        "trusted_proxies": ["127.0.0.1/32"],
        "geoip": {"database": "country.mmdb"},
    }
    if state is not None:
        extra["state"] = state
    return gateway_files(
        root,
        users=people(),
        extra_config=extra,
        security={
            "two_factor": {"enforce": "none"},
            "incidents": {"window": window, "distinct_countries": 2},
            "trusted_login_ips": trusted or [],
            # Room for the concurrent sign-ins of one user below (attempts in flight count).
            "login_regulation": {"max_failures": 50},
        },
    )


async def sign_in_from(url: str, user: str, ip: str, agent: str = "Firefox/130") -> None:
    """A complete sign-in, the proxy in front saying the person is at `ip`."""
    headers = {"X-Forwarded-For": ip, "User-Agent": agent}
    async with client(headers=headers) as http:
        form = Form((await fetch(http, "GET", f"{url}{PREFIX}/login")).text)
        data = {"username": user, "password": PASSWORD, "next": "/", "csrf_token": form.csrf}
        reply = await fetch(http, "POST", f"{url}{PREFIX}/login", data=data)
        assert (reply.status, reply.location) == (302, "/"), (reply.status, reply.text[:300])


def audit_events(files: GatewayFiles, event: str) -> list[dict[str, Any]]:
    return [r for r in written_records(files.audit_file) if r["event"] == event]


async def audit_events_when(
    files: GatewayFiles, event: str, count: int, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """The records once `count` of them are on disk (the writer flushes in the background)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(found := audit_events(files, event)) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{len(found)} {event} records"
        await asyncio.sleep(0.05)
    return found


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    trusted = [{"cidr": "89.160.20.0/24", "scope": "example.org", "description": "Partner app"}]
    async with running_gateway(incident_files(tmp_path, trusted=trusted)) as running:
        yield running


class TestIncidentJourney:
    """Sign-ins from two countries open one incident; resolving it lets a new one open."""

    async def test_two_countries_then_resolve_then_a_new_incident(self, gw: RunningGateway) -> None:
        security = gw.app[SERVICES].security
        await sign_in_from(gw.url, "bob", GB, "Firefox/130")
        await sign_in_from(gw.url, "bob", "203.0.113.50")  # documentation range: never counts
        assert await security.list_incidents() == []
        await sign_in_from(gw.url, "bob", NO, "Safari/17")
        await sign_in_from(gw.url, "bob", GB2)  # adds evidence, no second incident

        (incident,) = await security.list_incidents()
        assert (incident.user, incident.state, incident.countries) == ("bob", "open", ("GB", "NO"))
        detail = await security.incident(incident.id)
        assert [(v.record.ip, v.record.country) for v in detail.sign_ins] == [
            (GB, "GB"),
            (NO, "NO"),
            (GB2, "GB"),
        ]
        assert detail.sign_ins[1].record.user_agent == "Safari/17"
        assert detail.sign_ins[0].record.geoip_source.startswith("GeoLite2-Country ")
        (opened,) = await audit_events_when(gw.files, "incident.opened", 1)
        assert (opened["principal"], opened["countries"]) == ("bob", ["GB", "NO"])

        async with client() as http:  # metrics: from 127.0.0.1 itself, no proxy header
            metrics = (await fetch(http, "GET", f"{gw.url}{PREFIX}/metrics")).text
        assert "gateway_incidents_open 1.0" in metrics
        assert 'gateway_sign_ins_total{country="GB",result="success"} 2.0' in metrics
        assert 'gateway_sign_ins_total{country="none",result="success"} 1.0' in metrics

        await security.resolve(incident.id, "Holiday in Norway", Actor("alice"))
        await sign_in_from(gw.url, "bob", GB)
        assert [i.state for i in await security.list_incidents()] == ["resolved"]
        await sign_in_from(gw.url, "bob", JP)
        new, old = await security.list_incidents()
        # Only sign-ins after the resolution count: GB and JP, not the NO judged before.
        assert (new.state, new.countries, old.id) == ("open", ("GB", "JP"), incident.id)
        assert len(await audit_events_when(gw.files, "incident.opened", 2)) == 2

    async def test_mail_to_the_admins_and_to_the_user(self, tmp_path: Path) -> None:
        """The incident goes to the admins; the sign-in from a country new for bob, to bob."""
        sink = MailSink(free_port()).start()
        try:
            files = incident_files(tmp_path)
            files.config["smtp"] = {"host": "127.0.0.1", "port": sink.port, "from": "gw@test"}
            files.write()
            async with running_gateway(files) as gw:
                await sign_in_from(gw.url, "bob", GB)
                await sign_in_from(gw.url, "bob", NO)
                await wait_for(lambda: len(sink.received) >= 2)
        finally:
            sink.stop()
        mails = sorted((m.rcpt_tos, m.subject) for m in sink.received)
        assert [to for to, _ in mails] == [("bob@example.com",), ("root@example.net",)]
        assert mails[0][1].endswith("New sign-in to your account from NO")
        assert "bob" in mails[1][1]

    async def test_requests_are_counted_per_user(self, gw: RunningGateway) -> None:
        headers = {"X-Forwarded-For": GB}
        async with client(headers=headers) as http:
            form = Form((await fetch(http, "GET", f"{gw.url}{PREFIX}/login")).text)
            data = {"username": "bob", "password": PASSWORD, "next": "/", "csrf_token": form.csrf}
            await fetch(http, "POST", f"{gw.url}{PREFIX}/login", data=data)
            for _ in range(3):
                await fetch(http, "GET", f"{gw.url}/app/page")
        activity = await gw.app[SERVICES].security.user_activity("bob")
        assert (activity.logins_24h, activity.requests_24h, activity.countries_24h) == (
            1,
            3,
            ("GB",),
        )


class TestTrustedIps:
    """Addresses trusted for the user's email domain do not count; other domains' do."""

    async def test_policy_entry_applies_to_its_domain_only(self, gw: RunningGateway) -> None:
        security = gw.app[SERVICES].security
        await sign_in_from(gw.url, "carol", GB)
        await sign_in_from(gw.url, "carol", SE)  # trusted for example.org by the policy
        assert await security.list_incidents(user="carol") == []
        await sign_in_from(gw.url, "bob", GB)
        await sign_in_from(gw.url, "bob", SE)  # bob is at example.com: counts
        assert [i.countries for i in await security.list_incidents(user="bob")] == [("GB", "SE")]

    async def test_run_time_entry_marked_safe(self, gw: RunningGateway) -> None:
        security = gw.app[SERVICES].security
        config = ["--config", str(gw.files.config_file)]
        args = ["trusted-ips", "add", "2a02:cf40::/48", "--scope", "example.com"]
        args += ["--description", "Travel router", *config]
        assert await asyncio.to_thread(main, args) == 0
        await sign_in_from(gw.url, "dave", GB)
        await sign_in_from(gw.url, "dave", NO)
        assert await security.list_incidents(user="dave") == []
        await sign_in_from(gw.url, "dave", JP)
        (incident,) = await security.list_incidents(user="dave")
        assert incident.countries == ("GB", "JP")
        views = (await security.user_activity("dave")).sign_ins
        assert [(v.record.ip, v.trusted) for v in views] == [(JP, False), (NO, True), (GB, False)]


class TestWindow:
    """Only sign-ins within `incidents.window` of the new one count."""

    async def test_the_window_edge(self, tmp_path: Path) -> None:
        files = incident_files(tmp_path, window="2s")
        async with running_gateway(files) as gw:
            security = gw.app[SERVICES].security
            await sign_in_from(gw.url, "bob", GB)
            await asyncio.sleep(2.2)  # GB is now outside the window
            await sign_in_from(gw.url, "bob", NO)
            assert await security.list_incidents() == []
            await sign_in_from(gw.url, "bob", GB)  # NO is well within it
            (incident,) = await security.list_incidents()
            assert incident.countries == ("GB", "NO")


@pytest.fixture
async def postgres_state() -> AsyncIterator[str]:
    """A fresh PostgreSQL schema, as a state URL for gateway processes; dropped after."""
    admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    schema = f"t_{secrets.token_hex(6)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?search_path={schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


class TestSeveralProcesses:
    """Two gateway processes on one PostgreSQL store: concurrent sign-ins open ONE incident."""

    async def test_concurrent_sign_ins_open_one_incident(
        self, tmp_path: Path, postgres_state: str
    ) -> None:
        files = incident_files(tmp_path, state=postgres_state)
        async with gateway_process(files) as (first, _), gateway_process(files) as (second, _):
            await sign_in_from(first, "bob", GB)
            # Every one of these sees two countries and races to open the incident.
            await asyncio.gather(
                *(
                    sign_in_from(url, "bob", ip)
                    for url, ip in [(first, NO), (second, SE), (first, JP), (second, NO)] * 2
                )
            )
        config = ["--config", str(files.config_file)]
        assert await asyncio.to_thread(main, ["incidents", *config]) == 0
        records = audit_events(files, "incident.opened")
        assert len(records) == 1, records
        assert len({r["chain"] for r in audit_events(files, "request")}) == 2  # two processes
        show = ["incidents", "show", str(records[0]["incident_id"]), *config]
        assert await asyncio.to_thread(main, show) == 0
