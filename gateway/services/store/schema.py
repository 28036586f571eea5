"""Versioned migrations: numbered .sql files shipped as package data, one folder per dialect.

`migrations/<dialect>/NNNN_what_it_does.sql` holds the statements of schema change NNNN.
Files are never edited once released; a change is a new file with a new, higher number, in every
dialect's folder. Numbers need not be consecutive (parallel branches reserve numbers ahead of
time), only unique. Each implementation applies every file whose version it has not recorded
yet, in version order, inside one transaction, under a lock that keeps concurrent workers from
racing.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .base import StoreError

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """The dialect's migrations in version order; versions are unique and positive, gaps allowed."""
    folder = resources.files(__package__).joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise RuntimeError(
                    f"migration file {dialect}/{entry.name}: name must look like 0001_what.sql"
                )
            continue
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or (versions and versions[0] < 1):
        raise RuntimeError(
            f"migrations/{dialect}: versions must be unique and at least 1, got {versions}"
        )
    return tuple(found)


def pending_migrations(
    migrations: tuple[Migration, ...], applied: set[int], where: str
) -> list[Migration]:
    """The migrations still to apply, in order; refuses a database that knows a newer schema.

    Decided by the set of applied versions rather than by the highest one, so a file numbered
    below the newest (merged later from a parallel branch) is still applied.
    """
    known = {m.version for m in migrations}
    unknown = sorted(applied - known)
    if unknown:
        raise StoreError(
            f"{where}: the database has schema version {unknown[-1]}, newer than this gateway "
            f"knows ({max(known, default=0)}); upgrade the gateway"
        )
    return [m for m in migrations if m.version not in applied]


def split_sqlite_script(script: str) -> list[str]:
    """Split a script into complete statements, so they can run inside our own transaction.

    (`sqlite3.executescript` would COMMIT first, breaking the migration's BEGIN IMMEDIATE.)
    """
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(
        line for line in buffer.splitlines() if line.strip() and not line.lstrip().startswith("--")
    )
    if rest:
        raise RuntimeError(f"incomplete SQL statement at the end of a migration: {rest[:80]!r}")
    return statements
