"""`StateStore` on PostgreSQL through an asyncpg pool: for several gateway instances.

Tables live in the first schema of the connection's `search_path` (`public` by default; set
another with `?search_path=name` in the URL, which asyncpg passes on as a server setting).
Migrations run in one transaction under `pg_advisory_xact_lock`, so instances starting at the
same time apply each file once. Single-use operations are one `UPDATE ... RETURNING`.
"""

# Names such as PASSWORD_SET hold SQL about passwords, not passwords (S105); f-strings below
# only join constant column lists into constant SQL (S608):
# ruff: noqa: S105, S608
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

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
from .schema import load_migrations, pending_migrations
from .url import redact

DIALECT = "postgres"
# pg_advisory_xact_lock key for migrations: any constant bigint, the same for every instance.
MIGRATION_LOCK_KEY = 0x6761_7465_7761_79  # "gateway"
CONNECT_TIMEOUT = 10.0
ACQUIRE_TIMEOUT = 10.0

# -- migrations -------------------------------------------------------------------------------

PING = "SELECT 1"
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock($1)"
CREATE_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""
SELECT_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM schema_version"
SELECT_APPLIED_VERSIONS = "SELECT version FROM schema_version"
INSERT_SCHEMA_VERSION = "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)"

# -- sessions ---------------------------------------------------------------------------------

SESSION_GET = """
SELECT sid_hash, username, data::text AS data, created_at, last_seen, expires_at
FROM sessions WHERE sid_hash = $1"""
SESSION_PUT = """
INSERT INTO sessions (sid_hash, username, data, created_at, last_seen, expires_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6)
ON CONFLICT (sid_hash) DO UPDATE SET
    username = excluded.username, data = excluded.data, created_at = excluded.created_at,
    last_seen = excluded.last_seen, expires_at = excluded.expires_at"""
SESSION_UPDATE = """
UPDATE sessions SET username = $2, data = $3::jsonb, last_seen = $4 WHERE sid_hash = $1"""
SESSION_DELETE = "DELETE FROM sessions WHERE sid_hash = $1"
SESSIONS_REVOKE_USER = "DELETE FROM sessions WHERE username = $1"
SESSIONS_PURGE_EXPIRED = "DELETE FROM sessions WHERE expires_at <= $1"

# -- login regulation -------------------------------------------------------------------------

LOGIN_FAILURE_ADD = "INSERT INTO login_failures (subject, at) VALUES ($1, $2)"
LOGIN_FAILURES_SINCE = "SELECT COUNT(*) FROM login_failures WHERE subject = $1 AND at >= $2"
BAN_SET = """
INSERT INTO login_bans (subject, until) VALUES ($1, $2)
ON CONFLICT (subject) DO UPDATE SET until = excluded.until"""
BAN_GET = "SELECT until FROM login_bans WHERE subject = $1"
LOGIN_FAILURES_CLEAR = "DELETE FROM login_failures WHERE subject = $1"
BAN_CLEAR = "DELETE FROM login_bans WHERE subject = $1"
LOGIN_FAILURES_PURGE = "DELETE FROM login_failures WHERE at < $1"
BANS_PURGE = "DELETE FROM login_bans WHERE until < $1"
LOGIN_FAILURE_ADD_RETURNING_ID = (
    "INSERT INTO login_failures (subject, at) VALUES ($1, $2) RETURNING id"
)
LOGIN_FAILURES_DELETE = "DELETE FROM login_failures WHERE id = ANY($1::bigint[])"
BANS_ACTIVE = "SELECT subject, until FROM login_bans WHERE until > $1 ORDER BY subject"
# One transaction-scoped lock per subject serialises the count-then-insert of concurrent
# attempts on every instance; subjects are locked in sorted order, so two never deadlock.
SUBJECT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"

# -- audit chain heads ------------------------------------------------------------------------

AUDIT_HEAD_PUT = """
INSERT INTO audit_heads (chain, seq, hash, at) VALUES ($1, $2, $3, $4)
ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at
WHERE excluded.seq > audit_heads.seq"""
AUDIT_HEADS = "SELECT chain, seq, hash, at FROM audit_heads ORDER BY chain"

# -- signing keys -----------------------------------------------------------------------------

SIGNING_KEYS = """
SELECT kid, algorithm, sealed_private, public_jwk::text AS public_jwk, created_at, retired_at
FROM signing_keys ORDER BY created_at, kid"""
SIGNING_KEY_ADD = """
INSERT INTO signing_keys (kid, algorithm, sealed_private, public_jwk, created_at, retired_at)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)"""
SIGNING_KEY_RETIRE = """
UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL"""
SIGNING_KEY_DELETE = "DELETE FROM signing_keys WHERE kid = $1"

