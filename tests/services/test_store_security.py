"""Conformance suite for the security operations part of the state store: sign-in history,
requests per user and hour, incidents and trusted login IPs. Runs against every implementation
(the `store` fixture of conftest.py)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.services.store import SignInRecord, StateStore, StoreConflict

from .conftest import StoreBackend

T0 = 1_700_000_000.0


async def sign_in(
    store: StateStore, user: str, country: str | None, at: float, ip: str = "198.51.100.1"
) -> SignInRecord:
    return await store.sign_in_add(user, "success", ip, country, "test-db 1", "Firefox", at)


class TestSignIns:
    """Sign-in attempts are kept per user, newest first, filtered by time and result."""

    async def test_add_returns_the_record_with_its_id(self, store: StateStore) -> None:
        record = await store.sign_in_add(
            "alice", "success", "203.0.113.9", "NL", "GeoLite2-Country 2026-11-01", "UA/1", T0
        )
        assert record.id > 0
        assert record == SignInRecord(
            record.id,
            "alice",
            "success",
            "203.0.113.9",
            "NL",
            "GeoLite2-Country 2026-11-01",
            "UA/1",
            T0,
        )
        assert await store.sign_ins("alice") == [record]

    async def test_newest_first_with_limit_since_and_result(self, store: StateStore) -> None:
        first = await sign_in(store, "alice", "NL", T0)
        failed = await store.sign_in_add("alice", "failure", None, None, None, "", T0 + 10)
        last = await sign_in(store, "alice", "DE", T0 + 20)
        await sign_in(store, "bob", "FR", T0 + 30)
        assert await store.sign_ins("alice") == [last, failed, first]
        assert await store.sign_ins("alice", limit=1) == [last]
        assert await store.sign_ins("alice", since=T0 + 10) == [last, failed]
        assert await store.sign_ins("alice", result="success") == [last, first]
        assert await store.sign_ins("alice", since=T0 + 5, result="success") == [last]
        assert await store.sign_ins("nobody") == []

    async def test_purge_removes_only_older_rows(self, store: StateStore) -> None:
        await sign_in(store, "alice", "NL", T0)
        kept = await sign_in(store, "alice", "NL", T0 + 100)
        assert await store.sign_ins_purge(T0 + 100) == 1
        assert await store.sign_ins("alice") == [kept]


class TestRequestCounts:
    """Requests are counted per user and hour; counts from several writers add up."""

    async def test_counts_add_up_per_user_and_hour(self, store: StateStore) -> None:
        hour = int(T0 // 3600)
        await store.request_counts_add({("alice", hour): 3, ("bob", hour): 1})
        await store.request_counts_add({("alice", hour): 2, ("alice", hour + 1): 4})
        await store.request_counts_add({})
        assert await store.request_count("alice", hour) == 9
        assert await store.request_count("alice", hour + 1) == 4
        assert await store.request_count("bob", hour) == 1
        assert await store.request_count("carol", hour) == 0

    async def test_concurrent_writers_on_separate_connections_lose_nothing(
        self, store_backend: StoreBackend
    ) -> None:
        stores = [await store_backend.open() for _ in range(3)]
        hour = int(T0 // 3600)

        async def flush(store: StateStore) -> None:
            for _ in range(10):
                await store.request_counts_add({("alice", hour): 1, ("bob", hour): 2})

        await asyncio.gather(*(flush(s) for s in stores))
        assert await stores[0].request_count("alice", hour) == 30
        assert await stores[0].request_count("bob", hour) == 60

    async def test_purge_removes_old_hours(self, store: StateStore) -> None:
        hour = int(T0 // 3600)
        await store.request_counts_add({("alice", hour): 1, ("alice", hour + 1): 1})
        assert await store.request_counts_purge(hour + 1) == 1
        assert await store.request_count("alice", 0) == 1


class TestIncidents:
    """One active incident per user, extended by later evidence, with its state changes."""

    async def test_open_then_extend(self, store: StateStore) -> None:
        a = await sign_in(store, "alice", "NL", T0)
        b = await sign_in(store, "alice", "US", T0 + 60)
        first = await store.incident_open_or_extend("alice", T0 + 60, [a, b])
        assert first.opened and first.added == 2
        incident = first.incident
        assert incident is not None
        assert (incident.user, incident.state) == ("alice", "open")
        assert incident.countries == ("NL", "US")
        assert incident.opened_at == T0 + 60

        c = await sign_in(store, "alice", "BR", T0 + 120)
        second = await store.incident_open_or_extend("alice", T0 + 120, [a, b, c])
        assert not second.opened and second.added == 1
        assert second.incident is not None and second.incident.id == incident.id
        assert second.incident.countries == ("BR", "NL", "US")
        assert second.incident.updated_at == T0 + 120
        assert await store.incident_sign_ins(incident.id) == [a, b, c]
        assert await store.incident_get(incident.id) == second.incident

    async def test_extend_without_create_needs_an_active_incident(self, store: StateStore) -> None:
        a = await sign_in(store, "alice", "NL", T0)
        update = await store.incident_open_or_extend("alice", T0, [a], create=False)
        assert update.incident is None and not update.opened and update.added == 0
        assert await store.incidents() == []

    async def test_acknowledge_and_resolve(self, store: StateStore) -> None:
        a = await sign_in(store, "alice", "NL", T0)
        incident = (await store.incident_open_or_extend("alice", T0, [a])).incident
        assert incident is not None
        assert await store.incident_acknowledge(incident.id, "root", T0 + 1)
        assert not await store.incident_acknowledge(incident.id, "root", T0 + 2)
        acknowledged = await store.incident_get(incident.id)
        assert acknowledged is not None
        assert (acknowledged.state, acknowledged.acknowledged_by) == ("acknowledged", "root")
        assert acknowledged.acknowledged_at == T0 + 1
        assert await store.incident_resolve(incident.id, "root", T0 + 3, "travelling")
        assert not await store.incident_resolve(incident.id, "root", T0 + 4, "again")
        resolved = await store.incident_get(incident.id)
        assert resolved is not None
        assert (resolved.state, resolved.resolved_by, resolved.note) == (
            "resolved",
            "root",
            "travelling",
        )
        assert resolved.resolved_at == T0 + 3
        assert not await store.incident_acknowledge(incident.id, "root", T0 + 5)

    async def test_an_open_incident_resolves_directly(self, store: StateStore) -> None:
        a = await sign_in(store, "alice", "NL", T0)
        incident = (await store.incident_open_or_extend("alice", T0, [a])).incident
        assert incident is not None
        assert await store.incident_resolve(incident.id, "root", T0 + 1, "known")

    async def test_a_new_incident_after_resolving(self, store: StateStore) -> None:
        a = await sign_in(store, "alice", "NL", T0)
        old = (await store.incident_open_or_extend("alice", T0, [a])).incident
        assert old is not None
        await store.incident_resolve(old.id, "root", T0 + 1, "ok")
        b = await sign_in(store, "alice", "JP", T0 + 2)
        new = await store.incident_open_or_extend("alice", T0 + 2, [b])
        assert new.opened and new.incident is not None and new.incident.id != old.id
        assert new.incident.countries == ("JP",)
        assert await store.incident_sign_ins(old.id) == [a]

    async def test_list_filters_and_counts(self, store: StateStore) -> None:
        ids = {}
        for i, user in enumerate(["alice", "bob", "carol"]):
            e = await sign_in(store, user, "NL", T0 + i)
            incident = (await store.incident_open_or_extend(user, T0 + i, [e])).incident
            assert incident is not None
            ids[user] = incident.id
        await store.incident_acknowledge(ids["bob"], "root", T0 + 10)
        await store.incident_resolve(ids["carol"], "root", T0 + 10, "fine")
        assert [i.user for i in await store.incidents()] == ["carol", "bob", "alice"]
        assert [i.user for i in await store.incidents(state="open")] == ["alice"]
        assert [i.user for i in await store.incidents(user="bob")] == ["bob"]
        assert [i.user for i in await store.incidents(limit=2)] == ["carol", "bob"]
        assert await store.incidents(state="open", user="bob") == []
        assert await store.incident_counts() == {"open": 1, "acknowledged": 1, "resolved": 1}
        assert await store.incident_get(999_999) is None
        assert await store.incident_sign_ins(999_999) == []

    async def test_concurrent_openers_on_separate_connections_open_one(
        self, store_backend: StoreBackend
    ) -> None:
        stores = [await store_backend.open() for _ in range(4)]
        evidence = [await sign_in(stores[0], "alice", c, T0 + i) for i, c in enumerate("ABCD")]
        evidence = [
            SignInRecord(e.id, e.user, e.result, e.ip, c + "X", e.geoip_source, e.user_agent, e.at)
            for e, c in zip(evidence, "ABCD", strict=True)
        ]
        updates = await asyncio.gather(
            *(
                s.incident_open_or_extend("alice", T0 + 10, [evidence[i]])
                for i, s in enumerate(stores)
            )
        )
        assert sum(u.opened for u in updates) == 1
        assert len({u.incident.id for u in updates if u.incident}) == 1
        (incident,) = await stores[0].incidents()
        assert incident.countries == ("AX", "BX", "CX", "DX")
        assert len(await stores[0].incident_sign_ins(incident.id)) == 4

    async def test_purge_removes_incidents_resolved_long_ago(self, store: StateStore) -> None:
        a = await sign_in(store, "alice", "NL", T0)
        old = (await store.incident_open_or_extend("alice", T0, [a])).incident
        b = await sign_in(store, "bob", "NL", T0)
        active = (await store.incident_open_or_extend("bob", T0, [b])).incident
        assert old is not None and active is not None
        await store.incident_resolve(old.id, "root", T0 + 10, "ok")
        assert await store.incidents_purge(T0 + 10) == 0
        assert await store.incidents_purge(T0 + 11) == 1
        assert await store.incident_get(old.id) is None
        assert await store.incident_sign_ins(old.id) == []
        assert await store.incident_get(active.id) is not None


class TestTrustedIps:
    """Run-time trusted login IPs: one entry per network and scope, listed and removed."""

    async def test_add_list_get_remove(self, store: StateStore) -> None:
        a = await store.trusted_ip_add("66.249.0.0/17", "example.com", "Google", "root", T0)
        b = await store.trusted_ip_add("203.0.113.7", "example.org", "Office", "cli", T0 + 1)
        c = await store.trusted_ip_add("2001:db8::/48", "example.com", "VPN", "root", T0 + 2)
        assert (a.cidr, a.scope, a.description, a.created_by, a.created_at) == (
            "66.249.0.0/17",
            "example.com",
            "Google",
            "root",
            T0,
        )
        assert await store.trusted_ips() == [a, c, b]
        assert await store.trusted_ips("example.com") == [a, c]
        assert await store.trusted_ips("nowhere.test") == []
        assert await store.trusted_ip_get(b.id) == b
        assert await store.trusted_ip_remove(a.id) == a
        assert await store.trusted_ip_remove(a.id) is None
        assert await store.trusted_ip_get(a.id) is None
        assert await store.trusted_ips() == [c, b]

    async def test_same_network_twice_in_one_scope_conflicts(self, store: StateStore) -> None:
        await store.trusted_ip_add("203.0.113.0/24", "example.com", "Office", "root", T0)
        with pytest.raises(StoreConflict):
            await store.trusted_ip_add("203.0.113.0/24", "example.com", "Again", "root", T0)
        other = await store.trusted_ip_add("203.0.113.0/24", "example.org", "Office", "root", T0)
        assert other.scope == "example.org"
