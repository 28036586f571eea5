"""Versioned migrations: numbered .sql files shipped as package data, one folder per dialect.

`migrations/<dialect>/NNNN_what_it_does.sql` holds the statements that bring the schema from
version NNNN-1 to NNNN. Files are never edited once released; a change is a new file with the
next number, in every dialect's folder. Each implementation applies the missing ones in order,
inside one transaction, under a lock that keeps concurrent workers from racing.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """The dialect's migrations in version order; versions must run 1, 2, 3... without gaps."""
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
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(
            f"migrations/{dialect}: versions must be 1..N without gaps or repeats, got {versions}"
        )
    return tuple(found)


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
