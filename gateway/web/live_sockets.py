"""Open WebSockets end when the access behind them ends (docs/http.md, request path step 6).

An HTTP request is checked once; a WebSocket lives on, so what let it in is checked again:

- sign-out in this process: `end_session(sid_hash)`, at once;
- a reload: `recheck(snapshot)` runs steps 3-5 again for every open socket against the new
  snapshot (user or service account removed, grant withdrawn or changed to another role, 2FA
  now required, password reset in users.yaml, allowlist no longer containing the client) and
  ends those that would not be let in now;
- anything done elsewhere (`gateway user revoke-sessions`, sign-out on another instance sharing
  the session store, expiry): `revalidate(store)` every `REVALIDATE_EVERY` seconds looks each
  dashboard socket's session up in the store and ends those whose session is gone or expired.

Decisions: a role change ends the socket even when the new role would allow the path (the
backend accepted the socket under the old role); an open socket counts as activity, so the
session's idle timeout does not end it, its `max_age` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.policy import decide
from gateway.policy.snapshot import Snapshot
from gateway.services.store import SessionRecord

REVALIDATE_EVERY: Final = 5.0
TOUCH_EVERY: Final = 60.0  # as gateway.web.sessions: last-seen moves on at most once a minute
CLOSE_POLICY: Final = 1008  # RFC 6455: policy violation


class SessionLookup(Protocol):
    """The part of the session store (gateway.services.session_store) re-validation needs."""

    async def get(self, sid_hash: str, now: float, idle_timeout: float) -> SessionRecord | None: ...

    async def update(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        *,
        now: float,
        idle_timeout: float,
    ) -> bool: ...


@dataclass(eq=False, slots=True)
class LiveSocket:
    """What let one WebSocket in; `ended` is set, with a reason, when that no longer holds."""

    principal: str
    auth: str  # "password" | "password+totp" | "api-key"
    app: str
    role: str | None
    method: str
    path: str
    client_addr: tuple[int, int] | None
    sid_hash: str | None = None  # dashboard sessions only
    password_version: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()


def still_allowed(snapshot: Snapshot, live: LiveSocket, now: float) -> str | None:
    """None if the socket would be let in under `snapshot`, else why not (steps 3-5)."""
    from gateway.web.sessions import password_version

    app = snapshot.apps.get(live.app)
    if app is None:
        return f"app {live.app!r} was removed"
    surface = snapshot.surfaces[app.surface]
    if not decide.check_allowlist(surface, snapshot.protection_enabled, live.client_addr).allowed:
        return "the client IP is no longer in the surface allowlist"
    if live.auth == "api-key":
        account = snapshot.accounts.get(live.principal)
        if account is None:
            return f"service account {live.principal!r} was removed"
        verdict = decide.check_account(account, live.client_addr, now)
        if not verdict.allowed:
            return verdict.reason
        grants = account.grants
    else:
        user = snapshot.users.get(live.principal)
        if user is None:
            return f"user {live.principal!r} was removed"
        if user.requires_2fa and live.auth != "password+totp":
            return "two-factor authentication is now required"
        if live.password_version is not None and password_version(user) != live.password_version:
            return "the password was reset in the policy"
        grants = user.grants
    verdict, role = decide.authorize(snapshot, grants, app, live.method, live.path)
    if not verdict.allowed:
        return verdict.reason
    if role != live.role:
        return f"the role on {live.app!r} changed from {live.role!r} to {role!r}"
    return None


class LiveSockets:
    """The open WebSockets of this process."""

    def __init__(self) -> None:
        self._open: set[LiveSocket] = set()

    def __len__(self) -> int:
        return len(self._open)

    @contextlib.contextmanager
    def track(self, live: LiveSocket):  # type: ignore[no-untyped-def]
        self._open.add(live)
        try:
            yield live
        finally:
            self._open.discard(live)

    def end_session(self, sid_hash: str, reason: str = "signed out") -> int:
        ended = [s for s in self._open if s.sid_hash == sid_hash]
        for live in ended:
            live.end(reason)
        return len(ended)

    def end_principal(self, principal: str, reason: str) -> int:
        """E.g. an admin ended all of a user's sessions in this process."""
        ended = [s for s in self._open if s.principal == principal]
        for live in ended:
            live.end(reason)
        return len(ended)

    def recheck(self, snapshot: Snapshot) -> int:
        """After a reload: end every socket the new snapshot would not let in."""
        now = time.time()
        count = 0
        for live in list(self._open):
            why = still_allowed(snapshot, live, now)
            if why is not None:
                live.end(why)
                count += 1
        return count

    async def revalidate(self, sessions: SessionLookup, idle_timeout: float) -> int:
        """End dashboard sockets whose session is gone from the (maybe shared) session store.

        One `get` per socket, judged without the idle timeout (the open socket is activity);
        the session's last-seen time is moved on as a request would, so the session store
        (Redis expires idle sessions by itself) keeps it while the socket is open.
        """
        now = time.time()
        count = 0
        touch_every = min(TOUCH_EVERY, idle_timeout / 10)
        for live in [s for s in self._open if s.sid_hash is not None and not s.ended.is_set()]:
            assert live.sid_hash is not None
            record = await sessions.get(live.sid_hash, now, math.inf)
            if record is None:
                live.end("the session ended")
                count += 1
            elif now - record.last_seen >= touch_every:
                await sessions.update(
                    record.sid_hash, record.user, record.data, now=now, idle_timeout=idle_timeout
                )
        return count