# -- TOTP and recovery codes ------------------------------------------------------------------

TOTP_GET = "SELECT username, sealed_secret, enrolled_at, last_step FROM totp WHERE username = $1"
TOTP_SET = """
INSERT INTO totp (username, sealed_secret, enrolled_at, last_step) VALUES ($1, $2, $3, -1)
ON CONFLICT (username) DO UPDATE SET
    sealed_secret = excluded.sealed_secret, enrolled_at = excluded.enrolled_at, last_step = -1"""
TOTP_ENROLL = """
INSERT INTO totp (username, sealed_secret, enrolled_at, last_step) VALUES ($1, $2, $3, -1)
ON CONFLICT (username) DO NOTHING"""
TOTP_DELETE = "DELETE FROM totp WHERE username = $1"
TOTP_CLAIM_STEP = """
UPDATE totp SET last_step = $2 WHERE username = $1 AND last_step < $2 RETURNING last_step"""
RECOVERY_CODES_DELETE = "DELETE FROM recovery_codes WHERE username = $1"
RECOVERY_CODE_ADD = """
INSERT INTO recovery_codes (username, code_hash, created_at) VALUES ($1, $2, $3)"""
RECOVERY_CODES = """
SELECT id, code_hash, used_at FROM recovery_codes WHERE username = $1 ORDER BY id"""
RECOVERY_CODE_USE = """
UPDATE recovery_codes SET used_at = $3 WHERE id = $2 AND username = $1 AND used_at IS NULL
RETURNING id"""

# -- passwords --------------------------------------------------------------------------------

PASSWORD_GET = """
SELECT username, hash, base_hash, changed_at, must_change FROM passwords WHERE username = $1"""
PASSWORD_SET = """
INSERT INTO passwords (username, hash, base_hash, changed_at, must_change)
VALUES ($1, $2, $3, $4, FALSE)
ON CONFLICT (username) DO UPDATE SET
    hash = excluded.hash, base_hash = excluded.base_hash, changed_at = excluded.changed_at,
    must_change = FALSE"""
PASSWORD_HISTORY_ADD = """
INSERT INTO password_history (username, hash, changed_at) VALUES ($1, $2, $3)"""
PASSWORD_HISTORY = """
SELECT hash FROM password_history WHERE username = $1
ORDER BY changed_at DESC, id DESC LIMIT $2"""
PASSWORD_EXPIRE = """
INSERT INTO passwords (username, hash, base_hash, changed_at, must_change)
VALUES ($1, NULL, NULL, NULL, TRUE)
ON CONFLICT (username) DO UPDATE SET must_change = TRUE"""
PASSWORD_SEEN_ADD = """
INSERT INTO password_seen (username, base_hash, first_seen) VALUES ($1, $2, $3)
ON CONFLICT (username, base_hash) DO NOTHING"""
PASSWORD_SEEN_GET = """
SELECT first_seen FROM password_seen WHERE username = $1 AND base_hash = $2"""

# -- sign-in history and requests per hour ----------------------------------------------------

SIGN_IN_COLUMNS = "id, username, result, ip, country, geoip_source, user_agent, at"
SIGN_IN_ADD = """
INSERT INTO sign_ins (username, result, ip, country, geoip_source, user_agent, at)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"""
SIGN_INS = f"""
SELECT {SIGN_IN_COLUMNS} FROM sign_ins
WHERE username = $1 AND ($2::float8 IS NULL OR at >= $2) AND ($3::text IS NULL OR result = $3)
ORDER BY at DESC, id DESC LIMIT $4"""
SIGN_INS_PURGE = "DELETE FROM sign_ins WHERE at < $1"
REQUEST_COUNT_ADD = """
INSERT INTO request_counts (username, hour, count) VALUES ($1, $2, $3)
ON CONFLICT (username, hour) DO UPDATE SET count = request_counts.count + excluded.count"""
REQUEST_COUNT = """
SELECT COALESCE(SUM(count), 0) FROM request_counts WHERE username = $1 AND hour >= $2"""
REQUEST_COUNTS_PURGE = "DELETE FROM request_counts WHERE hour < $1"

# -- incidents --------------------------------------------------------------------------------

INCIDENT_COLUMNS = """
id, username, state, countries, opened_at, updated_at, acknowledged_at, acknowledged_by,
resolved_at, resolved_by, note"""
INCIDENT_OPEN = """
INSERT INTO incidents (username, state, countries, opened_at, updated_at)
VALUES ($1, 'open', '', $2, $2)
ON CONFLICT (username) WHERE state <> 'resolved' DO NOTHING"""
INCIDENT_ACTIVE_FOR_UPDATE = f"""
SELECT {INCIDENT_COLUMNS} FROM incidents WHERE username = $1 AND state <> 'resolved'
FOR UPDATE"""
INCIDENT_EVIDENCE_ADD = """
INSERT INTO incident_sign_ins
    (incident_id, sign_in_id, username, result, ip, country, geoip_source, user_agent, at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (incident_id, sign_in_id) DO NOTHING"""
