"""The session store: one narrow async protocol for server-side sessions.

Sessions live either in the state store (`sessions.store: state`, the default: SQLite, or
PostgreSQL shared by several instances) or in Redis (`sessions.store: redis://...`), behind this
one protocol. The request path, sign-out, `gateway user revoke-sessions` and anything that
re-validates a long-lived connection (a WebSocket) use only these methods.

Rules every implementation follows:

- Ids are hashed by the caller (`sid_hash`); the store never sees a cookie value.
- `get` answers only live sessions: None for an unknown, ended or expired one. Expiry is idle
  (`now - last_seen > idle_timeout`) or absolute (`now >= expires_at`), judged with the caller's
  `now` and the `idle_timeout` in force (hot-reloaded), so re-validating a session is one call.
- `update` never recreates a session: a request still in flight when the session was revoked
  or signed out must not bring it back. It returns False when the session is gone.
- `revoke_user` ends every session of a user, for every instance sharing the store, before it
  returns.
- Errors are the state store's: `StoreUnavailable` when the backend cannot be reached (callers
  fail closed), `StoreError` for anything else.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from gateway.services.store import SessionRecord


@runtime_checkable
class SessionStore(Protocol):
    """Server-side sessions, shared by every worker and instance that uses the same backend."""

    async def get(self, sid_hash: str, now: float, idle_timeout: float) -> SessionRecord | None:
        """The live session, or None (unknown, ended, idle for longer than `idle_timeout`, or
        at or past `expires_at`)."""

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
        """Store a new session (last seen `now`); `data` must be JSON-serialisable."""

    async def update(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        *,
        now: float,
        idle_timeout: float,
    ) -> bool:
        """Change an existing session only and mark it seen at `now`; False when it is gone."""

    async def delete(self, sid_hash: str) -> None:
        """End the session (sign-out); unknown ids are ignored."""

    async def revoke_user(self, user: str) -> int:
        """End every session of `user`; returns how many there were."""

    async def purge_expired(self, now: float) -> int:
        """Housekeeping: forget sessions that expired; returns how many records went."""

    async def ping(self) -> None:
        """Return if the backend answers, else raise `StoreUnavailable`."""

    async def close(self) -> None:
        """Release connections (the state store itself is closed by its owner)."""
