"""SecurityOps over a real store (every implementation), a real audit log and a real .mmdb:
sign-in history, incident detection, trusted IP exemption, incident states, user activity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.policy.snapshot import Snapshot
from gateway.policy.source import load
from gateway.services.audit import AuditLog
from gateway.services.geoip import GeoIp
from gateway.services.security import (
    Actor,
    IncidentStateError,
    InvalidTrustedIp,
    NotFound,
    SecurityOps,
)
from gateway.services.store import IncidentRecord, SignInRecord, StateStore
from tests.factories import gateway_files, password_hash

from .test_geoip import write_mmdb

T0 = 1_800_000_000.0
GB, SE, NO, US = "81.2.69.10", "89.160.20.10", "2a02:cf40::10", "8.8.8.8"
COUNTRIES = {"81.2.69.0/24": "GB", "89.160.20.0/24": "SE", "2a02:cf40::/32": "NO"}
ADMIN = Actor("root", client_ip="127.0.0.1", request_id="req-1")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def snapshot_for(tmp_path: Path, security: dict[str, Any] | None = None) -> Snapshot:
    users = {
        name: {"email": f"{name}@{domain}", "password_hash": password_hash(), "grants": {}}
        for name, domain in [("alice", "example.com"), ("bob", "example.org")]
    }
    files = gateway_files(
        tmp_path / "conf",
        users=users,
        security={"two_factor": {"enforce": "none"}, **(security or {})},
    )
    result = load(files.config_file)
    assert result.snapshot is not None, [str(p) for p in result.report.problems]
    return result.snapshot


class Harness:
    def __init__(self, ops: SecurityOps, audit: AuditLog, path: Path, clock: Clock) -> None:
        self.ops, self.audit, self.path, self.clock = ops, audit, path, clock
        self.opened: list[tuple[IncidentRecord, list[SignInRecord]]] = []

    async def sign_in(self, user: str, ip: str, result: str = "success") -> SignInRecord:
        record = await self.ops.record_sign_in(
            self.snapshot.users[user], result, ip, "Mozilla/5.0", request_id="r"
        )
        assert record is not None
        return record

    async def events(self, prefix: str) -> list[dict[str, Any]]:
        self.audit.flush_sync()
        lines = self.path.read_bytes().splitlines() if self.path.exists() else []
        return [r for r in map(orjson.loads, lines) if r["event"].startswith(prefix)]


@pytest.fixture
async def harness(store: StateStore, tmp_path: Path) -> AsyncIterator[Harness]:
    snapshot = snapshot_for(
        tmp_path,
        {
            "incidents": {"window": "24h", "distinct_countries": 2},
            "trusted_login_ips": [
                {"cidr": "89.160.20.0/24", "scope": "example.org", "description": "Partner app"}
            ],
        },
    )
    clock = Clock()
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path, b"k" * 32)
    await audit.start()
    geoip = GeoIp(write_mmdb(tmp_path / "country.mmdb", COUNTRIES))
    ops = SecurityOps(store, audit, lambda: snapshot, geoip=geoip, clock=clock)
    h = Harness(ops, audit, audit_path, clock)
    h.snapshot = snapshot  # type: ignore[attr-defined]

    async def hook(incident: IncidentRecord, sign_ins: list[SignInRecord]) -> None:
        h.opened.append((incident, sign_ins))

    ops.on_incident_opened.append(hook)
    yield h
    await ops.close()
    await audit.close()


class TestSignInHistory:
    """Each attempt is kept with its country and the database that judged it."""

    async def test_attempts_are_recorded_with_country_and_source(self, harness: Harness) -> None:
        ok = await harness.sign_in("alice", GB)
        failed = await harness.sign_in("alice", "192.0.2.1", "failure")
        assert (ok.country, ok.result, ok.user_agent) == ("GB", "success", "Mozilla/5.0")
        assert ok.geoip_source and ok.geoip_source.startswith("GeoLite2-Country ")
        assert (failed.country, failed.result) == (None, "failure")
        views = await harness.ops.sign_ins("alice")
        assert [v.record for v in views] == [failed, ok]
        assert [v.counts for v in views] == [False, True]

    async def test_user_agents_are_cut_and_cannot_drive_a_terminal(self, harness: Harness) -> None:
        alice = harness.snapshot.users["alice"]  # type: ignore[attr-defined]
        agent = "\x1b[2J\x1b]0;pwned\x07Mozilla" + "x" * 500
        record = await harness.ops.record_sign_in(alice, "success", GB, agent)
        assert record is not None
        assert record.user_agent.startswith("\ufffd[2J\ufffd]0;pwned\ufffdMozilla")
        assert len(record.user_agent) == 256
        assert (await harness.ops.sign_ins("alice"))[0].record.user_agent == record.user_agent

    async def test_failures_never_open_incidents(self, harness: Harness) -> None:
        await harness.sign_in("alice", GB)
        await harness.sign_in("alice", SE, "failure")
        await harness.sign_in("alice", NO, "banned")
        assert await harness.ops.list_incidents() == []


class TestDetection:
    """Two countries within the window open one incident; later sign-ins add to it."""

    async def test_two_countries_open_an_incident_once(self, harness: Harness) -> None:
        first = await harness.sign_in("alice", GB)
        harness.clock.now += 3600
        second = await harness.sign_in("alice", NO)
        (incident,) = await harness.ops.list_incidents("open")
        assert (incident.user, incident.countries) == ("alice", ("GB", "NO"))
        assert [(i.id, [s.id for s in e]) for i, e in harness.opened] == [
            (incident.id, [first.id, second.id])
        ]
        (opened,) = await harness.events("incident.opened")
        assert opened["principal"] == "alice"
        assert opened["incident_id"] == incident.id
        assert [s["country"] for s in opened["sign_ins"]] == ["GB", "NO"]

        harness.clock.now += 60
        third = await harness.sign_in("alice", GB)
        assert len(harness.opened) == 1  # no second incident, no second notification
        detail = await harness.ops.incident(incident.id)
        assert [v.record.id for v in detail.sign_ins] == [first.id, second.id, third.id]
        assert detail.scope == "example.com"
        assert await harness.ops.open_incident_count() == 1

    async def test_the_window_edge(self, harness: Harness) -> None:
        await harness.sign_in("alice", GB)
        harness.clock.now += 86400 + 1  # just outside 24 h
        await harness.sign_in("alice", NO)
        assert await harness.ops.list_incidents() == []
        harness.clock.now += 86400 - 2  # the NO sign-in is still within 24 h
        await harness.sign_in("alice", GB)
        assert len(await harness.ops.list_incidents()) == 1

    async def test_special_use_and_unknown_addresses_never_count(self, harness: Harness) -> None:
        await harness.sign_in("alice", GB)
        for ip in ("10.0.0.1", "192.0.2.55", "2001:db8::1", "127.0.0.1", US):
            await harness.sign_in("alice", ip)  # US: not in this database
        assert await harness.ops.list_incidents() == []

    async def test_trusted_addresses_of_the_users_domain_do_not_count(
        self, harness: Harness
    ) -> None:
        # 89.160.20.0/24 is trusted for example.org by the policy: bob yes, alice no.
        await harness.sign_in("bob", GB)
        await harness.sign_in("bob", SE)
        assert await harness.ops.list_incidents(user="bob") == []
        await harness.ops.add_trusted_ip("81.2.69.10", "example.com", "Home", ADMIN)
        await harness.sign_in("alice", GB)
        await harness.sign_in("alice", SE)
        assert await harness.ops.list_incidents(user="alice") == []
        await harness.sign_in("alice", NO)
        (incident,) = await harness.ops.list_incidents(user="alice")
        assert incident.countries == ("NO", "SE")
        activity = await harness.ops.user_activity("alice")
        assert [(v.record.ip, v.trusted) for v in activity.sign_ins] == [
            (NO, False),
            (SE, False),
            (GB, True),
        ]

    async def test_a_hook_that_fails_does_not_undo_the_incident(self, harness: Harness) -> None:
        async def broken(incident: IncidentRecord, sign_ins: list[SignInRecord]) -> None:
            raise RuntimeError("mail server on fire")

        harness.ops.on_incident_opened.insert(0, broken)
        await harness.sign_in("alice", GB)
        await harness.sign_in("alice", NO)
        assert len(await harness.ops.list_incidents("open")) == 1
        assert len(harness.opened) == 1


class TestIncidentStates:
    """open -> acknowledged -> resolved (with a note), audited with the admin; then anew."""

    async def _incident(self, harness: Harness) -> IncidentRecord:
        await harness.sign_in("alice", GB)
        await harness.sign_in("alice", NO)
        (incident,) = await harness.ops.list_incidents()
        return incident

    async def test_acknowledge_resolve_and_a_new_incident(self, harness: Harness) -> None:
        incident = await self._incident(harness)
        acknowledged = await harness.ops.acknowledge(incident.id, ADMIN)
        assert (acknowledged.state, acknowledged.acknowledged_by) == ("acknowledged", "root")
        with pytest.raises(IncidentStateError, match="is acknowledged, not open"):
            await harness.ops.acknowledge(incident.id, ADMIN)
        with pytest.raises(IncidentStateError, match="a note is required") as caught:
            await harness.ops.resolve(incident.id, "  ", ADMIN)
        assert caught.value.field == "note"
        resolved = await harness.ops.resolve(incident.id, "Travelling, confirmed by phone", ADMIN)
        assert (resolved.state, resolved.note) == ("resolved", "Travelling, confirmed by phone")
        with pytest.raises(IncidentStateError, match="already resolved"):
            await harness.ops.resolve(incident.id, "again", ADMIN)
        with pytest.raises(NotFound, match="there is no incident 99999"):
            await harness.ops.resolve(99999, "x", ADMIN)

        ack, res = (
            await harness.events("incident.acknowledged"),
            await harness.events("incident.resolved"),
        )
        assert (ack[0]["principal"], ack[0]["by"], ack[0]["request_id"]) == (
            "root",
            "root",
            "req-1",
        )
        assert (res[0]["principal"], res[0]["note"]) == ("root", "Travelling, confirmed by phone")

        # What the admin judged does not reopen it: only sign-ins after the resolution count.
        harness.clock.now += 60
        await harness.sign_in("alice", GB)
        assert len(await harness.ops.list_incidents()) == 1
        harness.clock.now += 60
        await harness.sign_in("alice", SE)
        (new, old) = await harness.ops.list_incidents()
        assert (new.state, new.countries, old.id) == ("open", ("GB", "SE"), incident.id)
        assert len(harness.opened) == 2

    async def test_the_command_line_has_no_principal(self, harness: Harness) -> None:
        incident = await self._incident(harness)
        await harness.ops.resolve(incident.id, "known", Actor.cli())
        (record,) = await harness.events("incident.resolved")
        assert (record["principal"], record["by"]) == (None, "cli")


class TestTrustedIps:
    """Add, list, search and remove run-time entries next to the policy's read-only ones."""

    async def test_add_list_search_remove(self, harness: Harness) -> None:
        added = await harness.ops.add_trusted_ip(
            "2001:DB8:1::/48", "@Example.com", " Travel  router ", ADMIN
        )
        assert (added.cidr, added.scope, added.description, added.source, added.created_by) == (
            "2001:db8:1::/48",
            "example.com",
            "Travel router",
            "runtime",
            "root",
        )
        everything = await harness.ops.trusted_ips()
        assert [(e.cidr, e.source, e.removable) for e in everything] == [
            ("89.160.20.0/24", "policy", False),
            ("2001:db8:1::/48", "runtime", True),
        ]
        assert [e.cidr for e in await harness.ops.trusted_ips("example.org")] == ["89.160.20.0/24"]
        assert [e.cidr for e in await harness.ops.trusted_ips(search="89.160.20.77")] == [
            "89.160.20.0/24"
        ]
        assert [e.cidr for e in await harness.ops.trusted_ips(search="travel")] == [
            "2001:db8:1::/48"
        ]
        assert await harness.ops.trusted_ip_scopes() == ["example.com", "example.org"]
        removed = await harness.ops.remove_trusted_ip(added.id, ADMIN)  # type: ignore[arg-type]
        assert removed.cidr == "2001:db8:1::/48"
        with pytest.raises(NotFound):
            await harness.ops.remove_trusted_ip(added.id, ADMIN)  # type: ignore[arg-type]
        (add_event,) = await harness.events("trusted_ip.added")
        (remove_event,) = await harness.events("trusted_ip.removed")
        assert (add_event["principal"], add_event["cidr"], add_event["scope"]) == (
            "root",
            "2001:db8:1::/48",
            "example.com",
        )
        assert remove_event["trusted_ip_id"] == added.id

    @pytest.mark.parametrize(
        ("cidr", "scope", "description", "field", "message"),
        [
            ("10.0.0.1/24", "example.com", "x", "cidr", "did you mean 10.0.0.0/24?"),
            ("10.0.0.0/20", "example.com", "x", "cidr", "/20 is not allowed"),
            ("10.0.0.0/24", "not a domain", "x", "scope", "is not an email domain"),
            ("10.0.0.0/24", "example.com", " ", "description", "a description is required"),
            ("89.160.20.0/24", "example.org", "x", "cidr", "already trusted for example.org by"),
        ],
    )
    async def test_refusals_say_why(
        self, harness: Harness, cidr: str, scope: str, description: str, field: str, message: str
    ) -> None:
        with pytest.raises(InvalidTrustedIp) as caught:
            await harness.ops.add_trusted_ip(cidr, scope, description, ADMIN)
        assert caught.value.field == field
        assert message in caught.value.message
        assert await harness.events("trusted_ip.") == []

    async def test_the_same_entry_twice(self, harness: Harness) -> None:
        await harness.ops.add_trusted_ip("198.51.100.0/24", "example.com", "Office", ADMIN)
        with pytest.raises(InvalidTrustedIp, match=r"198\.51\.100\.0/24 is already trusted"):
            await harness.ops.add_trusted_ip("198.51.100.0/24", "example.com", "Again", ADMIN)