INCIDENT_SET_COUNTRIES = f"""
UPDATE incidents SET countries = $2, updated_at = $3 WHERE id = $1 RETURNING {INCIDENT_COLUMNS}"""
INCIDENT_GET = f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"
INCIDENTS = f"""
SELECT {INCIDENT_COLUMNS} FROM incidents
WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR username = $2)
ORDER BY opened_at DESC, id DESC LIMIT $3"""
INCIDENT_SIGN_INS = """
SELECT sign_in_id AS id, username, result, ip, country, geoip_source, user_agent, at
FROM incident_sign_ins WHERE incident_id = $1 ORDER BY at, sign_in_id"""
INCIDENT_COUNTS = "SELECT state, COUNT(*) AS n FROM incidents GROUP BY state"
INCIDENT_ACKNOWLEDGE = """
UPDATE incidents SET state = 'acknowledged', acknowledged_at = $3, acknowledged_by = $2,
    updated_at = $3
WHERE id = $1 AND state = 'open'"""
INCIDENT_RESOLVE = """
UPDATE incidents SET state = 'resolved', resolved_at = $3, resolved_by = $2, note = $4,
    updated_at = $3
WHERE id = $1 AND state <> 'resolved'"""
INCIDENTS_PURGE_EVIDENCE = """
DELETE FROM incident_sign_ins WHERE incident_id IN
    (SELECT id FROM incidents WHERE state = 'resolved' AND resolved_at < $1)"""
INCIDENTS_PURGE = "DELETE FROM incidents WHERE state = 'resolved' AND resolved_at < $1"

# -- trusted login IPs ------------------------------------------------------------------------

TRUSTED_IP_COLUMNS = "id, cidr, scope, description, created_at, created_by"
TRUSTED_IP_ADD = f"""
INSERT INTO trusted_ips (cidr, scope, description, created_at, created_by)
VALUES ($1, $2, $3, $4, $5) RETURNING {TRUSTED_IP_COLUMNS}"""
TRUSTED_IPS = f"""
SELECT {TRUSTED_IP_COLUMNS} FROM trusted_ips WHERE ($1::text IS NULL OR scope = $1)
ORDER BY scope, id"""
TRUSTED_IP_GET = f"SELECT {TRUSTED_IP_COLUMNS} FROM trusted_ips WHERE id = $1"
TRUSTED_IP_REMOVE = f"DELETE FROM trusted_ips WHERE id = $1 RETURNING {TRUSTED_IP_COLUMNS}"

# -- meta -------------------------------------------------------------------------------------

META_GET = "SELECT value FROM meta WHERE key = $1"
META_PUT = """
INSERT INTO meta (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value"""


# -- notification outbox ----------------------------------------------------------------------

# One claim at a time across instances, so a coalesced group is never split between two.
OUTBOX_CLAIM_LOCK_KEY = 0x6761_7465_6F62_78  # "gateobx"
OUTBOX_KEY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
OUTBOX_LAST_DUE = "SELECT MAX(not_before) FROM outbox WHERE coalesce_key = $1"
OUTBOX_ADD = """
INSERT INTO outbox (kind, coalesce_key, dedupe_key, recipients, payload, created_at, not_before)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING id"""
OUTBOX_CLAIM_LOCK = "SELECT pg_advisory_xact_lock($1)"
OUTBOX_NEXT_DUE = """
SELECT id, coalesce_key FROM outbox
WHERE state = 'pending' AND not_before <= $1 AND (lease_until IS NULL OR lease_until <= $1)
ORDER BY not_before, id LIMIT 1"""
OUTBOX_CLAIM = """
UPDATE outbox SET lease_owner = $1, lease_until = $2
WHERE state = 'pending' AND not_before <= $3 AND (lease_until IS NULL OR lease_until <= $3)
  AND (id = $4 OR coalesce_key = $5)
RETURNING
    id, kind, coalesce_key, dedupe_key, recipients::text AS recipients,
    payload::text AS payload, created_at, not_before, state, attempts, message_id, last_error,
    done_at"""
