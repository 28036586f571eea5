"""The `state:` URL of gateway.yaml, parsed into where the store lives (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ACCEPTED_FORMS = (
    "sqlite:///relative/path.db (relative to the folder of gateway.yaml), "
    "sqlite:////absolute/path.db, sqlite:///:memory:, "
    "postgresql://user:password@host:5432/dbname (or postgres://...)"
)

MEMORY = ":memory:"


@dataclass(frozen=True, slots=True)
class SqliteTarget:
    """A SQLite database: an absolute file path, or `:memory:`."""

    path: Path | str

    @property
    def in_memory(self) -> bool:
        return self.path == MEMORY


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A PostgreSQL database, as a libpq-style DSN handed to asyncpg unchanged."""

    dsn: str


def redact(url: str) -> str:
    """The URL with its password replaced by ***, fit for messages and logs: the one in the
    user info and libpq's `password=` query parameter. A URL that cannot be parsed is not shown
    beyond its scheme (where its password is cannot be known)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return f"{url.partition('://')[0][:20]}://(not shown: the URL cannot be parsed)"
    pairs = [p.partition("=") for p in parts.query.split("&")] if parts.query else []
    in_query = any(name.strip().lower() == "password" for name, _, _ in pairs)
    if not password and not in_query:
        return url  # as written (urlunsplit would respell some URLs)
    if in_query:
        query = "&".join(
            f"{name}=***" if name.strip().lower() == "password" else f"{name}{sep}{value}"
            for name, sep, value in pairs
        )
        parts = parts._replace(query=query)
    if password:
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = netloc[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{userinfo}:***@{netloc[1]}")
    return urlunsplit(parts)


def _invalid(url: str, why: str) -> ValueError:
    return ValueError(f"state store URL {redact(url)!r}: {why}; accepted forms: {ACCEPTED_FORMS}")


def parse_store_url(url: str, base_dir: Path) -> SqliteTarget | PostgresTarget:
    """Parse `url`; relative sqlite paths resolve against `base_dir`. Raises ValueError."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise _invalid(url, "not a URL")
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - validates the port number
        except ValueError as exc:
            raise _invalid(url, str(exc)) from None
        return PostgresTarget(url)
    if scheme != "sqlite":
        raise _invalid(url, f"unknown scheme {scheme!r}")
    if not rest.startswith("/"):
        raise _invalid(url, "a sqlite URL has no host: write three slashes, sqlite:///")
    if "?" in rest or "#" in rest:
        raise _invalid(url, "a sqlite URL takes no query or fragment")
    path = rest[1:]
    if path == MEMORY:
        return SqliteTarget(MEMORY)
    if not path or path.endswith("/"):
        raise _invalid(url, "no database file name")
    if path.startswith("/"):
        return SqliteTarget(Path(path))
    return SqliteTarget((base_dir / path).absolute())