class TestUserActivity:
    """Logins and requests in the last 24 h, countries, active incident."""

    async def test_activity(self, harness: Harness) -> None:
        await harness.sign_in("alice", GB)
        harness.clock.now += 3600
        await harness.sign_in("alice", NO)
        await harness.sign_in("alice", SE, "failure")
        for _ in range(3):
            harness.ops.count_request("alice")
        await harness.ops.requests.flush()
        harness.ops.count_request("alice")  # not flushed yet: still shown
        activity = await harness.ops.user_activity("alice")
        assert (activity.logins_24h, activity.failures_24h, activity.requests_24h) == (2, 1, 4)
        assert activity.countries_24h == ("GB", "NO")
        assert (activity.known, activity.scope, activity.email) == (
            True,
            "example.com",
            "alice@example.com",
        )
        assert activity.incident is not None and activity.incident.state == "open"
        harness.clock.now += 86400 + 3600
        later = await harness.ops.user_activity("alice")
        assert (later.logins_24h, later.requests_24h, later.countries_24h) == (0, 0, ())
        assert len(later.sign_ins) == 3

    async def test_unknown_user(self, harness: Harness) -> None:
        activity = await harness.ops.user_activity("ghost")
        assert (activity.known, activity.scope, activity.sign_ins) == (False, None, [])