OUTBOX_RETRY = """
UPDATE outbox SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1,
    not_before = $1, last_error = $2, recipients = COALESCE($3::jsonb, recipients)
WHERE id = ANY($4::bigint[]) AND lease_owner = $5 AND state = 'pending'"""
OUTBOX_FINISH = """
UPDATE outbox SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1,
    state = $1, done_at = $2, message_id = $3, last_error = COALESCE($4, last_error)
WHERE id = ANY($5::bigint[]) AND lease_owner = $6 AND state = 'pending'"""
OUTBOX_LIST_PENDING = """
SELECT
    id, kind, coalesce_key, dedupe_key, recipients::text AS recipients,
    payload::text AS payload, created_at, not_before, state, attempts, message_id, last_error,
    done_at
FROM outbox WHERE state = $1 ORDER BY id LIMIT $2"""
OUTBOX_LIST_DONE = """
SELECT
    id, kind, coalesce_key, dedupe_key, recipients::text AS recipients,
    payload::text AS payload, created_at, not_before, state, attempts, message_id, last_error,
    done_at
FROM outbox WHERE state = $1 ORDER BY id DESC LIMIT $2"""
OUTBOX_COUNTS = """
SELECT state, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox GROUP BY state"""
OUTBOX_LAST_ERROR = """
SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL
ORDER BY id DESC LIMIT 1"""
OUTBOX_PURGE = "DELETE FROM outbox WHERE state IN ('sent', 'failed') AND done_at < $1"

# -- system messages --------------------------------------------------------------------------

SYSTEM_MESSAGE_RAISE = """
INSERT INTO system_messages (key, text, since) VALUES ($1, $2, $3)
ON CONFLICT (key) DO NOTHING RETURNING key"""
SYSTEM_MESSAGE_TEXT = "UPDATE system_messages SET text = $2 WHERE key = $1"
SYSTEM_MESSAGE_CLEAR = "DELETE FROM system_messages WHERE key = $1"
SYSTEM_MESSAGES = "SELECT key, text, since FROM system_messages ORDER BY since, key"


def _dump_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _incident(r: asyncpg.Record) -> IncidentRecord:
    return IncidentRecord(
        r["id"],
        r["username"],
        r["state"],
        tuple(filter(None, r["countries"].split(","))),
        r["opened_at"],
        r["updated_at"],
        r["acknowledged_at"],
        r["acknowledged_by"],
        r["resolved_at"],
        r["resolved_by"],
        r["note"],
    )


def _sign_in(r: asyncpg.Record) -> SignInRecord:
    return SignInRecord(
        r["id"],
        r["username"],
        r["result"],
        r["ip"],
        r["country"],
        r["geoip_source"],
        r["user_agent"],
        r["at"],
    )


def _trusted_ip(r: asyncpg.Record) -> TrustedIpRecord:
    return TrustedIpRecord(
        r["id"], r["cidr"], r["scope"], r["description"], r["created_at"], r["created_by"]
    )


