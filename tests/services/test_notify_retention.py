"""Retention (section 7.4): daily audit rotation, purges with counts, and `audit verify` over
what remains: still whole from the checkpoint, still catching an edited line."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson

from gateway.policy.source import load
from gateway.services.audit import AuditLog
from gateway.services.audit_rotate import rotated_files, trail_files
from gateway.services.audit_verify import verify
from gateway.services.retention import run_retention
from gateway.services.store import StateStore
from tests.factories import gateway_files

KEY = b"retention-test-key-0123456789abc"
DAY = 86400.0
TODAY = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0).timestamp()


def day_name(path: Path, at: float) -> str:
    return f"{path.name}.{dt.datetime.fromtimestamp(at, dt.UTC).date().isoformat()}"


def write_days(path: Path, days_ago: list[int], per_day: int = 5) -> None:
    """Records on each of these days, through one AuditLog whose clock moves day by day."""
    now = [TODAY - days_ago[0] * DAY]
    with AuditLog(path, KEY, clock=lambda: now[0]) as audit:
        for ago in days_ago:
            now[0] = TODAY - ago * DAY
            audit.flush_sync()  # the writer's once-a-second check: rotates on a new day
            for i in range(per_day):
                audit.record("request", status=200, n=i, day=ago)
            audit.flush_sync()


class TestRotation:
    """The file gets its day's name when the UTC day changes; chains go on across files."""

    def test_daily_rotation_and_verify_across_files(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        write_days(path, [2, 1, 0])
        names = [p.name for _d, p in rotated_files(path)]
        assert names == [day_name(path, TODAY - 2 * DAY), day_name(path, TODAY - DAY)]
        assert [len(p.read_bytes().splitlines()) for p in trail_files(path)] == [5, 5, 5]
        report = verify(trail_files(path), KEY)
        assert report.ok and report.records == 15, report.problems

    def test_a_file_left_from_an_earlier_day_is_rotated_at_open(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        with AuditLog(path, KEY) as audit:
            audit.record("gateway.started")
        three_days_ago = TODAY - 3 * DAY
        os.utime(path, (three_days_ago, three_days_ago))
        with AuditLog(path, KEY) as audit:
            audit.record("gateway.started")
        assert [p.name for _d, p in rotated_files(path)] == [day_name(path, three_days_ago)]
        assert len(path.read_bytes().splitlines()) == 1

    def test_two_writers_rotate_once(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.jsonl"
        now = [TODAY - DAY]
        a = AuditLog(path, KEY, clock=lambda: now[0])
        b = AuditLog(path, KEY, clock=lambda: now[0])
        for audit in (a, b):
            audit.record("request", status=200)
            audit.flush_sync()
        now[0] = TODAY
        for audit in (a, b):
            audit.flush_sync()  # both notice the new day; one renames, the other follows
            audit.record("request", status=200)
            audit.flush_sync()
        a.close_sync()
        b.close_sync()
        assert len(rotated_files(path)) == 1
        report = verify(trail_files(path), KEY)
        assert report.ok and report.records == 4, report.problems


class TestPurge:
    """Old data goes, `retention.purged` says what went, and the rest still verifies."""

    async def test_audit_files_past_audit_days_and_the_checkpoint(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        files = gateway_files(tmp_path, security={"retention": {"audit_days": 365}})
        snapshot = load(files.config_file).snapshot
        assert snapshot is not None
        path = snapshot.paths.audit_file
        write_days(path, [400, 399, 2, 0])
        async with AuditLog(path, KEY) as audit:
            report = await run_retention(snapshot, store, audit, now=TODAY)
        assert report.audit_files == [
            day_name(path, TODAY - 400 * DAY),
            day_name(path, TODAY - 399 * DAY),
        ]
        assert [p.name for _d, p in rotated_files(path)] == [day_name(path, TODAY - 2 * DAY)]
        [purged] = [
            r
            for r in map(orjson.loads, path.read_bytes().splitlines())
            if r["event"] == "retention.purged"
        ]
        audit_files = purged["audit_files"]
        assert audit_files["count"] == 2
        assert (audit_files["from"], audit_files["to"]) == report.audit_range
        [(_chain, (seq, _hash))] = audit_files["checkpoint"].items()
        assert seq == 10  # the last record of the removed files

        remaining = trail_files(path)
        report_ok = verify(remaining, KEY)
        assert report_ok.ok, report_ok.problems

        # without the checkpoint record, the cut is reported
        without = verify(remaining[:1], KEY)
        assert any("starts at seq 11" in p for p in without.problems)

        # an edited line in what remains is still caught
        lines = remaining[0].read_bytes().splitlines(keepends=True)
        record = orjson.loads(lines[2])
        record["status"] = 500
        lines[2] = orjson.dumps(record) + b"\n"
        remaining[0].write_bytes(b"".join(lines))
        edited = verify(remaining, KEY)
        assert not edited.ok
        assert any("hash mismatch" in p and ":3" in p for p in edited.problems), edited.problems

    async def test_store_rows_past_their_age_are_counted_and_deleted(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        files = gateway_files(tmp_path, security={"retention": {"login_history_days": 90}})
        snapshot = load(files.config_file).snapshot
        assert snapshot is not None
        for ago in (200, 120, 91, 89, 1):  # aged by writing the store directly
            await store.login_failure_add("user:bob", TODAY - ago * DAY)
        for ago in (100, 95, 10):
            await store.outbox_add("test", ["a@example.com"], {}, TODAY - ago * DAY)
            [row] = await store.outbox_claim("w", TODAY - ago * DAY, 60.0)
            await store.outbox_finish([row.id], "w", "sent", TODAY - ago * DAY, "<m>")
        async with AuditLog(snapshot.paths.audit_file, KEY) as audit:
            report = await run_retention(snapshot, store, audit, now=TODAY)
            again = await run_retention(snapshot, store, audit, now=TODAY)
        assert (report.login_history, report.outbox) == (3, 2)
        assert again.empty
        assert await store.login_failures_since("user:bob", 0) == 2
        [purged] = [
            r
            for r in map(orjson.loads, snapshot.paths.audit_file.read_bytes().splitlines())
            if r["event"] == "retention.purged"
        ]
        assert purged["login_history"]["rows"] == 3 and purged["outbox"]["rows"] == 2
        assert purged["audit_files"] is None

    async def test_sign_ins_and_incidents_resolved_long_ago(
        self, tmp_path: Path, store: StateStore
    ) -> None:
        policy = {"retention": {"login_history_days": 90, "incidents_days": 180}}
        files = gateway_files(tmp_path, security=policy)
        snapshot = load(files.config_file).snapshot
        assert snapshot is not None
        records = {}
        for ago in (400, 200, 100, 10):  # aged by writing the store directly
            records[ago] = await store.sign_in_add(
                "bob", "success", "81.2.69.142", "GB", "test", "Firefox", TODAY - ago * DAY
            )
        old = await store.incident_open_or_extend("bob", TODAY - 400 * DAY, [records[400]])
        assert old.incident is not None
        await store.incident_resolve(old.incident.id, "alice", TODAY - 200 * DAY, "ok")
        recent = await store.incident_open_or_extend("bob", TODAY - 10 * DAY, [records[10]])
        assert recent.incident is not None
        async with AuditLog(snapshot.paths.audit_file, KEY) as audit:
            report = await run_retention(snapshot, store, audit, now=TODAY)
        assert (report.login_history, report.incidents) == (3, 1)
        assert [s.at for s in await store.sign_ins("bob", limit=10)] == [TODAY - 10 * DAY]
        assert [i.id for i in await store.incidents()] == [recent.incident.id]
