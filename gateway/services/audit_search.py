"""Search the audit trail newest first, streaming from the end of the files backwards.

The admin console's `admin/audit` page and its JSON Lines export read through here
(docs/http.md). A trail can be gigabytes, so nothing here loads it: files are
read backwards in 1 MiB blocks and a line is parsed only when the cheap tests pass:

1. the time range, compared on the line's first bytes (every record starts with
   `{"ts":"YYYY-MM-DDTHH:MM:SS.mmmZ"`, so ISO strings of one format compare as times);
2. a needle, the filter rendered as it appears in the file (`"event":"login.failure"`): a block
   without it is skipped whole by one `bytes.find`, a line without it is never parsed;
3. the exact test on the parsed record.

Records are in time order within a file and files are rotated by date, so a search with `since`
stops at the first record older than `since` minus `ORDER_SLACK` (several workers append to one
file; their lines interleave up to about a second out of order).

Blocking file reads: call from a thread (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from gateway.services import audit_rotate

BLOCK = 1024 * 1024
ORDER_SLACK = timedelta(seconds=60)
_TS_START = b'{"ts":"'
_TS_END = len(_TS_START) + len("2026-01-01T00:00:00.000Z")

#: The form's filter fields (docs/http.md), in the order the page shows them.
FILTER_FIELDS = ("since", "until", "event", "principal", "client_ip", "app", "decision")


class QueryError(ValueError):
    """A filter value that cannot be used; the message names the field."""


def ts_text(moment: datetime) -> str:
    """A time in the audit trail's own format (UTC, milliseconds, `Z`)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(field: str, value: str, *, end_of_day: bool = False) -> datetime:
    """ISO 8601 date or date-time; without an offset it is UTC. A bare date in `until` means
    the end of that day, so `until=2026-12-03` includes the 3rd."""
    value = value.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1, microseconds=-1000) if end_of_day else moment
        moment = datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        raise QueryError(
            f"{field}: {value[:40]!r} is not an ISO 8601 date or time "
            "(e.g. 2026-12-03 or 2026-12-03T08:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """The filters of one search; empty ones match everything."""

    since: str | None = None  # in ts_text() format, inclusive
    until: str | None = None  # in ts_text() format, inclusive
    event: str | None = None  # exact, or a prefix ending in `*` (`admin.*`)
    principal: str | None = None
    client_ip: str | None = None  # an address, or a network (`203.0.113.0/24`)
    app: str | None = None
    decision: str | None = None  # exact (`deny:forbidden`), or `deny` for every denial

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> AuditQuery:
        """From the form's fields; raises QueryError naming the first bad one."""
        values = {f: (params.get(f) or "").strip()[:200] or None for f in FILTER_FIELDS}
        since = until = None
        if values["since"]:
            since = ts_text(parse_time("since", values["since"]))
        if values["until"]:
            until = ts_text(parse_time("until", values["until"], end_of_day=True))
        if values["client_ip"]:
            try:
                ipaddress.ip_network(values["client_ip"], strict=False)
            except ValueError:
                raise QueryError(
                    f"client_ip: {values['client_ip'][:60]!r} is not an IP address or network"
                ) from None
        return cls(
            since=since,
            until=until,
            event=values["event"],
            principal=values["principal"],
            client_ip=values["client_ip"],
            app=values["app"],
            decision=values["decision"],
        )

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f) for f in FILTER_FIELDS)

    def needle(self) -> bytes | None:
        """Bytes every matching line contains, for skipping blocks and lines unparsed."""
        if self.event:
            if self.event.endswith("*"):
                return b'"event":' + orjson.dumps(self.event[:-1])[:-1]  # without closing quote
            return b'"event":' + orjson.dumps(self.event)
        for name in ("principal", "app"):
            value = getattr(self, name)
            if value:
                return f'"{name}":'.encode() + orjson.dumps(value)
        if self.decision:
            if self.decision == "deny":
                return b'"decision":"deny:'
            return b'"decision":' + orjson.dumps(self.decision)
        if self.client_ip and "/" not in self.client_ip:
            return b'"client_ip":' + orjson.dumps(self._client_ip_text())
        return None

    def _client_ip_text(self) -> str:
        assert self.client_ip is not None
        return str(ipaddress.ip_address(self.client_ip))

    def matches(self, record: Mapping[str, Any]) -> bool:
        """The exact test on a parsed record (the time range is tested on the raw line)."""
        if self.event:
            event = record.get("event")
            if not isinstance(event, str):
                return False
            if self.event.endswith("*"):
                if not event.startswith(self.event[:-1]):
                    return False
            elif event != self.event:
                return False
        if self.principal and record.get("principal") != self.principal:
            return False
        if self.app and record.get("app") != self.app:
            return False
        if self.decision:
            decision = record.get("decision")
            if not isinstance(decision, str):
                return False
            if self.decision == "deny":
                if not decision.startswith("deny:"):
                    return False
            elif decision != self.decision:
                return False
        return not self.client_ip or _ip_matches(self.client_ip, record.get("client_ip"))