class TestRetention:
    """`retention:` purges old sign-ins, request counts and long-resolved incidents."""

    async def test_old_history_and_resolved_incidents_go(
        self, harness: Harness, store: StateStore
    ) -> None:
        from gateway.services.retention import run_retention

        day = 86400.0
        await harness.sign_in("alice", GB)
        harness.ops.count_request("alice")
        await harness.ops.requests.flush()
        await harness.sign_in("alice", NO)
        (incident,) = await harness.ops.list_incidents()
        await harness.ops.resolve(incident.id, "ok", ADMIN)
        harness.clock.now += 100 * day
        kept = await harness.sign_in("bob", GB)
        snapshot = harness.snapshot  # type: ignore[attr-defined]
        report = await run_retention(snapshot, store, harness.audit, now=harness.clock.now)
        # 90 days of login history (the default), 180 days for resolved incidents
        assert report.login_history == 3  # two sign-ins and one hour of requests
        assert report.incidents == 0
        assert [s.id for s in await store.sign_ins("bob")] == [kept.id]
        assert await store.sign_ins("alice") == []
        harness.clock.now += 81 * day
        report = await run_retention(snapshot, store, harness.audit, now=harness.clock.now)
        assert report.incidents == 1
        assert await harness.ops.list_incidents() == []


