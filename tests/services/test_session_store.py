"""The session store conformance suite: one set of tests, run against every implementation.

`state` on SQLite and on PostgreSQL (the state store's sessions) and Redis (a key prefix of the
test's own on the shared server). Times are near the real clock because Redis expires keys by
its own clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.services.session_store import SessionStore, StateSessionStore
from gateway.services.session_store.redis_sessions import RedisSessionStore
from gateway.services.store import SessionRecord, StoreUnavailable
from tests.redis_server import REDIS_URL, redis_prefix
from tests.services.conftest import _BACKENDS

IDLE = 600.0
DAY = 86400.0


async def _state(kind: str, tmp_path: Path) -> AsyncIterator[SessionStore]:
    async for backend in _BACKENDS[kind](tmp_path):
        yield StateSessionStore(await backend.open())


async def _redis(tmp_path: Path) -> AsyncIterator[SessionStore]:
    async with redis_prefix() as prefix:
        store = RedisSessionStore.open(REDIS_URL, prefix=prefix)
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SessionStore]:
    source = _redis(tmp_path) if request.param == "redis" else _state(request.param, tmp_path)
    async for store in source:
        yield store


async def make(
    sessions: SessionStore,
    sid: str,
    user: str | None = "alice",
    *,
    now: float,
    data: dict | None = None,
    max_age: float = DAY,
    idle: float = IDLE,
) -> None:
    await sessions.create(
        sid, user, data or {"stage": "done"}, now, now + max_age, now=now, idle_timeout=idle
    )


class TestReadWrite:
    async def test_create_then_get(self, sessions: SessionStore) -> None:
        now = time.time()
        data = {"stage": "done", "user": "alice", "n": 3, "tags": ["a", "é"], "x": None}
        await make(sessions, "s1", now=now, data=data)
        assert await sessions.get("s1", now + 1, IDLE) == SessionRecord(
            "s1", "alice", data, now, now, now + DAY
        )

    async def test_unknown_session_is_none(self, sessions: SessionStore) -> None:
        assert await sessions.get("nope", time.time(), IDLE) is None

    async def test_anonymous_session(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "anon", None, now=now, data={"csrf": "t"})
        record = await sessions.get("anon", now, IDLE)
        assert record is not None and record.user is None and record.data == {"csrf": "t"}

    async def test_update_changes_data_and_last_seen_only(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "s1", now=now, data={"a": 1})
        assert await sessions.update("s1", "alice", {"a": 2}, now=now + 5, idle_timeout=IDLE)
        assert await sessions.get("s1", now + 6, IDLE) == SessionRecord(
            "s1", "alice", {"a": 2}, now, now + 5, now + DAY
        )

    async def test_delete_twice_is_fine(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "s1", now=now)
        await sessions.delete("s1")
        await sessions.delete("s1")
        assert await sessions.get("s1", now, IDLE) is None


class TestExpiry:
    async def test_idle_session_is_gone(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "s1", now=now, idle=60)
        assert await sessions.get("s1", now + 59, 60) is not None
        assert await sessions.get("s1", now + 61, 60) is None

    async def test_activity_moves_the_idle_deadline(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "s1", now=now, idle=60)
        assert await sessions.update("s1", "alice", {}, now=now + 50, idle_timeout=60)
        assert await sessions.get("s1", now + 100, 60) is not None

    async def test_a_shorter_idle_timeout_applies_at_once(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "s1", now=now, idle=600)
        assert await sessions.get("s1", now + 120, 60) is None  # a reload shortened it

    async def test_absolute_expiry_ends_even_an_active_session(
        self, sessions: SessionStore
    ) -> None:
        now = time.time()
        await make(sessions, "s1", now=now, max_age=100, idle=60)
        assert await sessions.update("s1", "alice", {}, now=now + 90, idle_timeout=60)
        assert await sessions.get("s1", now + 99, 60) is not None
        assert await sessions.get("s1", now + 100, 60) is None

    async def test_expired_sessions_really_go(self, sessions: SessionStore) -> None:
        """By the real clock: Redis by its TTL, the state store by `get` and the purge."""
        now = time.time()
        await make(sessions, "short", now=now, idle=0.2)
        await make(sessions, "long", now=now)
        await asyncio.sleep(0.4)
        later = time.time()
        assert await sessions.get("short", later, 0.2) is None
        assert await sessions.purge_expired(later + 0.0) >= 0
        assert await sessions.get("long", later, IDLE) is not None
        assert not await sessions.update("short", "alice", {}, now=later, idle_timeout=IDLE)
        assert await sessions.get("short", later, IDLE) is None  # not revived by the update


class TestNeverRevived:
    """Update-only writes: a request in flight cannot bring back an ended session."""

    async def test_update_after_delete(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "s1", now=now)
        await sessions.delete("s1")
        assert not await sessions.update("s1", "alice", {"a": 3}, now=now + 1, idle_timeout=IDLE)
        assert await sessions.get("s1", now + 2, IDLE) is None

    async def test_update_after_revoke(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "s1", now=now)
        assert await sessions.revoke_user("alice") == 1
        assert not await sessions.update("s1", "alice", {}, now=now + 1, idle_timeout=IDLE)
        assert await sessions.get("s1", now + 2, IDLE) is None

    async def test_concurrent_updates_and_revoke(self, sessions: SessionStore) -> None:
        now = time.time()
        for i in range(5):
            await make(sessions, f"s{i}", now=now)
        updates = [
            sessions.update(f"s{i % 5}", "alice", {"i": i}, now=now + 1, idle_timeout=IDLE)
            for i in range(40)
        ]
        await asyncio.gather(*updates[:20], sessions.revoke_user("alice"), *updates[20:])
        for i in range(5):
            assert await sessions.get(f"s{i}", now + 2, IDLE) is None


class TestRevokeUser:
    async def test_ends_only_that_users_sessions(self, sessions: SessionStore) -> None:
        now = time.time()
        for sid, user in [("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("n1", None)]:
            await make(sessions, sid, user, now=now)
        assert await sessions.revoke_user("alice") == 2
        assert await sessions.revoke_user("alice") == 0
        assert await sessions.get("a1", now, IDLE) is None
        assert await sessions.get("a2", now, IDLE) is None
        assert await sessions.get("b1", now, IDLE) is not None
        assert await sessions.get("n1", now, IDLE) is not None

    async def test_a_session_that_changed_user_is_revoked_with_the_new_one(
        self, sessions: SessionStore
    ) -> None:
        now = time.time()
        await make(sessions, "s1", None, now=now)
        assert await sessions.update("s1", "bob", {}, now=now, idle_timeout=IDLE)
        assert await sessions.revoke_user("bob") == 1
        assert await sessions.get("s1", now, IDLE) is None

    async def test_signed_out_sessions_are_not_counted(self, sessions: SessionStore) -> None:
        now = time.time()
        await make(sessions, "a1", now=now)
        await make(sessions, "a2", now=now)
        await sessions.delete("a1")
        assert await sessions.revoke_user("alice") == 1


class TestRedis:
    """What only Redis has: TTLs, the per-user index, an unreachable server."""

    @pytest.fixture
    async def redis_store(self) -> AsyncIterator[tuple[RedisSessionStore, aioredis.Redis, str]]:
        async with redis_prefix() as prefix:
            store = RedisSessionStore.open(REDIS_URL, prefix=prefix)
            raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
            try:
                yield store, raw, prefix
            finally:
                await raw.aclose()
                await store.close()

    async def test_ttl_is_the_idle_or_absolute_deadline(self, redis_store) -> None:
        store, raw, prefix = redis_store
        now = time.time()
        await make(store, "idle", now=now, idle=100, max_age=DAY)
        await make(store, "abs", now=now, idle=100, max_age=50)
        assert 99_000 < await raw.pttl(f"{prefix}session:idle") <= 100_000
        assert 49_000 < await raw.pttl(f"{prefix}session:abs") <= 50_000
        index_ttl = await raw.pttl(f"{prefix}user:alice")
        assert 99_000 < index_ttl <= 101_000  # the latest member's deadline plus a second

    async def test_user_index_does_not_leak(self, redis_store) -> None:
        store, raw, prefix = redis_store
        now = time.time()
        for i in range(3):
            await make(store, f"old{i}", now=now, idle=0.2)
        assert await raw.zcard(f"{prefix}user:alice") == 3
        await asyncio.sleep(0.3)
        assert await raw.exists(*(f"{prefix}session:old{i}" for i in range(3))) == 0
        await make(store, "new", now=time.time(), idle=IDLE)
        assert await raw.zrange(f"{prefix}user:alice", 0, -1) == ["new"]  # stale ones pruned
        await store.delete("new")
        assert await raw.zcard(f"{prefix}user:alice") == 0
        # With no write at all, the index goes by its own TTL, a second after its last member.
        await make(store, "last", "carol", now=time.time(), idle=0.1)
        await asyncio.sleep(1.3)
        assert await raw.exists(f"{prefix}user:carol", f"{prefix}session:last") == 0

    async def test_only_its_own_prefix(self, redis_store) -> None:
        store, raw, prefix = redis_store
        await make(store, "s1", now=time.time())
        keys = sorted([k async for k in raw.scan_iter(match=f"{prefix}*")])
        assert keys == [f"{prefix}session:s1", f"{prefix}user:alice"]

    async def test_unreachable_redis_is_unavailable(self, tmp_path: Path) -> None:
        from tests.factories import free_port

        store = RedisSessionStore.open(f"redis://127.0.0.1:{free_port()}/0", prefix="x:")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"redis redis://127\.0\.0\.1"):
                await store.get("s1", time.time(), IDLE)
            with pytest.raises(StoreUnavailable):
                await store.ping()
            assert time.monotonic() - started < 3  # fails fast: the request path waits on it
        finally:
            await store.close()


class TestRedisTls:
    """rediss:// with the server's certificate checked and the password read from a file."""

    async def test_tls_and_password_file(self, tmp_path: Path) -> None:
        from tests.mail import self_signed
        from tests.redis_server import RedisServer

        cert, key = self_signed(tmp_path / "tls")
        (tmp_path / "redis.pw").write_text("s3cret-redis-password\n")
        server = RedisServer(tmp_path / "redis")
        server.extra = (
            *("--port", "0", "--tls-port", str(server.port), "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(cert), "--requirepass", "s3cret-redis-password"),
        )
        server.start()
        try:
            await server.wait_ready()
            url = f"rediss://127.0.0.1:{server.port}/0"
            good = RedisSessionStore.open(
                url, prefix="t:", password_file=tmp_path / "redis.pw", ca_file=cert
            )
            no_ca = RedisSessionStore.open(url, prefix="t:", password_file=tmp_path / "redis.pw")
            (tmp_path / "wrong.pw").write_text("wrong")
            wrong = RedisSessionStore.open(
                url, prefix="t:", password_file=tmp_path / "wrong.pw", ca_file=cert
            )
            plain = RedisSessionStore.open(f"redis://127.0.0.1:{server.port}/0", prefix="t:")
            try:
                now = time.time()
                await make(good, "s1", now=now)
                assert (await good.get("s1", now, IDLE)).user == "alice"  # type: ignore[union-attr]
                for refused in (no_ca, wrong, plain):  # unknown CA, bad password, no TLS
                    with pytest.raises(StoreUnavailable) as caught:
                        await refused.get("s1", now, IDLE)
                    assert "s3cret" not in str(caught.value)
            finally:
                for store in (good, no_ca, wrong, plain):
                    await store.close()
        finally:
            server.stop()
