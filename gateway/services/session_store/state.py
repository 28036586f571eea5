"""`SessionStore` on the state store (`sessions.store: state`): SQLite, or PostgreSQL shared by
several instances. Expired rows are deleted when met and by the periodic purge."""

from __future__ import annotations

from typing import Any

from gateway.services.store import SessionRecord, StateStore


class StateSessionStore:
    """Sessions as rows of the state store's `sessions` table."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"StateSessionStore({self._store!r})"

    async def get(self, sid_hash: str, now: float, idle_timeout: float) -> SessionRecord | None:
        record = await self._store.session_get(sid_hash)
        if record is None:
            return None
        if now >= record.expires_at or now - record.last_seen > idle_timeout:
            await self._store.session_delete(sid_hash)
            return None
        return record

    async def create(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        created_at: float,
        expires_at: float,
        *,
        now: float,
        idle_timeout: float,
    ) -> None:
        await self._store.session_put(sid_hash, user, data, created_at, now, expires_at)

    async def update(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        *,
        now: float,
        idle_timeout: float,
    ) -> bool:
        return await self._store.session_update(sid_hash, user, data, now)

    async def delete(self, sid_hash: str) -> None:
        await self._store.session_delete(sid_hash)

    async def revoke_user(self, user: str) -> int:
        return await self._store.sessions_revoke_user(user)

    async def purge_expired(self, now: float) -> int:
        return await self._store.sessions_purge_expired(now)

    async def ping(self) -> None:
        await self._store.ping()

    async def close(self) -> None:
        """Nothing of its own: the state store is closed by whoever opened it."""
