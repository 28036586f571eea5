"""Server-side sessions in the session store (the state store or Redis), through aiohttp-session.

The cookie holds only a random id (256 bits); the store holds its sha256, so a copy of the
database does not yield usable cookies. Lifetimes come from the snapshot in force (`sessions:`
is hot-reloaded): `idle_timeout` since the last request, `max_age` since sign-in.

A sign-in moves through stages kept in the session: `password` (password accepted, more steps
due), then `done`. Only `done` reaches anything behind the gateway (gate.authenticate_dashboard).
Sessions are written only by the gateway's own views (aiohttp-session cannot save on streamed
responses); the proxy path only refreshes `last_seen`, directly in the store, at most once a minute.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp_session import AbstractStorage, Session, get_session

from gateway.context import RequestContext, context_of
from gateway.policy.snapshot import User
from gateway.services.session_store import SessionStore
from gateway.services.store import SessionRecord
from gateway.web.cookies import cookie_name, read_cookie

RECORD_KEY: Final = web.RequestKey("gateway.session_record", SessionRecord)
TOUCH_EVERY: Final = 60.0


def session_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class StoreSessionStorage(AbstractStorage):
    def __init__(self, store: Callable[[], SessionStore]) -> None:
        super().__init__(httponly=True, samesite="Lax", path="/")
        self._store_of = store  # the store is opened after the middleware is built

    @property
    def _store(self) -> SessionStore:
        return self._store_of()

    def load_cookie(self, request: web.Request) -> str | None:
        ctx = context_of(request)
        return read_cookie(request, ctx.snapshot.config.sessions.cookie_name, ctx.secure)

    async def load_session(self, request: web.Request) -> Session:
        sid = self.load_cookie(request)
        if not sid or len(sid) > 128:
            return Session(None, data=None, new=True)
        idle = context_of(request).snapshot.config.sessions.idle_timeout
        record = await self._store.get(session_hash(sid), time.time(), idle)
        if record is None:
            return Session(None, data=None, new=True)
        request[RECORD_KEY] = record
        return Session(
            sid, data={"created": int(record.created_at), "session": record.data}, new=False
        )

    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        ctx = context_of(request)
        settings = ctx.snapshot.config.sessions
        if session.empty:
            if session.identity:
                await self._store.delete(session_hash(session.identity))
            response.del_cookie(
                cookie_name(settings.cookie_name, ctx.secure), path="/", secure=ctx.secure
            )
            return
        now = time.time()
        if session.identity is None:
            session.set_new_identity(secrets.token_urlsafe(32))
            await self._store.create(
                session_hash(session.identity),
                session.get("user"),
                dict(session),
                float(session.created),
                float(session.created) + settings.max_age,
                now=now,
                idle_timeout=settings.idle_timeout,
            )
        elif not await self._store.update(
            session_hash(session.identity),
            session.get("user"),
            dict(session),
            now=now,
            idle_timeout=settings.idle_timeout,
        ):
            # Revoked or signed out while this request ran: it stays revoked.
            response.del_cookie(
                cookie_name(settings.cookie_name, ctx.secure), path="/", secure=ctx.secure
            )
            return
        response.set_cookie(
            cookie_name(settings.cookie_name, ctx.secure),
            session.identity,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=ctx.secure,
        )

    async def discard(self, request: web.Request) -> None:
        """Delete the current session record, e.g. before a sign-in issues a new id."""
        sid = self.load_cookie(request)
        if sid:
            await self._store.delete(session_hash(sid))

    async def touch(self, record: SessionRecord, idle_timeout: float) -> None:
        """Record activity; at most once a minute, and often enough for a short idle_timeout."""
        now = time.time()
        if now - record.last_seen >= min(TOUCH_EVERY, idle_timeout / 10):
            # Update-only: a revoked session is never recreated by a request in flight.
            await self._store.update(
                record.sid_hash, record.user, record.data, now=now, idle_timeout=idle_timeout
            )


async def fresh_session(request: web.Request) -> Session:
    """A new, empty session with a new id: the old record is deleted (no session fixation)."""
    from aiohttp_session import STORAGE_KEY, new_session

    storage: StoreSessionStorage = request[STORAGE_KEY]
    await storage.discard(request)
    return await new_session(request)


@dataclass(frozen=True, slots=True)
class Login:
    user: User
    auth: str  # "password" | "password+totp"
    session: Session


def login_state(session: Session, ctx: RequestContext) -> User | None:
    """The user a session belongs to, if the user still exists in the snapshot in force."""
    name = session.get("user")
    if not isinstance(name, str):
        return None
    return ctx.snapshot.users.get(name)


async def current_login(request: web.Request, ctx: RequestContext) -> Login | None:
    """A complete sign-in that the policy in force still accepts, or None.

    Re-checked on every request, so a user removed by a reload, or whose 2FA became required,
    is stopped at their very next request.
    """
    session = await get_session(request)
    if session.get("stage") != "done":
        return None
    user = login_state(session, ctx)
    if user is None:
        return None
    auth = session.get("auth")
    if auth not in ("password", "password+totp"):
        return None
    if user.requires_2fa and auth != "password+totp":
        return None
    if session.get("pwv") != password_version(user):
        return None  # the admin reset the password in users.yaml: sign in again
    record: SessionRecord | None = request.get(RECORD_KEY)
    if record is not None:
        from aiohttp_session import STORAGE_KEY

        await request[STORAGE_KEY].touch(record, ctx.snapshot.config.sessions.idle_timeout)
    return Login(user, auth, session)


def password_version(user: User) -> str:
    """A short tag of the users.yaml hash: changes when an admin resets the password there."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:12]


async def note_signed_in(request: web.Request, ctx: RequestContext) -> None:
    """Before an error page: who is signed in, so the page (and the audit record) can say so.

    Only requests that carry the session cookie pay for the store lookup.
    """
    cookie = read_cookie(request, ctx.snapshot.config.sessions.cookie_name, ctx.secure)
    if ctx.principal is not None or not cookie:
        return
    login = await current_login(request, ctx)
    if login is not None:
        ctx.principal, ctx.auth, ctx.email = login.user.name, login.auth, login.user.email
