"""Audit search over real files read backwards (gateway/services/audit_search.py)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.services import audit_search
from gateway.services.audit_search import (
    AuditQuery,
    QueryError,
    export_batches,
    matching_lines,
    search_page,
    trail_files,
)

START = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def record(minute: int, event: str = "request", **fields: Any) -> dict[str, Any]:
    base = {
        "ts": audit_search.ts_text(START + timedelta(minutes=minute)),
        "event": event,
        "request_id": f"r{minute}",
        "client_ip": "198.51.100.7",
        "surface": "dashboard",
        "app": "console",
        "principal": "alice",
        "auth": "password",
        "decision": "allow",
    }
    base.update(fields)
    base.update({"chain": "c1", "seq": minute, "prev": None, "hash": "h"})
    return base


def write(path: Path, records: list[dict[str, Any]], tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + tail)


def minutes(files: list[Path], query: AuditQuery) -> list[int]:
    return [int(orjson.loads(line)["request_id"][1:]) for line in matching_lines(files, query)]


@pytest.fixture
def trail(tmp_path: Path) -> list[Path]:
    """Minutes 0-99 in two rotated files and the current one, with varied fields."""
    audit = tmp_path / "audit" / "audit.jsonl"
    records = []
    for m in range(100):
        fields: dict[str, Any] = {}
        if m % 10 == 3:
            fields = {"event": "login.failure", "principal": "bob"}
            fields["decision"] = "deny:unauthenticated"
        if m % 10 == 5:
            fields = {"event": "admin.trusted_ip.added", "client_ip": "203.0.113.9"}
        if m % 25 == 7:
            fields = {"app": "billing", "client_ip": "2001:db8::5", "decision": "deny:forbidden"}
        records.append(record(m, **fields))
    write(audit.with_name("audit.jsonl.2026-11-29"), records[:30])
    write(audit.with_name("audit.jsonl.2026-11-30"), records[30:60])
    write(audit, records[60:], tail=b'{"ts":"2026-12-01T02:00:00.000Z","event":"req')
    (audit.parent / "audit.jsonl.2026-11-28.gz").write_bytes(b"not searched")
    (audit.parent / "other.jsonl").write_bytes(b"{}\n")
    return trail_files(audit)


class TestFiles:
    """Which files make the trail, newest first."""

    def test_current_then_rotated_by_date(self, trail: list[Path]):
        assert [p.name for p in trail] == [
            "audit.jsonl",
            "audit.jsonl.2026-11-30",
            "audit.jsonl.2026-11-29",
        ]

    def test_missing_trail_is_empty(self, tmp_path: Path):
        assert trail_files(tmp_path / "nope" / "audit.jsonl") == []


class TestReadingBackwards:
    """Lines come out newest first, whole, whatever the block size."""

    @pytest.mark.parametrize("block", [1, 7, 64, 300, 1 << 20])
    def test_block_boundaries(self, block: int):
        lines = [f'{{"n":{i},"pad":"{"x" * (i % 13)}"}}'.encode() for i in range(50)]
        data = b"\n".join(lines) + b"\n" + b'{"partial'
        chunks = list(audit_search._blocks_backwards(io.BytesIO(data), block))
        got = [line for chunk in chunks for line in reversed(chunk.split(b"\n")) if line]
        assert got == list(reversed(lines))

    def test_everything_newest_first_without_the_unfinished_line(self, trail: list[Path]):
        assert minutes(trail, AuditQuery()) == list(range(99, -1, -1))


class TestFilters:
    """Each filter of the form, alone and together."""

    def test_event_exact_and_prefix(self, trail: list[Path]):
        assert minutes(trail, AuditQuery(event="login.failure")) == list(range(93, 0, -10))
        assert minutes(trail, AuditQuery(event="admin.*")) == list(range(95, 0, -10))
        assert minutes(trail, AuditQuery(event="login")) == []

    def test_principal_app_decision(self, trail: list[Path]):
        assert minutes(trail, AuditQuery(principal="bob")) == list(range(93, 0, -10))
        assert minutes(trail, AuditQuery(app="billing")) == [82, 57, 32, 7]
        assert minutes(trail, AuditQuery(decision="deny:forbidden")) == [82, 57, 32, 7]
        denials = minutes(trail, AuditQuery(decision="deny"))
        assert denials == sorted(set(range(93, 0, -10)) | {82, 57, 32, 7}, reverse=True)

    def test_client_ip_address_and_network(self, trail: list[Path]):
        assert minutes(trail, AuditQuery(client_ip="203.0.113.9")) == list(range(95, 0, -10))
        assert minutes(trail, AuditQuery(client_ip="203.0.113.0/24")) == list(range(95, 0, -10))
        assert minutes(trail, AuditQuery(client_ip="2001:db8::/32")) == [82, 57, 32, 7]
        assert minutes(trail, AuditQuery(client_ip="2001:0db8:0::5")) == [82, 57, 32, 7]

    def test_time_range_inclusive(self, trail: list[Path]):
        query = AuditQuery.from_params(
            {"since": "2026-12-01T00:10:00Z", "until": "2026-12-01T01:00:00+00:00"}
        )
        assert minutes(trail, query) == list(range(60, 9, -1))
        local = AuditQuery.from_params({"since": "2026-12-01T02:10:00+02:00"})
        assert minutes(trail, local) == list(range(99, 9, -1))

    def test_until_a_date_includes_that_day(self, trail: list[Path]):
        assert len(minutes(trail, AuditQuery.from_params({"until": "2026-12-01"}))) == 100
        assert minutes(trail, AuditQuery.from_params({"until": "2026-11-30"})) == []

    def test_filters_combine(self, trail: list[Path]):
        query = AuditQuery.from_params(
            {"event": "login.failure", "since": "2026-12-01T00:30:00", "principal": "bob"}
        )
        assert minutes(trail, query) == [93, 83, 73, 63, 53, 43, 33]

    def test_since_stops_reading_older_files(self, trail: list[Path]):
        # A record in the oldest file that a full read would find: the search never gets there.
        write(trail[-1], [record(90, request_id="r1000")])
        query = AuditQuery.from_params({"since": "2026-12-01T00:45:00Z"})
        assert minutes(trail, query) == list(range(99, 44, -1))
        assert 1000 in minutes(trail, AuditQuery())

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"since": "yesterday"}, "since: 'yesterday' is not an ISO 8601 date or time"),
            ({"until": "2026-13-01"}, "until: '2026-13-01' is not an ISO 8601 date or time"),
            ({"client_ip": "10.0.0.300"}, "client_ip: '10.0.0.300' is not an IP address"),
        ],
    )
    def test_bad_values_are_named(self, params: dict[str, str], message: str):
        with pytest.raises(QueryError, match=message):
            AuditQuery.from_params(params)


class TestPages:
    """Pages of a search, and the export."""

    def test_pages_and_more(self, trail: list[Path]):
        first = search_page(trail, AuditQuery(), 1, 40)
        assert [r["seq"] for r in first.records] == list(range(99, 59, -1))
        assert first.more
        last = search_page(trail, AuditQuery(), 3, 40)
        assert [r["seq"] for r in last.records] == list(range(19, -1, -1))
        assert not last.more
        assert search_page(trail, AuditQuery(), 4, 40).records == []

    def test_export_is_the_stored_lines(self, trail: list[Path]):
        exported = b"".join(export_batches(trail, AuditQuery(event="admin.*"), batch_bytes=500))
        stored = [
            line
            for path in trail
            for line in path.read_bytes().split(b"\n")
            if b'"admin.trusted_ip.added"' in line
        ]
        assert exported.split(b"\n")[:-1] == sorted(
            stored, key=lambda line: orjson.loads(line)["ts"], reverse=True
        )
