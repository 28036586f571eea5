"""The state store: `await open_store(settings.state, config_dir)` gives a `StateStore`.

See `base.py` for the protocol and its rules, `sqlite.py` (the default) and `postgres.py` for
the implementations, `url.py` for the accepted URLs.
"""

from __future__ import annotations

from pathlib import Path

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
    StateStore,
    StoreConflict,
    StoreError,
    StoreUnavailable,
    SystemMessageRecord,
    TotpRecord,
    TrustedIpRecord,
)
from .url import ACCEPTED_FORMS, PostgresTarget, SqliteTarget, parse_store_url

__all__ = [
    "ACCEPTED_FORMS",
    "AttemptLimit",
    "AttemptReservation",
    "AuditHead",
    "IncidentRecord",
    "IncidentUpdate",
    "OutboxRecord",
    "OutboxStats",
    "PasswordRecord",
    "RecoveryCodeRecord",
    "SessionRecord",
    "SignInRecord",
    "SigningKeyRecord",
    "StateStore",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
    "SystemMessageRecord",
    "TotpRecord",
    "TrustedIpRecord",
    "open_store",
    "parse_store_url",
]


async def open_store(url: str, base_dir: Path) -> StateStore:
    """Open the store named by `url` (relative sqlite paths resolve against `base_dir`).

    The schema is created or migrated before this returns. Raises ValueError for a URL of an
    unknown form, `StoreUnavailable` when the database cannot be reached and `StoreError` when
    it cannot be migrated.
    """
    target = parse_store_url(url, base_dir)
    if isinstance(target, SqliteTarget):
        from .sqlite import SqliteStore

        return await SqliteStore.open(target.path)
    assert isinstance(target, PostgresTarget)
    try:
        from .postgres import PostgresStore
    except ModuleNotFoundError as exc:  # asyncpg is the optional extra "postgres"
        if exc.name != "asyncpg":
            raise
        raise StoreError(
            "a postgresql:// state store needs asyncpg: pip install 'access-gateway[postgres]'"
        ) from exc
    return await PostgresStore.open(target.dsn)
