"""`StateStore` on SQLite through aiosqlite: the default, embedded, one file.

Several worker processes may open the same file. What makes that safe:

- WAL journal: readers never block the writer and the writer never blocks readers.
- `busy_timeout`: a writer waits (in aiosqlite's thread, not the event loop) for another
  process's write to finish instead of failing at once with "database is locked".
- Every multi-statement write starts with BEGIN IMMEDIATE, taking the write lock up front: a
  deferred transaction that reads and then writes can fail with SQLITE_BUSY when another
  process wrote in between, and the busy timeout cannot help there.
- Single-use operations are one conditional UPDATE whose row count says who won.
- synchronous=NORMAL (the recommended setting with WAL): a commit survives a crash of the
  process; a power loss may lose the last transactions, never corrupt the file.

Within one process a store holds one connection; an asyncio lock keeps each operation (and
each transaction) whole, since coroutines sharing a connection would otherwise share its
transaction.
"""

# Names such as PASSWORD_SET hold SQL about passwords, not passwords (S105); f-strings below
# only join constant column lists into constant SQL (S608):
# ruff: noqa: S105, S608
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

from .base import (
    AttemptLimit,
    AttemptReservation,
    AuditHead,
    IncidentRecord,
    IncidentUpdate,
    OutboxRecord,
    OutboxStats,
    PasswordRecord,
    RecoveryCodeRecord,
    SessionRecord,
    SigningKeyRecord,
    SignInRecord,
    StoreConflict,
    StoreError,
    StoreUnavailable,
    SystemMessageRecord,
    TotpRecord,
    TrustedIpRecord,
    merge_countries,
)
from .outbox_rules import OUTBOX_STATES, coalesced_not_before
from .schema import load_migrations, pending_migrations, split_sqlite_script
from .url import MEMORY

DIALECT = "sqlite"
DEFAULT_BUSY_TIMEOUT = 10.0
# Primary result codes meaning "the database cannot be used right now" rather than a bug.
UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)

# -- connection set-up and migrations ---------------------------------------------------------

PRAGMA_BUSY_TIMEOUT = "PRAGMA busy_timeout = {ms:d}"
PRAGMA_JOURNAL_WAL = "PRAGMA journal_mode = WAL"
PRAGMA_SYNCHRONOUS = "PRAGMA synchronous = NORMAL"
PRAGMA_FOREIGN_KEYS = "PRAGMA foreign_keys = ON"
BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
PING = "SELECT 1"

CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)"""
SELECT_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM schema_version"
SELECT_APPLIED_VERSIONS = "SELECT version FROM schema_version"
INSERT_SCHEMA_VERSION = "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)"

# -- sessions ---------------------------------------------------------------------------------

SESSION_GET = """
SELECT sid_hash, username, data, created_at, last_seen, expires_at
FROM sessions WHERE sid_hash = ?"""
SESSION_PUT = """
INSERT INTO sessions (sid_hash, username, data, created_at, last_seen, expires_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (sid_hash) DO UPDATE SET
    username = excluded.username, data = excluded.data, created_at = excluded.created_at,
    last_seen = excluded.last_seen, expires_at = excluded.expires_at"""
SESSION_UPDATE = "UPDATE sessions SET username = ?, data = ?, last_seen = ? WHERE sid_hash = ?"
SESSION_DELETE = "DELETE FROM sessions WHERE sid_hash = ?"
SESSIONS_REVOKE_USER = "DELETE FROM sessions WHERE username = ?"
SESSIONS_PURGE_EXPIRED = "DELETE FROM sessions WHERE expires_at <= ?"

# -- login regulation -------------------------------------------------------------------------

LOGIN_FAILURE_ADD = "INSERT INTO login_failures (subject, at) VALUES (?, ?)"
LOGIN_FAILURES_SINCE = "SELECT COUNT(*) FROM login_failures WHERE subject = ? AND at >= ?"
BAN_SET = """
INSERT INTO login_bans (subject, until) VALUES (?, ?)
ON CONFLICT (subject) DO UPDATE SET until = excluded.until"""
BAN_GET = "SELECT until FROM login_bans WHERE subject = ?"
LOGIN_FAILURES_CLEAR = "DELETE FROM login_failures WHERE subject = ?"
BAN_CLEAR = "DELETE FROM login_bans WHERE subject = ?"
LOGIN_FAILURES_PURGE = "DELETE FROM login_failures WHERE at < ?"
BANS_PURGE = "DELETE FROM login_bans WHERE until < ?"
LOGIN_FAILURE_DELETE = "DELETE FROM login_failures WHERE id = ?"
BANS_ACTIVE = "SELECT subject, until FROM login_bans WHERE until > ? ORDER BY subject"

# -- audit chain heads ------------------------------------------------------------------------

AUDIT_HEAD_PUT = """
INSERT INTO audit_heads (chain, seq, hash, at) VALUES (?, ?, ?, ?)
ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at
WHERE excluded.seq > audit_heads.seq"""
AUDIT_HEADS = "SELECT chain, seq, hash, at FROM audit_heads ORDER BY chain"

# -- signing keys -----------------------------------------------------------------------------

SIGNING_KEYS = """
SELECT kid, algorithm, sealed_private, public_jwk, created_at, retired_at
FROM signing_keys ORDER BY created_at, kid"""
SIGNING_KEY_ADD = """
INSERT INTO signing_keys (kid, algorithm, sealed_private, public_jwk, created_at, retired_at)
VALUES (?, ?, ?, ?, ?, ?)"""
SIGNING_KEY_RETIRE = "UPDATE signing_keys SET retired_at = ? WHERE kid = ? AND retired_at IS NULL"
SIGNING_KEY_DELETE = "DELETE FROM signing_keys WHERE kid = ?"

# -- TOTP and recovery codes ------------------------------------------------------------------

TOTP_GET = "SELECT username, sealed_secret, enrolled_at, last_step FROM totp WHERE username = ?"
TOTP_SET = """
INSERT INTO totp (username, sealed_secret, enrolled_at, last_step) VALUES (?, ?, ?, -1)
ON CONFLICT (username) DO UPDATE SET
    sealed_secret = excluded.sealed_secret, enrolled_at = excluded.enrolled_at, last_step = -1"""
TOTP_ENROLL = """
INSERT INTO totp (username, sealed_secret, enrolled_at, last_step) VALUES (?, ?, ?, -1)
ON CONFLICT (username) DO NOTHING"""
TOTP_DELETE = "DELETE FROM totp WHERE username = ?"
TOTP_CLAIM_STEP = "UPDATE totp SET last_step = ? WHERE username = ? AND last_step < ?"
RECOVERY_CODES_DELETE = "DELETE FROM recovery_codes WHERE username = ?"
RECOVERY_CODE_ADD = "INSERT INTO recovery_codes (username, code_hash, created_at) VALUES (?, ?, ?)"
RECOVERY_CODES = "SELECT id, code_hash, used_at FROM recovery_codes WHERE username = ? ORDER BY id"
RECOVERY_CODE_USE = """
UPDATE recovery_codes SET used_at = ? WHERE id = ? AND username = ? AND used_at IS NULL"""

# -- passwords --------------------------------------------------------------------------------

PASSWORD_GET = """
SELECT username, hash, base_hash, changed_at, must_change FROM passwords WHERE username = ?"""
PASSWORD_SET = """
INSERT INTO passwords (username, hash, base_hash, changed_at, must_change) VALUES (?, ?, ?, ?, 0)
ON CONFLICT (username) DO UPDATE SET
    hash = excluded.hash, base_hash = excluded.base_hash, changed_at = excluded.changed_at,
    must_change = 0"""
PASSWORD_HISTORY_ADD = "INSERT INTO password_history (username, hash, changed_at) VALUES (?, ?, ?)"
PASSWORD_HISTORY = """
SELECT hash FROM password_history WHERE username = ?
ORDER BY changed_at DESC, id DESC LIMIT ?"""
PASSWORD_EXPIRE = """
INSERT INTO passwords (username, hash, base_hash, changed_at, must_change)
VALUES (?, NULL, NULL, NULL, 1)
ON CONFLICT (username) DO UPDATE SET must_change = 1"""
PASSWORD_SEEN_ADD = """
INSERT INTO password_seen (username, base_hash, first_seen) VALUES (?, ?, ?)
ON CONFLICT (username, base_hash) DO NOTHING"""
PASSWORD_SEEN_GET = "SELECT first_seen FROM password_seen WHERE username = ? AND base_hash = ?"

# -- sign-in history and requests per hour ----------------------------------------------------

SIGN_IN_COLUMNS = "id, username, result, ip, country, geoip_source, user_agent, at"
SIGN_IN_ADD = """
INSERT INTO sign_ins (username, result, ip, country, geoip_source, user_agent, at)
VALUES (?, ?, ?, ?, ?, ?, ?)"""
SIGN_INS = f"""
SELECT {SIGN_IN_COLUMNS} FROM sign_ins
WHERE username = ? AND (? IS NULL OR at >= ?) AND (? IS NULL OR result = ?)
ORDER BY at DESC, id DESC LIMIT ?"""
SIGN_INS_PURGE = "DELETE FROM sign_ins WHERE at < ?"
REQUEST_COUNT_ADD = """
INSERT INTO request_counts (username, hour, count) VALUES (?, ?, ?)
ON CONFLICT (username, hour) DO UPDATE SET count = request_counts.count + excluded.count"""
REQUEST_COUNT = """
SELECT COALESCE(SUM(count), 0) FROM request_counts WHERE username = ? AND hour >= ?"""
REQUEST_COUNTS_PURGE = "DELETE FROM request_counts WHERE hour < ?"

# -- incidents --------------------------------------------------------------------------------

INCIDENT_COLUMNS = """
id, username, state, countries, opened_at, updated_at, acknowledged_at, acknowledged_by,
resolved_at, resolved_by, note"""
INCIDENT_OPEN = """
INSERT INTO incidents (username, state, countries, opened_at, updated_at)
VALUES (?, 'open', '', ?, ?)
ON CONFLICT (username) WHERE state <> 'resolved' DO NOTHING"""
INCIDENT_ACTIVE = f"""
SELECT {INCIDENT_COLUMNS} FROM incidents WHERE username = ? AND state <> 'resolved'"""
INCIDENT_EVIDENCE_ADD = """
INSERT INTO incident_sign_ins
    (incident_id, sign_in_id, username, result, ip, country, geoip_source, user_agent, at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (incident_id, sign_in_id) DO NOTHING"""
INCIDENT_SET_COUNTRIES = "UPDATE incidents SET countries = ?, updated_at = ? WHERE id = ?"
INCIDENT_GET = f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?"
INCIDENTS = f"""
SELECT {INCIDENT_COLUMNS} FROM incidents
WHERE (? IS NULL OR state = ?) AND (? IS NULL OR username = ?)
ORDER BY opened_at DESC, id DESC LIMIT ?"""
INCIDENT_SIGN_INS = """
SELECT sign_in_id, username, result, ip, country, geoip_source, user_agent, at
FROM incident_sign_ins WHERE incident_id = ? ORDER BY at, sign_in_id"""
INCIDENT_COUNTS = "SELECT state, COUNT(*) FROM incidents GROUP BY state"
INCIDENT_ACKNOWLEDGE = """
UPDATE incidents SET state = 'acknowledged', acknowledged_at = ?, acknowledged_by = ?,
    updated_at = ?
WHERE id = ? AND state = 'open'"""
INCIDENT_RESOLVE = """
UPDATE incidents SET state = 'resolved', resolved_at = ?, resolved_by = ?, note = ?,
    updated_at = ?
WHERE id = ? AND state <> 'resolved'"""
INCIDENTS_PURGE_EVIDENCE = """
DELETE FROM incident_sign_ins WHERE incident_id IN
    (SELECT id FROM incidents WHERE state = 'resolved' AND resolved_at < ?)"""
INCIDENTS_PURGE = "DELETE FROM incidents WHERE state = 'resolved' AND resolved_at < ?"

# -- trusted login IPs ------------------------------------------------------------------------

TRUSTED_IP_COLUMNS = "id, cidr, scope, description, created_at, created_by"
TRUSTED_IP_ADD = f"""
INSERT INTO trusted_ips (cidr, scope, description, created_at, created_by)
VALUES (?, ?, ?, ?, ?) RETURNING {TRUSTED_IP_COLUMNS}"""
TRUSTED_IPS = f"""
SELECT {TRUSTED_IP_COLUMNS} FROM trusted_ips WHERE (? IS NULL OR scope = ?) ORDER BY scope, id"""
TRUSTED_IP_GET = f"SELECT {TRUSTED_IP_COLUMNS} FROM trusted_ips WHERE id = ?"
TRUSTED_IP_REMOVE = f"DELETE FROM trusted_ips WHERE id = ? RETURNING {TRUSTED_IP_COLUMNS}"

# -- meta -------------------------------------------------------------------------------------

META_GET = "SELECT value FROM meta WHERE key = ?"
META_PUT = """
INSERT INTO meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value"""


# -- notification outbox ----------------------------------------------------------------------

OUTBOX_LAST_DUE = "SELECT MAX(not_before) FROM outbox WHERE coalesce_key = ?"
OUTBOX_ADD = """
INSERT INTO outbox (kind, coalesce_key, dedupe_key, recipients, payload, created_at, not_before)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING id"""
OUTBOX_NEXT_DUE = """
SELECT id, coalesce_key FROM outbox
WHERE state = 'pending' AND not_before <= ? AND (lease_until IS NULL OR lease_until <= ?)
ORDER BY not_before, id LIMIT 1"""
OUTBOX_CLAIM = """
UPDATE outbox SET lease_owner = ?, lease_until = ?
WHERE state = 'pending' AND not_before <= ? AND (lease_until IS NULL OR lease_until <= ?)
  AND (id = ? OR coalesce_key = ?)
RETURNING
    id, kind, coalesce_key, dedupe_key, recipients, payload, created_at, not_before,
    state, attempts, message_id, last_error, done_at"""
OUTBOX_RETRY = """
UPDATE outbox SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1,
    not_before = ?, last_error = ?, recipients = COALESCE(?, recipients)
WHERE id IN (SELECT value FROM json_each(?)) AND lease_owner = ? AND state = 'pending'"""
OUTBOX_FINISH = """
UPDATE outbox SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1,
    state = ?, done_at = ?, message_id = ?, last_error = COALESCE(?, last_error)
WHERE id IN (SELECT value FROM json_each(?)) AND lease_owner = ? AND state = 'pending'"""
OUTBOX_LIST_PENDING = """
SELECT
    id, kind, coalesce_key, dedupe_key, recipients, payload, created_at, not_before,
    state, attempts, message_id, last_error, done_at
FROM outbox WHERE state = ? ORDER BY id LIMIT ?"""
OUTBOX_LIST_DONE = """
SELECT
    id, kind, coalesce_key, dedupe_key, recipients, payload, created_at, not_before,
    state, attempts, message_id, last_error, done_at
FROM outbox WHERE state = ? ORDER BY id DESC LIMIT ?"""
OUTBOX_COUNTS = "SELECT state, COUNT(*), MIN(created_at) FROM outbox GROUP BY state"
OUTBOX_LAST_ERROR = """
SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL
ORDER BY id DESC LIMIT 1"""
OUTBOX_PURGE = "DELETE FROM outbox WHERE state IN ('sent', 'failed') AND done_at < ?"

# -- system messages --------------------------------------------------------------------------

SYSTEM_MESSAGE_RAISE = """
INSERT INTO system_messages (key, text, since) VALUES (?, ?, ?)
ON CONFLICT (key) DO NOTHING"""
SYSTEM_MESSAGE_TEXT = "UPDATE system_messages SET text = ? WHERE key = ?"
SYSTEM_MESSAGE_CLEAR = "DELETE FROM system_messages WHERE key = ?"
SYSTEM_MESSAGES = "SELECT key, text, since FROM system_messages ORDER BY since, key"


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (sessions, TOTP secrets, hashes).

    SQLite gives the -wal and -shm files it creates the database file's permissions, so they
    are private too. An existing file keeps the permissions its owner chose.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _dump_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _incident(row: Any) -> IncidentRecord:
    id_, user, state, countries, *rest = row
    return IncidentRecord(int(id_), user, state, tuple(filter(None, countries.split(","))), *rest)


def _sign_in(row: Any) -> SignInRecord:
    id_, *rest = row
    return SignInRecord(int(id_), *rest)


def _trusted_ip(row: Any) -> TrustedIpRecord:
    id_, *rest = row
    return TrustedIpRecord(int(id_), *rest)


class SqliteStore:
    """`StateStore` on one SQLite file (or `:memory:`, private to this store, for tests)."""

    def __init__(self, conn: aiosqlite.Connection, where: str) -> None:
        self._conn = conn
        self._where = where
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteStore({self._where!r})"

    @classmethod
    async def open(
        cls, path: Path | str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> SqliteStore:
        """Open (creating the file and its folder) and bring the schema up to date."""
        where = str(path)
        if where != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _create_private(Path(path))
        try:
            conn = await aiosqlite.connect(where, isolation_level=None, timeout=busy_timeout)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {where}: cannot open ({exc})") from exc
        store = cls(conn, where)
        try:
            await store._configure(busy_timeout)
            await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _errors(self, doing: str) -> AsyncIterator[None]:
        """Translate driver errors into StoreError and friends, naming the operation."""
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise StoreConflict(f"sqlite {self._where}: {doing}: {exc}") from exc
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            unavailable = code is not None and code & 0xFF in UNAVAILABLE_CODES
            kind = StoreUnavailable if unavailable else StoreError
            raise kind(f"sqlite {self._where}: {doing}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _use(self, doing: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, for one statement in autocommit mode."""
        async with self._lock, self._errors(doing):
            if self._closed:
                raise StoreUnavailable(f"sqlite {self._where}: {doing}: the store is closed")
            yield self._conn

    @contextlib.asynccontextmanager
    async def _write(self, doing: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error)."""
        async with self._use(doing) as conn:
            try:
                await conn.execute(BEGIN_IMMEDIATE)
                yield conn
                await conn.execute(COMMIT)
            except BaseException:
                # Also on cancellation, which may strike while BEGIN, a statement or COMMIT is
                # still running in aiosqlite's thread: the ROLLBACK is queued behind it (the
                # queueing happens before the first suspension, so even a second cancellation
                # cannot skip it, and it stays ahead of the next holder of the lock). "No
                # transaction is active" (nothing begun, already committed, or rolled back by
                # SQLite itself) is fine.
                with contextlib.suppress(sqlite3.OperationalError):
                    await conn.execute(ROLLBACK)
                raise

    async def _rows(self, doing: str, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._use(doing) as conn:
            return list(await conn.execute_fetchall(sql, tuple(params)))

    async def _one(self, doing: str, sql: str, params: Iterable[Any] = ()) -> Any | None:
        rows = await self._rows(doing, sql, params)
        return rows[0] if rows else None

    async def _run(self, doing: str, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        async with self._use(doing) as conn:
            cursor = await conn.execute(sql, tuple(params))
            count = cursor.rowcount
            await cursor.close()
            return count

    async def _configure(self, busy_timeout: float) -> None:
        # Switching to WAL needs a moment of exclusive access, and SQLite does not always call
        # the busy handler for it: when several workers open the same new file at once, one of
        # them can get "database is locked" at once. Retry for up to busy_timeout.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                async with self._use("configure") as conn:
                    await conn.execute(PRAGMA_BUSY_TIMEOUT.format(ms=int(busy_timeout * 1000)))
                    await conn.execute(PRAGMA_JOURNAL_WAL)
                    await conn.execute(PRAGMA_SYNCHRONOUS)
                    await conn.execute(PRAGMA_FOREIGN_KEYS)
                return
            except StoreUnavailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _migrate(self) -> None:
        migrations = load_migrations(DIALECT)
        async with self._write("migrate") as conn:
            await conn.execute(CREATE_SCHEMA_VERSION)
            applied = {row[0] for row in await conn.execute_fetchall(SELECT_APPLIED_VERSIONS)}
            for migration in pending_migrations(migrations, applied, f"sqlite {self._where}"):
                for statement in split_sqlite_script(migration.sql):
                    await conn.execute(statement)
                # The only wall-clock read in the store: a note for humans, not a decision.
                await conn.execute(
                    INSERT_SCHEMA_VERSION, (migration.version, migration.name, time.time())
                )

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await self._conn.close()

    async def ping(self) -> None:
        await self._rows("ping", PING)

    async def schema_version(self) -> int:
        (version,) = await self._one("schema_version", SELECT_SCHEMA_VERSION)
        return int(version)

    # -- sessions ---------------------------------------------------------------------------

    async def session_get(self, sid_hash: str) -> SessionRecord | None:
        row = await self._one("session_get", SESSION_GET, (sid_hash,))
        if row is None:
            return None
        sid, user, data, created_at, last_seen, expires_at = row
        return SessionRecord(sid, user, json.loads(data), created_at, last_seen, expires_at)

    async def session_put(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        created_at: float,
        last_seen: float,
        expires_at: float,
    ) -> None:
        params = (sid_hash, user, _dump_json(data), created_at, last_seen, expires_at)
        await self._run("session_put", SESSION_PUT, params)

    async def session_update(
        self, sid_hash: str, user: str | None, data: dict[str, Any], last_seen: float
    ) -> bool:
        params = (user, _dump_json(data), last_seen, sid_hash)
        return await self._run("session_update", SESSION_UPDATE, params) == 1

    async def session_delete(self, sid_hash: str) -> None:
        await self._run("session_delete", SESSION_DELETE, (sid_hash,))

    async def sessions_revoke_user(self, user: str) -> int:
        return await self._run("sessions_revoke_user", SESSIONS_REVOKE_USER, (user,))

    async def sessions_purge_expired(self, now: float) -> int:
        return await self._run("sessions_purge_expired", SESSIONS_PURGE_EXPIRED, (now,))

    # -- login regulation -------------------------------------------------------------------

    async def login_failure_add(self, subject: str, at: float) -> None:
        await self._run("login_failure_add", LOGIN_FAILURE_ADD, (subject, at))

    async def login_failures_since(self, subject: str, since: float) -> int:
        (count,) = await self._one("login_failures_since", LOGIN_FAILURES_SINCE, (subject, since))
        return int(count)

    async def ban_set(self, subject: str, until: float) -> None:
        await self._run("ban_set", BAN_SET, (subject, until))

    async def ban_get(self, subject: str) -> float | None:
        row = await self._one("ban_get", BAN_GET, (subject,))
        return None if row is None else row[0]

    async def login_state_clear(self, subject: str) -> None:
        async with self._write("login_state_clear") as conn:
            await conn.execute(LOGIN_FAILURES_CLEAR, (subject,))
            await conn.execute(BAN_CLEAR, (subject,))

    async def login_failures_purge(self, before: float) -> int:
        async with self._write("login_failures_purge") as conn:
            failures = await conn.execute(LOGIN_FAILURES_PURGE, (before,))
            bans = await conn.execute(BANS_PURGE, (before,))
            return failures.rowcount + bans.rowcount

    async def _attempt_state(
        self, conn: aiosqlite.Connection, subject: str, since: float
    ) -> tuple[float | None, int]:
        """The subject's ban end (or None) and its failures since `since` and since that end."""
        rows = await conn.execute_fetchall(BAN_GET, (subject,))
        until = rows[0][0] if rows else None
        start = since if until is None else max(since, until)
        ((count,),) = await conn.execute_fetchall(LOGIN_FAILURES_SINCE, (subject, start))
        return until, int(count)

    async def login_attempt_reserve(
        self, limits: list[AttemptLimit], at: float, since: float
    ) -> AttemptReservation:
        # BEGIN IMMEDIATE: the count and the insert happen under the one write lock of the file.
        async with self._write("login_attempt_reserve") as conn:
            remaining = []
            for item in limits:
                until, count = await self._attempt_state(conn, item.subject, since)
                if until is not None and until > at:
                    return AttemptReservation(refused_by=item.subject, banned_until=until)
                if count >= item.limit:
                    return AttemptReservation(refused_by=item.subject)
                remaining.append(item.limit - count - 1)
            ids = []
            for item in limits:
                cursor = await conn.execute(LOGIN_FAILURE_ADD, (item.subject, at))
                ids.append(int(cursor.lastrowid or 0))
                await cursor.close()
            return AttemptReservation(tuple(ids), min(remaining, default=0))

    async def login_attempt_release(self, ids: tuple[int, ...]) -> None:
        if ids:
            async with self._write("login_attempt_release") as conn:
                await conn.executemany(LOGIN_FAILURE_DELETE, [(i,) for i in ids])

    async def login_attempt_failed(
        self, limits: list[AttemptLimit], at: float, since: float, ban_until: float
    ) -> list[str]:
        banned = []
        async with self._write("login_attempt_failed") as conn:
            for item in limits:
                until, count = await self._attempt_state(conn, item.subject, since)
                if (until is None or until <= at) and count >= item.limit:
                    await conn.execute(BAN_SET, (item.subject, ban_until))
                    banned.append(item.subject)
        return banned

    async def login_bans_active(self, now: float) -> dict[str, float]:
        return {s: u for s, u in await self._rows("login_bans_active", BANS_ACTIVE, (now,))}

    # -- audit chain heads ------------------------------------------------------------------

    async def audit_head_put(self, chain: str, seq: int, hash: str, at: float) -> None:
        await self._run("audit_head_put", AUDIT_HEAD_PUT, (chain, seq, hash, at))

    async def audit_heads(self) -> list[AuditHead]:
        rows = await self._rows("audit_heads", AUDIT_HEADS)
        return [AuditHead(chain, seq, hash_, at) for chain, seq, hash_, at in rows]

    # -- signing keys -----------------------------------------------------------------------

    async def signing_keys(self) -> list[SigningKeyRecord]:
        rows = await self._rows("signing_keys", SIGNING_KEYS)
        return [
            SigningKeyRecord(kid, alg, bytes(private), json.loads(jwk), created_at, retired_at)
            for kid, alg, private, jwk, created_at, retired_at in rows
        ]

    async def signing_key_add(self, record: SigningKeyRecord) -> None:
        params = (
            record.kid,
            record.algorithm,
            record.sealed_private,
            _dump_json(record.public_jwk),
            record.created_at,
            record.retired_at,
        )
        await self._run("signing_key_add", SIGNING_KEY_ADD, params)

    async def signing_key_retire(self, kid: str, at: float) -> None:
        await self._run("signing_key_retire", SIGNING_KEY_RETIRE, (at, kid))

    async def signing_key_delete(self, kid: str) -> None:
        await self._run("signing_key_delete", SIGNING_KEY_DELETE, (kid,))

    # -- TOTP -------------------------------------------------------------------------------

    async def totp_get(self, user: str) -> TotpRecord | None:
        row = await self._one("totp_get", TOTP_GET, (user,))
        if row is None:
            return None
        username, secret, enrolled_at, last_step = row
        return TotpRecord(username, bytes(secret), enrolled_at, int(last_step))

    async def totp_set(self, user: str, sealed_secret: bytes, enrolled_at: float) -> None:
        await self._run("totp_set", TOTP_SET, (user, sealed_secret, enrolled_at))

    async def totp_enroll(self, user: str, sealed_secret: bytes, enrolled_at: float) -> bool:
        return await self._run("totp_enroll", TOTP_ENROLL, (user, sealed_secret, enrolled_at)) == 1

    async def totp_delete(self, user: str) -> None:
        async with self._write("totp_delete") as conn:
            await conn.execute(TOTP_DELETE, (user,))
            await conn.execute(RECOVERY_CODES_DELETE, (user,))

    async def totp_claim_step(self, user: str, step: int) -> bool:
        return await self._run("totp_claim_step", TOTP_CLAIM_STEP, (step, user, step)) == 1

    # -- recovery codes ---------------------------------------------------------------------

    async def recovery_codes_set(self, user: str, hashes: list[str], at: float) -> None:
        async with self._write("recovery_codes_set") as conn:
            await conn.execute(RECOVERY_CODES_DELETE, (user,))
            await conn.executemany(RECOVERY_CODE_ADD, [(user, h, at) for h in hashes])

    async def recovery_codes(self, user: str) -> list[RecoveryCodeRecord]:
        rows = await self._rows("recovery_codes", RECOVERY_CODES, (user,))
        return [
            RecoveryCodeRecord(int(id_), code_hash, used_at) for id_, code_hash, used_at in rows
        ]

    async def recovery_code_use(self, user: str, id: int, at: float) -> bool:
        return await self._run("recovery_code_use", RECOVERY_CODE_USE, (at, id, user)) == 1

    # -- passwords --------------------------------------------------------------------------

    async def password_get(self, user: str) -> PasswordRecord | None:
        row = await self._one("password_get", PASSWORD_GET, (user,))
        if row is None:
            return None
        username, hash_, base_hash, changed_at, must_change = row
        return PasswordRecord(username, hash_, base_hash, changed_at, bool(must_change))

    async def password_set(
        self, user: str, hash: str, base_hash: str | None, changed_at: float
    ) -> None:
        async with self._write("password_set") as conn:
            await conn.execute(PASSWORD_SET, (user, hash, base_hash, changed_at))
            await conn.execute(PASSWORD_HISTORY_ADD, (user, hash, changed_at))

    async def password_history(self, user: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        rows = await self._rows("password_history", PASSWORD_HISTORY, (user, limit))
        return [hash_ for (hash_,) in rows]

    async def password_expire(self, user: str) -> None:
        await self._run("password_expire", PASSWORD_EXPIRE, (user,))

    async def password_first_seen(self, user: str, base_hash: str, at: float) -> float:
        async with self._write("password_first_seen") as conn:
            await conn.execute(PASSWORD_SEEN_ADD, (user, base_hash, at))
            rows = await conn.execute_fetchall(PASSWORD_SEEN_GET, (user, base_hash))
        return rows[0][0]

    # -- sign-in history --------------------------------------------------------------------

    async def sign_in_add(
        self,
        user: str,
        result: str,
        ip: str | None,
        country: str | None,
        geoip_source: str | None,
        user_agent: str,
        at: float,
    ) -> SignInRecord:
        params = (user, result, ip, country, geoip_source, user_agent, at)
        async with self._use("sign_in_add") as conn:
            cursor = await conn.execute(SIGN_IN_ADD, params)
            id_ = cursor.lastrowid
            await cursor.close()
        assert id_ is not None
        return SignInRecord(id_, *params)

    async def sign_ins(
        self,
        user: str,
        *,
        since: float | None = None,
        result: str | None = None,
        limit: int = 50,
    ) -> list[SignInRecord]:
        params = (user, since, since, result, result, limit)
        return [_sign_in(r) for r in await self._rows("sign_ins", SIGN_INS, params)]

    async def sign_ins_purge(self, before: float) -> int:
        return await self._run("sign_ins_purge", SIGN_INS_PURGE, (before,))

    # -- requests per user and hour ---------------------------------------------------------

    async def request_counts_add(self, counts: dict[tuple[str, int], int]) -> None:
        if not counts:
            return
        rows = [(user, hour, n) for (user, hour), n in counts.items()]
        async with self._write("request_counts_add") as conn:
            await conn.executemany(REQUEST_COUNT_ADD, rows)

    async def request_count(self, user: str, since_hour: int) -> int:
        (count,) = await self._one("request_count", REQUEST_COUNT, (user, since_hour))
        return int(count)

    async def request_counts_purge(self, before_hour: int) -> int:
        return await self._run("request_counts_purge", REQUEST_COUNTS_PURGE, (before_hour,))

    # -- incidents --------------------------------------------------------------------------

    async def incident_open_or_extend(
        self, user: str, at: float, evidence: list[SignInRecord], *, create: bool = True
    ) -> IncidentUpdate:
        # BEGIN IMMEDIATE serialises writers across processes; the unique partial index is
        # what guarantees one active incident per user even so.
        async with self._write("incident_open_or_extend") as conn:
            opened = False
            if create:
                cursor = await conn.execute(INCIDENT_OPEN, (user, at, at))
                opened = cursor.rowcount == 1
                await cursor.close()
            rows = await conn.execute_fetchall(INCIDENT_ACTIVE, (user,))
            if not rows:
                return IncidentUpdate(None, False, 0)
            incident = _incident(rows[0])
            added = 0
            for e in evidence:
                cursor = await conn.execute(
                    INCIDENT_EVIDENCE_ADD,
                    (
                        incident.id,
                        e.id,
                        e.user,
                        e.result,
                        e.ip,
                        e.country,
                        e.geoip_source,
                        e.user_agent,
                        e.at,
                    ),
                )
                added += cursor.rowcount
                await cursor.close()
            countries = merge_countries(incident.countries, evidence)
            if added or opened:
                await conn.execute(INCIDENT_SET_COUNTRIES, (countries, at, incident.id))
                rows = await conn.execute_fetchall(INCIDENT_GET, (incident.id,))
                incident = _incident(rows[0])
        return IncidentUpdate(incident, opened, added)

    async def incident_get(self, id: int) -> IncidentRecord | None:
        row = await self._one("incident_get", INCIDENT_GET, (id,))
        return None if row is None else _incident(row)

    async def incidents(
        self, *, state: str | None = None, user: str | None = None, limit: int = 100
    ) -> list[IncidentRecord]:
        params = (state, state, user, user, limit)
        return [_incident(r) for r in await self._rows("incidents", INCIDENTS, params)]

    async def incident_sign_ins(self, id: int) -> list[SignInRecord]:
        rows = await self._rows("incident_sign_ins", INCIDENT_SIGN_INS, (id,))
        return [_sign_in(r) for r in rows]

    async def incident_counts(self) -> dict[str, int]:
        rows = await self._rows("incident_counts", INCIDENT_COUNTS)
        return {state: int(n) for state, n in rows}

    async def incident_acknowledge(self, id: int, by: str, at: float) -> bool:
        params = (at, by, at, id)
        return await self._run("incident_acknowledge", INCIDENT_ACKNOWLEDGE, params) == 1

    async def incident_resolve(self, id: int, by: str, at: float, note: str) -> bool:
        params = (at, by, note, at, id)
        return await self._run("incident_resolve", INCIDENT_RESOLVE, params) == 1

    async def incidents_purge(self, resolved_before: float) -> int:
        async with self._write("incidents_purge") as conn:
            await conn.execute(INCIDENTS_PURGE_EVIDENCE, (resolved_before,))
            cursor = await conn.execute(INCIDENTS_PURGE, (resolved_before,))
            return cursor.rowcount

    # -- trusted login IPs ------------------------------------------------------------------

    async def trusted_ip_add(
        self, cidr: str, scope: str, description: str, by: str, at: float
    ) -> TrustedIpRecord:
        params = (cidr, scope, description, at, by)
        async with self._write("trusted_ip_add") as conn:
            rows = await conn.execute_fetchall(TRUSTED_IP_ADD, params)
        return _trusted_ip(rows[0])

    async def trusted_ips(self, scope: str | None = None) -> list[TrustedIpRecord]:
        rows = await self._rows("trusted_ips", TRUSTED_IPS, (scope, scope))
        return [_trusted_ip(r) for r in rows]

    async def trusted_ip_get(self, id: int) -> TrustedIpRecord | None:
        row = await self._one("trusted_ip_get", TRUSTED_IP_GET, (id,))
        return None if row is None else _trusted_ip(row)

    async def trusted_ip_remove(self, id: int) -> TrustedIpRecord | None:
        async with self._write("trusted_ip_remove") as conn:
            rows = await conn.execute_fetchall(TRUSTED_IP_REMOVE, (id,))
        return _trusted_ip(rows[0]) if rows else None

    # -- meta -------------------------------------------------------------------------------

    async def meta_get(self, key: str) -> str | None:
        row = await self._one("meta_get", META_GET, (key,))
        return None if row is None else row[0]

    async def meta_put(self, key: str, value: str) -> None:
        await self._run("meta_put", META_PUT, (key, value))

    # -- notification outbox ----------------------------------------------------------------

    @staticmethod
    def _outbox_record(row: Any) -> OutboxRecord:
        (
            id_,
            kind,
            ckey,
            dkey,
            recipients,
            payload,
            created_at,
            nb,
            state,
            attempts,
            mid,
            err,
            done_at,
        ) = row
        return OutboxRecord(
            int(id_),
            kind,
            ckey,
            dkey,
            json.loads(recipients),
            json.loads(payload),
            created_at,
            nb,
            state,
            int(attempts),
            mid,
            err,
            done_at,
        )

    async def outbox_add(
        self,
        kind: str,
        recipients: list[str],
        payload: dict[str, Any],
        at: float,
        *,
        coalesce_key: str | None = None,
        coalesce_window: float = 0.0,
        dedupe_key: str | None = None,
    ) -> int | None:
        async with self._write("outbox_add") as conn:
            last = None
            if coalesce_key is not None:
                rows = await conn.execute_fetchall(OUTBOX_LAST_DUE, (coalesce_key,))
                last = rows[0][0]
            not_before = coalesced_not_before(last, at, coalesce_window)
            params = (
                kind,
                coalesce_key,
                dedupe_key,
                json.dumps(recipients),
                _dump_json(payload),
                at,
                not_before,
            )
            rows = await conn.execute_fetchall(OUTBOX_ADD, params)
        return int(rows[0][0]) if rows else None

    async def outbox_claim(self, owner: str, now: float, lease: float) -> list[OutboxRecord]:
        async with self._write("outbox_claim") as conn:
            rows = await conn.execute_fetchall(OUTBOX_NEXT_DUE, (now, now))
            if not rows:
                return []
            first_id, key = rows[0]
            params = (owner, now + lease, now, now, first_id, key)
            claimed = await conn.execute_fetchall(OUTBOX_CLAIM, params)
        return sorted((self._outbox_record(r) for r in claimed), key=lambda r: r.id)

    async def outbox_retry(
        self,
        ids: list[int],
        owner: str,
        not_before: float,
        error: str,
        recipients: list[str] | None = None,
    ) -> None:
        narrowed = None if recipients is None else json.dumps(recipients)
        params = (not_before, error, narrowed, json.dumps(ids), owner)
        await self._run("outbox_retry", OUTBOX_RETRY, params)

    async def outbox_finish(
        self,
        ids: list[int],
        owner: str,
        state: str,
        at: float,
        message_id: str,
        error: str | None = None,
    ) -> int:
        if state not in OUTBOX_STATES - {"pending"}:
            raise ValueError(f"outbox_finish: state must be sent or failed, got {state!r}")
        params = (state, at, message_id, error, json.dumps(ids), owner)
        return await self._run("outbox_finish", OUTBOX_FINISH, params)

    async def outbox_list(self, state: str, limit: int) -> list[OutboxRecord]:
        sql = OUTBOX_LIST_PENDING if state == "pending" else OUTBOX_LIST_DONE
        return [
            self._outbox_record(r) for r in await self._rows("outbox_list", sql, (state, limit))
        ]

    async def outbox_stats(self) -> OutboxStats:
        counts = {
            state: (n, oldest)
            for state, n, oldest in await self._rows("outbox_stats", OUTBOX_COUNTS)
        }
        error = await self._one("outbox_stats", OUTBOX_LAST_ERROR)
        pending = counts.get("pending", (0, None))
        return OutboxStats(
            pending=int(pending[0]),
            failed=int(counts.get("failed", (0, None))[0]),
            sent=int(counts.get("sent", (0, None))[0]),
            oldest_pending_at=pending[1],
            last_error=None if error is None else error[0],
        )

    async def outbox_purge(self, before: float) -> int:
        return await self._run("outbox_purge", OUTBOX_PURGE, (before,))

    # -- system messages --------------------------------------------------------------------

    async def system_message_raise(self, key: str, text: str, at: float) -> bool:
        async with self._write("system_message_raise") as conn:
            cursor = await conn.execute(SYSTEM_MESSAGE_RAISE, (key, text, at))
            new = cursor.rowcount == 1
            if not new:
                await conn.execute(SYSTEM_MESSAGE_TEXT, (text, key))
        return new

    async def system_message_clear(self, key: str) -> bool:
        return await self._run("system_message_clear", SYSTEM_MESSAGE_CLEAR, (key,)) == 1

    async def system_messages(self) -> list[SystemMessageRecord]:
        rows = await self._rows("system_messages", SYSTEM_MESSAGES)
        return [SystemMessageRecord(key, text, since) for key, text, since in rows]