class TestRequestCounter:
    """The request path only touches a dict; counts land in their own hour, failures retry."""

    async def test_counts_are_filed_under_the_hour_they_happened_in(
        self, store: StateStore
    ) -> None:
        import asyncio
        import time

        from gateway.services.security.requests import HOUR, RequestCounter

        hour = int(T0) // HOUR
        start, base = time.monotonic(), hour * HOUR + HOUR - 0.15  # 150 ms before the hour

        def clock() -> float:
            return base + time.monotonic() - start

        counter = RequestCounter(store, clock)
        runner = asyncio.create_task(counter.run(interval=60))
        try:
            counter.add("alice")
            counter.add("alice")
            while clock() < base + 0.4:  # run() wakes at the boundary and files these
                await asyncio.sleep(0.02)
            counter.add("alice")
            assert counter.pending("alice", hour) == 1
        finally:
            runner.cancel()
        await counter.flush()
        assert await store.request_count("alice", hour) == 3
        assert await store.request_count("alice", hour + 1) == 1
        assert counter.pending("alice", hour) == 0

    async def test_a_failed_write_keeps_the_counts(self, store_backend) -> None:  # type: ignore[no-untyped-def]
        from gateway.services.security.requests import RequestCounter
        from gateway.services.store import StoreError

        store = await store_backend.open()
        counter = RequestCounter(store, lambda: T0)
        counter.add("bob")
        await store.close()
        with pytest.raises(StoreError):
            await counter.flush()
        assert counter.pending("bob", int(T0) // 3600) == 1
        again = await store_backend.open()
        counter._store = again
        await counter.flush()
        assert await again.request_count("bob", 0) == 1