def _ip_matches(wanted: str, value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    if "/" in wanted:
        network = ipaddress.ip_network(wanted, strict=False)
        return address.version == network.version and address in network
    return address == ipaddress.ip_address(wanted)


def trail_files(path: Path) -> list[Path]:
    """The audit file and its rotated files (`audit.path` plus a date), newest first.

    Compressed copies (`.gz`, made by an operator's own tooling) are not searched.
    """
    return list(reversed(audit_rotate.trail_files(path)))


def _blocks_backwards(f: BinaryIO, block: int = BLOCK) -> Iterator[bytes]:
    """Chunks of whole lines from the end of the file to its start, each chunk in file order.

    A line still being written at the end (no newline yet) is left out.
    """
    pos = f.seek(0, os.SEEK_END)
    carry = b""  # the end of a line that starts in an earlier block
    seen_end = False  # found the newline that ends the last complete line
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + carry
        carry = b""
        if not seen_end:
            cut = data.rfind(b"\n")
            if cut < 0:
                continue  # all of it belongs to the unfinished last line
            data, seen_end = data[: cut + 1], True
        if pos > 0:
            cut = data.find(b"\n")
            if cut < 0:
                carry = data
                continue
            carry, data = data[: cut + 1], data[cut + 1 :]
        if data:
            yield data


def _oldest_ts(chunk: bytes) -> bytes | None:
    if chunk.startswith(_TS_START):
        return chunk[len(_TS_START) : _TS_END]
    return None


def matching_lines(files: list[Path], query: AuditQuery) -> Iterator[bytes]:
    """Every matching line (without its newline), newest first, across the files."""
    needle = query.needle()
    # The needle only narrows: the same bytes could sit in a nested object, so a line that
    # has them is still parsed and tested exactly (a parse is ~2 us, reading is the cost).
    needs_parse = any(getattr(query, f) for f in FILTER_FIELDS[2:])
    since = query.since.encode() if query.since else None
    until = query.until.encode() if query.until else None
    stop = None
    if query.since:
        moment = datetime.fromisoformat(query.since.replace("Z", "+00:00")) - ORDER_SLACK
        stop = ts_text(moment).encode()
    for path in files:
        try:
            f = open(path, "rb")  # noqa: SIM115 -- closed below; generator may be abandoned
        except OSError:
            continue
        with f:
            for chunk in _blocks_backwards(f):
                oldest = _oldest_ts(chunk)
                last_chunk = stop is not None and oldest is not None and oldest < stop
                if needle is not None and needle not in chunk:
                    if last_chunk:
                        return
                    continue
                for line in reversed(chunk.split(b"\n")):
                    if not line:
                        continue
                    ts = line[len(_TS_START) : _TS_END] if line.startswith(_TS_START) else None
                    if ts is not None:
                        if until is not None and ts > until:
                            continue
                        if since is not None and ts < since:
                            if stop is not None and ts < stop:
                                return
                            continue
                    elif since is not None or until is not None:
                        continue
                    if needle is not None and needle not in line:
                        continue
                    if needs_parse:
                        record = _parse(line)
                        if record is None or not query.matches(record):
                            continue
                    yield line
                if last_chunk:
                    return


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


@dataclass(frozen=True, slots=True)
class SearchPage:
    records: list[dict[str, Any]]
    lines: list[bytes]  # the same records as stored in the file
    page: int
    more: bool  # a further page exists


def search_page(files: list[Path], query: AuditQuery, page: int, size: int) -> SearchPage:
    """One page (1-based) of matches, newest first; looks one match ahead to know of `more`."""
    skip = (page - 1) * size
    records: list[dict[str, Any]] = []
    raw: list[bytes] = []
    more = False
    lines = matching_lines(files, query)
    try:
        for index, line in enumerate(lines):
            if index < skip:
                continue
            if len(records) == size:
                more = True
                break
            record = _parse(line)
            if record is not None:
                records.append(record)
                raw.append(line)
    finally:
        lines.close()
    return SearchPage(records, raw, page, more)


def export_batches(
    files: list[Path], query: AuditQuery, *, batch_bytes: int = 256 * 1024
) -> Iterator[bytes]:
    """Every match as JSON Lines (the lines as stored, hashes included), in batches."""
    batch: list[bytes] = []
    size = 0
    for line in matching_lines(files, query):
        batch.append(line)
        size += len(line) + 1
        if size >= batch_bytes:
            yield b"\n".join(batch) + b"\n"
            batch, size = [], 0
    if batch:
        yield b"\n".join(batch) + b"\n"
