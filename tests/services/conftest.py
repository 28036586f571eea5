"""Fixtures for the state store conformance suite: one real database per implementation.

`store_backend` is parametrized over every `StateStore` implementation; each test gets a fresh,
empty database (a new SQLite file, or a new PostgreSQL schema dropped afterwards). Postgres
cases FAIL when the server is unreachable, unless GATEWAY_TEST_NO_POSTGRES=1 turns them into
skips. GATEWAY_TEST_POSTGRES overrides the server URL.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from gateway.services.store import StateStore
from gateway.services.store.postgres import PostgresStore
from gateway.services.store.sqlite import SqliteStore

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NO_POSTGRES = os.environ.get("GATEWAY_TEST_NO_POSTGRES") == "1"


@dataclass
class StoreBackend:
    """One empty database of one implementation; `open()` may be called several times."""

    kind: str
    url: str  # for open_store(url, base_dir) in this or another process
    base_dir: Path
    _opener: Callable[[], Awaitable[StateStore]]
    _opened: list[StateStore] = field(default_factory=list)

    async def open(self) -> StateStore:
        store = await self._opener()
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._opened:
            await store.close()


async def _sqlite_backend(tmp_path: Path) -> AsyncIterator[StoreBackend]:
    path = tmp_path / "state" / "gateway.db"
    backend = StoreBackend("sqlite", f"sqlite:///{path}", tmp_path, lambda: SqliteStore.open(path))
    try:
        yield backend
    finally:
        await backend.close_all()


async def _postgres_backend(tmp_path: Path) -> AsyncIterator[StoreBackend]:
    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc!r}"
        if NO_POSTGRES:
            pytest.skip(message + " (GATEWAY_TEST_NO_POSTGRES=1)")
        pytest.fail(message + "; set GATEWAY_TEST_NO_POSTGRES=1 to skip the Postgres cases")
    schema = f"t_{secrets.token_hex(6)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    backend = StoreBackend(
        "postgres",
        f"{POSTGRES_URL}{separator}search_path={schema}",
        tmp_path,
        lambda: PostgresStore.open(
            POSTGRES_URL, min_size=1, max_size=4, server_settings={"search_path": schema}
        ),
    )
    try:
        yield backend
    finally:
        try:
            await backend.close_all()
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
            await admin.close()


_BACKENDS = {"sqlite": _sqlite_backend, "postgres": _postgres_backend}


@pytest.fixture(params=sorted(_BACKENDS))
async def store_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreBackend]:
    """A fresh, empty database of each implementation (nothing opened yet)."""
    async for backend in _BACKENDS[request.param](tmp_path):
        yield backend


@pytest.fixture
async def store(store_backend: StoreBackend) -> StateStore:
    """An open, migrated store on a fresh database; closed after the test."""
    return await store_backend.open()


@pytest.fixture
async def postgres_backend(tmp_path: Path) -> AsyncIterator[StoreBackend]:
    """A fresh, empty PostgreSQL schema, for the tests about Postgres itself."""
    async for backend in _postgres_backend(tmp_path):
        yield backend
