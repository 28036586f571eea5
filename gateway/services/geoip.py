"""The country of a client address, looked up only at sign-in (never on proxied requests).

    geoip = GeoIp(database=Path("/data/GeoLite2-Country.mmdb"))   # or GeoIp(None): bundled
    verdict = geoip.lookup("81.2.69.142")   # GeoVerdict(country="GB", source="GeoLite2-...")

Two implementations of one narrow protocol, `CountryDatabase`:

- `MaxMindDatabase`: an operator's MaxMind-format file (`geoip.database`: GeoLite2 or GeoIP2
  Country/City, DB-IP Lite Country/City...) read with `maxminddb`. The file is stat()ed at each
  lookup (sign-ins are rare; a stat costs about a microsecond) and re-opened when its inode, size
  or mtime changed, so a database swapped on disk (geoipupdate renames a new file into place) is
  used from the next sign-in on.
- `BundledDatabase`: the offline default, `iptocc`, which embeds the five regional internet
  registries' delegation files (the allocation data every IP-to-country table starts from) in
  a compiled lookup table and is republished on PyPI as those files change. Why this one: it is
  maintained (releases follow the registries' data), needs no download or licence key at run time
  (MaxMind's GeoLite2 needs an account), is tiny, and answers in well under a microsecond. It
  knows where an address block is *registered*, which is coarser than a geolocation database for
  multinational networks: operators who need better name a MaxMind-format file.

Whatever the database says, an address that is not globally routable has no country and never
counts (`countable()`): private, shared (CGN), loopback, link-local, documentation, benchmarking,
multicast and reserved IPv4 ranges; for IPv6 everything outside global unicast 2000::/3, and
inside it the IETF protocol, documentation and 6to4 blocks. IPv4-mapped IPv6 addresses are
judged as the IPv4 address they carry.

Every verdict names the database that judged it (`source`), recorded with each sign-in.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import structlog
from maxminddb.errors import InvalidDatabaseError

from gateway.policy.ipset import CompiledIPSet, parse_client_ip

log = structlog.get_logger("gateway.geoip")

# IANA special-purpose registries (RFC 6890 and successors), plus multicast and reserved space.
_NOT_GLOBAL_V4 = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.88.99.0/24",  # deprecated 6to4 relay anycast
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",  # documentation (TEST-NET-3)
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the limited broadcast address
)
_GLOBAL_UNICAST_V6 = CompiledIPSet.build(["2000::/3"])
_NOT_GLOBAL_V6 = (
    "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, benchmarking...)
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4: the location is that of an embedded IPv4 relay address, if any
    "3fff::/20",  # documentation (RFC 9637)
)
_NOT_GLOBAL = CompiledIPSet.build(_NOT_GLOBAL_V4 + _NOT_GLOBAL_V6)


def countable(ip: str | None) -> str | None:
    """The canonical text of `ip` if it is a globally routable unicast address, else None."""
    parsed = parse_client_ip(ip) if ip else None
    if parsed is None:
        return None
    version, value = parsed
    if version == 6 and not _GLOBAL_UNICAST_V6.contains(value, 6):
        return None
    if _NOT_GLOBAL.contains(value, version):
        return None
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


@dataclass(frozen=True, slots=True)
class GeoVerdict:
    country: str | None  # ISO 3166-1 alpha-2, upper case
    source: str  # the database that judged it, e.g. "GeoLite2-Country 2026-11-28"


class CountryDatabase(Protocol):
    """One country database; `country` gets only countable, canonical addresses."""

    @property
    def source(self) -> str: ...

    def country(self, ip: str) -> str | None: ...


def _iso_code(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return None


class BundledDatabase:
    """The offline default: iptocc's table of the registries' allocations."""

    def __init__(self) -> None:
        import iptocc

        self._lookup = iptocc.country_code
        self.source = f"iptocc {metadata.version('iptocc')}"

    def country(self, ip: str) -> str | None:
        return _iso_code(self._lookup(ip))


class MaxMindDatabase:
    """A MaxMind-format file, re-opened when the file on disk changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # lookups may run in worker threads
        self._reader: Any = None
        self._signature: tuple[int, int, int] | None = None
        self.source = str(path)
        self.built_at: float | None = None
        self.refresh()

    def refresh(self) -> None:
        """Open the file again if it is another one than the reader's; raises OSError,
        ValueError or InvalidDatabaseError when the new file cannot be read."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        import maxminddb

        stat = os.stat(self.path)
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if signature == self._signature:
            return
        reader = maxminddb.open_database(str(self.path), maxminddb.MODE_AUTO)
        old, self._reader, self._signature = self._reader, reader, signature
        meta = reader.metadata()
        self.built_at = float(meta.build_epoch)
        built = dt.datetime.fromtimestamp(meta.build_epoch, dt.UTC).date().isoformat()
        self.source = f"{meta.database_type} {built}"
        if old is not None:
            old.close()
        log.info("geoip_database_opened", path=str(self.path), source=self.source)

    def country(self, ip: str) -> str | None:
        with self._lock:
            if self._reader is None:
                return None
            record = self._reader.get(ip)
        if not isinstance(record, dict):
            return None
        for key in ("country", "registered_country"):
            entry = record.get(key)
            if isinstance(entry, dict) and (code := _iso_code(entry.get("iso_code"))):
                return code
        return None

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
                self._signature = None


class GeoIp:
    """Country lookups for sign-ins: the configured MaxMind file, else the bundled table.

    `configure(path)` is called with `geoip.database` (resolved) at start and after each reload.
    A configured file that cannot be read is logged (once per problem) and the bundled table
    answers meanwhile, naming itself as the source: a broken download must not silently switch
    incident detection off.
    """

    def __init__(self, database: Path | None = None) -> None:
        self._bundled: BundledDatabase | None = None
        self._path: Path | None = None
        self._maxmind: MaxMindDatabase | None = None
        self._problem: str | None = None
        self.configure(database)

    def configure(self, database: Path | None) -> None:
        if database == self._path:
            return
        if self._maxmind is not None:
            self._maxmind.close()
        self._path, self._maxmind, self._problem = database, None, None

    @property
    def bundled(self) -> BundledDatabase:
        if self._bundled is None:
            self._bundled = BundledDatabase()
        return self._bundled

    def database(self) -> CountryDatabase:
        """The database that answers now."""
        if self._path is None:
            return self.bundled
        try:
            if self._maxmind is None:
                self._maxmind = MaxMindDatabase(self._path)
            else:
                self._maxmind.refresh()
        except (OSError, ValueError, InvalidDatabaseError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._problem:
                log.error(
                    "geoip_database_unreadable",
                    path=str(self._path),
                    error=problem,
                    fallback=self.bundled.source,
                )
                self._problem = problem
            return self.bundled
        self._problem = None
        return self._maxmind

    @property
    def built_at(self) -> float | None:
        """When the configured file was built (for the "older than 60 days" system message);
        None for the bundled table or an unreadable file."""
        db = self.database()
        return db.built_at if isinstance(db, MaxMindDatabase) else None

    def lookup(self, ip: str | None) -> GeoVerdict:
        """The country of `ip`, None for addresses that are not countable or unknown."""
        db = self.database()
        canonical = countable(ip)
        return GeoVerdict(db.country(canonical) if canonical else None, db.source)

    def close(self) -> None:
        if self._maxmind is not None:
            self._maxmind.close()