def _count(status: str) -> int:
    """Rows affected, from a command tag such as 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore:
    """`StateStore` on a PostgreSQL database, shared by every gateway instance."""

    def __init__(self, pool: asyncpg.Pool, where: str) -> None:
        self._pool = pool
        self._where = where

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        server_settings: dict[str, str] | None = None,
    ) -> PostgresStore:
        """Connect a pool and bring the schema up to date."""
        where = redact(dsn)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings=server_settings,
                timeout=CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"postgres {where}: cannot connect ({exc})") from exc
        store = cls(pool, where)
        try:
            await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _use(self, doing: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, with driver errors translated and naming the operation."""
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn
        except asyncpg.UniqueViolationError as exc:
            raise StoreConflict(f"postgres {self._where}: {doing}: {exc}") from exc
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.InterfaceError,
        ) as exc:
            raise StoreUnavailable(f"postgres {self._where}: {doing}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"postgres {self._where}: {doing}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _write(self, doing: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a transaction."""
        async with self._use(doing) as conn, conn.transaction():
            yield conn

    async def _run(self, doing: str, sql: str, *args: Any) -> int:
        async with self._use(doing) as conn:
            return _count(await conn.execute(sql, *args))

    async def _row(self, doing: str, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._use(doing) as conn:
            return await conn.fetchrow(sql, *args)

    async def _rows(self, doing: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._use(doing) as conn:
            return await conn.fetch(sql, *args)

    async def _value(self, doing: str, sql: str, *args: Any) -> Any:
        async with self._use(doing) as conn:
            return await conn.fetchval(sql, *args)

    async def _migrate(self) -> None:
        migrations = load_migrations(DIALECT)
        async with self._write("migrate") as conn:
            await conn.execute(MIGRATION_LOCK, MIGRATION_LOCK_KEY)
            await conn.execute(CREATE_SCHEMA_VERSION)
            applied = {row[0] for row in await conn.fetch(SELECT_APPLIED_VERSIONS)}
            for migration in pending_migrations(migrations, applied, f"postgres {self._where}"):
                await conn.execute(migration.sql)
                # The only wall-clock read in the store: a note for humans, not a decision.
                await conn.execute(
                    INSERT_SCHEMA_VERSION, migration.version, migration.name, time.time()
                )

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        try:
            await self._value("ping", PING)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def schema_version(self) -> int:
        return int(await self._value("schema_version", SELECT_SCHEMA_VERSION))

    # -- sessions ---------------------------------------------------------------------------

    async def session_get(self, sid_hash: str) -> SessionRecord | None:
        row = await self._row("session_get", SESSION_GET, sid_hash)
        if row is None:
            return None
        return SessionRecord(
            row["sid_hash"],
            row["username"],
            json.loads(row["data"]),
            row["created_at"],
            row["last_seen"],
            row["expires_at"],
        )

    async def session_put(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        created_at: float,
        last_seen: float,
        expires_at: float,
    ) -> None:
        await self._run(
            "session_put",
            SESSION_PUT,
            sid_hash,
            user,
            _dump_json(data),
            created_at,
            last_seen,
            expires_at,
        )

    async def session_update(
        self, sid_hash: str, user: str | None, data: dict[str, Any], last_seen: float
    ) -> bool:
        count = await self._run(
            "session_update", SESSION_UPDATE, sid_hash, user, _dump_json(data), last_seen
        )
        return count == 1

    async def session_delete(self, sid_hash: str) -> None:
        await self._run("session_delete", SESSION_DELETE, sid_hash)

    async def sessions_revoke_user(self, user: str) -> int:
        return await self._run("sessions_revoke_user", SESSIONS_REVOKE_USER, user)

    async def sessions_purge_expired(self, now: float) -> int:
        return await self._run("sessions_purge_expired", SESSIONS_PURGE_EXPIRED, now)

    # -- login regulation -------------------------------------------------------------------

    async def login_failure_add(self, subject: str, at: float) -> None:
        await self._run("login_failure_add", LOGIN_FAILURE_ADD, subject, at)

    async def login_failures_since(self, subject: str, since: float) -> int:
        return int(await self._value("login_failures_since", LOGIN_FAILURES_SINCE, subject, since))

    async def ban_set(self, subject: str, until: float) -> None:
        await self._run("ban_set", BAN_SET, subject, until)

    async def ban_get(self, subject: str) -> float | None:
        return await self._value("ban_get", BAN_GET, subject)

    async def login_state_clear(self, subject: str) -> None:
        async with self._write("login_state_clear") as conn:
            await conn.execute(LOGIN_FAILURES_CLEAR, subject)
            await conn.execute(BAN_CLEAR, subject)

    async def login_failures_purge(self, before: float) -> int:
        async with self._write("login_failures_purge") as conn:
            failures = _count(await conn.execute(LOGIN_FAILURES_PURGE, before))
            bans = _count(await conn.execute(BANS_PURGE, before))
        return failures + bans

    async def _attempt_state(
        self, conn: asyncpg.Connection, subject: str, since: float
    ) -> tuple[float | None, int]:
        """The subject's ban end (or None) and its failures since `since` and since that end."""
        until = await conn.fetchval(BAN_GET, subject)
        start = since if until is None else max(since, until)
        return until, int(await conn.fetchval(LOGIN_FAILURES_SINCE, subject, start))

    async def _lock_subjects(self, conn: asyncpg.Connection, limits: list[AttemptLimit]) -> None:
        for subject in sorted({item.subject for item in limits}):
            await conn.execute(SUBJECT_LOCK, subject)

    async def login_attempt_reserve(
        self, limits: list[AttemptLimit], at: float, since: float
    ) -> AttemptReservation:
        async with self._write("login_attempt_reserve") as conn:
            await self._lock_subjects(conn, limits)
            remaining = []
            for item in limits:
                until, count = await self._attempt_state(conn, item.subject, since)
                if until is not None and until > at:
                    return AttemptReservation(refused_by=item.subject, banned_until=until)
                if count >= item.limit:
                    return AttemptReservation(refused_by=item.subject)
                remaining.append(item.limit - count - 1)
            ids = [
                int(await conn.fetchval(LOGIN_FAILURE_ADD_RETURNING_ID, item.subject, at))
                for item in limits
            ]
            return AttemptReservation(tuple(ids), min(remaining, default=0))

    async def login_attempt_release(self, ids: tuple[int, ...]) -> None:
        if ids:
            await self._run("login_attempt_release", LOGIN_FAILURES_DELETE, list(ids))

    async def login_attempt_failed(
        self, limits: list[AttemptLimit], at: float, since: float, ban_until: float
    ) -> list[str]:
        banned = []
        async with self._write("login_attempt_failed") as conn:
            await self._lock_subjects(conn, limits)
            for item in limits:
                until, count = await self._attempt_state(conn, item.subject, since)
                if (until is None or until <= at) and count >= item.limit:
                    await conn.execute(BAN_SET, item.subject, ban_until)
                    banned.append(item.subject)
        return banned

    async def login_bans_active(self, now: float) -> dict[str, float]:
        rows = await self._rows("login_bans_active", BANS_ACTIVE, now)
        return {row["subject"]: row["until"] for row in rows}

    # -- audit chain heads ------------------------------------------------------------------

    async def audit_head_put(self, chain: str, seq: int, hash: str, at: float) -> None:
        await self._run("audit_head_put", AUDIT_HEAD_PUT, chain, seq, hash, at)

    async def audit_heads(self) -> list[AuditHead]:
        rows = await self._rows("audit_heads", AUDIT_HEADS)
        return [AuditHead(r["chain"], r["seq"], r["hash"], r["at"]) for r in rows]

    # -- signing keys -----------------------------------------------------------------------

    async def signing_keys(self) -> list[SigningKeyRecord]:
        rows = await self._rows("signing_keys", SIGNING_KEYS)
        return [
            SigningKeyRecord(
                r["kid"],
                r["algorithm"],
                bytes(r["sealed_private"]),
                json.loads(r["public_jwk"]),
                r["created_at"],
                r["retired_at"],
            )
            for r in rows
        ]

    async def signing_key_add(self, record: SigningKeyRecord) -> None:
        await self._run(
            "signing_key_add",
            SIGNING_KEY_ADD,
            record.kid,
            record.algorithm,
            record.sealed_private,
            _dump_json(record.public_jwk),
            record.created_at,
            record.retired_at,
        )

    async def signing_key_retire(self, kid: str, at: float) -> None:
        await self._run("signing_key_retire", SIGNING_KEY_RETIRE, at, kid)

    async def signing_key_delete(self, kid: str) -> None:
        await self._run("signing_key_delete", SIGNING_KEY_DELETE, kid)

    # -- TOTP -------------------------------------------------------------------------------

    async def totp_get(self, user: str) -> TotpRecord | None:
        row = await self._row("totp_get", TOTP_GET, user)
        if row is None:
            return None
        return TotpRecord(
            row["username"], bytes(row["sealed_secret"]), row["enrolled_at"], row["last_step"]
        )

    async def totp_set(self, user: str, sealed_secret: bytes, enrolled_at: float) -> None:
        await self._run("totp_set", TOTP_SET, user, sealed_secret, enrolled_at)

    async def totp_enroll(self, user: str, sealed_secret: bytes, enrolled_at: float) -> bool:
        return await self._run("totp_enroll", TOTP_ENROLL, user, sealed_secret, enrolled_at) == 1

    async def totp_delete(self, user: str) -> None:
        async with self._write("totp_delete") as conn:
            await conn.execute(TOTP_DELETE, user)
            await conn.execute(RECOVERY_CODES_DELETE, user)

    async def totp_claim_step(self, user: str, step: int) -> bool:
        return await self._value("totp_claim_step", TOTP_CLAIM_STEP, user, step) is not None

    # -- recovery codes ---------------------------------------------------------------------

    async def recovery_codes_set(self, user: str, hashes: list[str], at: float) -> None:
        async with self._write("recovery_codes_set") as conn:
            await conn.execute(RECOVERY_CODES_DELETE, user)
            await conn.executemany(RECOVERY_CODE_ADD, [(user, h, at) for h in hashes])

    async def recovery_codes(self, user: str) -> list[RecoveryCodeRecord]:
        rows = await self._rows("recovery_codes", RECOVERY_CODES, user)
        return [RecoveryCodeRecord(r["id"], r["code_hash"], r["used_at"]) for r in rows]

    async def recovery_code_use(self, user: str, id: int, at: float) -> bool:
        return await self._value("recovery_code_use", RECOVERY_CODE_USE, user, id, at) is not None

    # -- passwords --------------------------------------------------------------------------

    async def password_get(self, user: str) -> PasswordRecord | None:
        row = await self._row("password_get", PASSWORD_GET, user)
        if row is None:
            return None
        return PasswordRecord(
            row["username"], row["hash"], row["base_hash"], row["changed_at"], row["must_change"]
        )

    async def password_set(
        self, user: str, hash: str, base_hash: str | None, changed_at: float
    ) -> None:
        async with self._write("password_set") as conn:
            await conn.execute(PASSWORD_SET, user, hash, base_hash, changed_at)
            await conn.execute(PASSWORD_HISTORY_ADD, user, hash, changed_at)

    async def password_history(self, user: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        rows = await self._rows("password_history", PASSWORD_HISTORY, user, limit)
        return [r["hash"] for r in rows]

    async def password_expire(self, user: str) -> None:
        await self._run("password_expire", PASSWORD_EXPIRE, user)

    async def password_first_seen(self, user: str, base_hash: str, at: float) -> float:
        async with self._write("password_first_seen") as conn:
            await conn.execute(PASSWORD_SEEN_ADD, user, base_hash, at)
            return await conn.fetchval(PASSWORD_SEEN_GET, user, base_hash)

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
        id_ = await self._value("sign_in_add", SIGN_IN_ADD, *params)
        return SignInRecord(id_, *params)

    async def sign_ins(
        self,
        user: str,
        *,
        since: float | None = None,
        result: str | None = None,
        limit: int = 50,
    ) -> list[SignInRecord]:
        rows = await self._rows("sign_ins", SIGN_INS, user, since, result, limit)
        return [_sign_in(r) for r in rows]

    async def sign_ins_purge(self, before: float) -> int:
        return await self._run("sign_ins_purge", SIGN_INS_PURGE, before)

    # -- requests per user and hour ---------------------------------------------------------

    async def request_counts_add(self, counts: dict[tuple[str, int], int]) -> None:
        if not counts:
            return
        # Sorted, so two processes flushing overlapping rows lock them in the same order and
        # cannot deadlock.
        rows = sorted((user, hour, n) for (user, hour), n in counts.items())
        async with self._write("request_counts_add") as conn:
            await conn.executemany(REQUEST_COUNT_ADD, rows)

    async def request_count(self, user: str, since_hour: int) -> int:
        return int(await self._value("request_count", REQUEST_COUNT, user, since_hour))

    async def request_counts_purge(self, before_hour: int) -> int:
        return await self._run("request_counts_purge", REQUEST_COUNTS_PURGE, before_hour)

    # -- incidents --------------------------------------------------------------------------

    async def incident_open_or_extend(
        self, user: str, at: float, evidence: list[SignInRecord], *, create: bool = True
    ) -> IncidentUpdate:
        async with self._write("incident_open_or_extend") as conn:
            opened = False
            if create:
                # A concurrent opener holds the index entry: this INSERT waits for its commit,
                # then does nothing; the SELECT below (a new snapshot) sees its incident.
                opened = _count(await conn.execute(INCIDENT_OPEN, user, at)) == 1
            row = await conn.fetchrow(INCIDENT_ACTIVE_FOR_UPDATE, user)
            if row is None:
                return IncidentUpdate(None, False, 0)
            incident = _incident(row)
            added = 0
            for e in evidence:
                added += _count(
                    await conn.execute(
                        INCIDENT_EVIDENCE_ADD,
                        incident.id,
                        e.id,
                        e.user,
                        e.result,
                        e.ip,
                        e.country,
                        e.geoip_source,
                        e.user_agent,
                        e.at,
                    )
                )
            if added or opened:
                countries = merge_countries(incident.countries, evidence)
                row = await conn.fetchrow(INCIDENT_SET_COUNTRIES, incident.id, countries, at)
                incident = _incident(row)
        return IncidentUpdate(incident, opened, added)

    async def incident_get(self, id: int) -> IncidentRecord | None:
        row = await self._row("incident_get", INCIDENT_GET, id)
        return None if row is None else _incident(row)

    async def incidents(
        self, *, state: str | None = None, user: str | None = None, limit: int = 100
    ) -> list[IncidentRecord]:
        rows = await self._rows("incidents", INCIDENTS, state, user, limit)
        return [_incident(r) for r in rows]

    async def incident_sign_ins(self, id: int) -> list[SignInRecord]:
        return [_sign_in(r) for r in await self._rows("incident_sign_ins", INCIDENT_SIGN_INS, id)]

    async def incident_counts(self) -> dict[str, int]:
        rows = await self._rows("incident_counts", INCIDENT_COUNTS)
        return {r["state"]: int(r["n"]) for r in rows}

    async def incident_acknowledge(self, id: int, by: str, at: float) -> bool:
        return await self._run("incident_acknowledge", INCIDENT_ACKNOWLEDGE, id, by, at) == 1

    async def incident_resolve(self, id: int, by: str, at: float, note: str) -> bool:
        return await self._run("incident_resolve", INCIDENT_RESOLVE, id, by, at, note) == 1

    async def incidents_purge(self, resolved_before: float) -> int:
        async with self._write("incidents_purge") as conn:
            await conn.execute(INCIDENTS_PURGE_EVIDENCE, resolved_before)
            return _count(await conn.execute(INCIDENTS_PURGE, resolved_before))

    # -- trusted login IPs ------------------------------------------------------------------

    async def trusted_ip_add(
        self, cidr: str, scope: str, description: str, by: str, at: float
    ) -> TrustedIpRecord:
        row = await self._row("trusted_ip_add", TRUSTED_IP_ADD, cidr, scope, description, at, by)
        assert row is not None
        return _trusted_ip(row)

    async def trusted_ips(self, scope: str | None = None) -> list[TrustedIpRecord]:
        return [_trusted_ip(r) for r in await self._rows("trusted_ips", TRUSTED_IPS, scope)]

    async def trusted_ip_get(self, id: int) -> TrustedIpRecord | None:
        row = await self._row("trusted_ip_get", TRUSTED_IP_GET, id)
        return None if row is None else _trusted_ip(row)

    async def trusted_ip_remove(self, id: int) -> TrustedIpRecord | None:
        row = await self._row("trusted_ip_remove", TRUSTED_IP_REMOVE, id)
        return None if row is None else _trusted_ip(row)

    # -- meta -------------------------------------------------------------------------------

    async def meta_get(self, key: str) -> str | None:
        return await self._value("meta_get", META_GET, key)

    async def meta_put(self, key: str, value: str) -> None:
        await self._run("meta_put", META_PUT, key, value)

    # -- notification outbox ----------------------------------------------------------------

    @staticmethod
    def _outbox_record(row: asyncpg.Record) -> OutboxRecord:
        return OutboxRecord(
            int(row["id"]),
            row["kind"],
            row["coalesce_key"],
            row["dedupe_key"],
            json.loads(row["recipients"]),
            json.loads(row["payload"]),
            row["created_at"],
            row["not_before"],
            row["state"],
            int(row["attempts"]),
            row["message_id"],
            row["last_error"],
            row["done_at"],
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
                await conn.execute(OUTBOX_KEY_LOCK, coalesce_key)
                last = await conn.fetchval(OUTBOX_LAST_DUE, coalesce_key)
            not_before = coalesced_not_before(last, at, coalesce_window)
            new_id = await conn.fetchval(
                OUTBOX_ADD,
                kind,
                coalesce_key,
                dedupe_key,
                json.dumps(recipients),
                _dump_json(payload),
                at,
                not_before,
            )
        return None if new_id is None else int(new_id)

    async def outbox_claim(self, owner: str, now: float, lease: float) -> list[OutboxRecord]:
        async with self._write("outbox_claim") as conn:
            await conn.execute(OUTBOX_CLAIM_LOCK, OUTBOX_CLAIM_LOCK_KEY)
            row = await conn.fetchrow(OUTBOX_NEXT_DUE, now)
            if row is None:
                return []
            claimed = await conn.fetch(
                OUTBOX_CLAIM, owner, now + lease, now, row["id"], row["coalesce_key"]
            )
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
        await self._run("outbox_retry", OUTBOX_RETRY, not_before, error, narrowed, ids, owner)

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
        return await self._run(
            "outbox_finish", OUTBOX_FINISH, state, at, message_id, error, ids, owner
        )

    async def outbox_list(self, state: str, limit: int) -> list[OutboxRecord]:
        sql = OUTBOX_LIST_PENDING if state == "pending" else OUTBOX_LIST_DONE
        return [self._outbox_record(r) for r in await self._rows("outbox_list", sql, state, limit)]

    async def outbox_stats(self) -> OutboxStats:
        counts = {r["state"]: r for r in await self._rows("outbox_stats", OUTBOX_COUNTS)}
        error = await self._value("outbox_stats", OUTBOX_LAST_ERROR)
        pending = counts.get("pending")
        return OutboxStats(
            pending=int(pending["n"]) if pending else 0,
            failed=int(counts["failed"]["n"]) if "failed" in counts else 0,
            sent=int(counts["sent"]["n"]) if "sent" in counts else 0,
            oldest_pending_at=pending["oldest"] if pending else None,
            last_error=error,
        )

    async def outbox_purge(self, before: float) -> int:
        return await self._run("outbox_purge", OUTBOX_PURGE, before)

    # -- system messages --------------------------------------------------------------------

    async def system_message_raise(self, key: str, text: str, at: float) -> bool:
        async with self._write("system_message_raise") as conn:
            new = await conn.fetchval(SYSTEM_MESSAGE_RAISE, key, text, at) is not None
            if not new:
                await conn.execute(SYSTEM_MESSAGE_TEXT, key, text)
        return new

    async def system_message_clear(self, key: str) -> bool:
        return await self._run("system_message_clear", SYSTEM_MESSAGE_CLEAR, key) == 1

    async def system_messages(self) -> list[SystemMessageRecord]:
        rows = await self._rows("system_messages", SYSTEM_MESSAGES)
        return [SystemMessageRecord(r["key"], r["text"], r["since"]) for r in rows]
