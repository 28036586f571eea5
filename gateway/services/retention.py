"""Retention (section 7.4): delete personal data older than `retention:` allows.

Runs at start and daily in every gateway process, and on demand (`gateway retention run`):
- login history older than `login_history_days` (sign-in regulation records, the sign-in
  history and the requests per user and hour), and finished outbox rows as old (they name
  people and addresses);
- incidents resolved longer than `incidents_days` ago, with their evidence;
- rotated audit files (`audit.path` plus a date) older than `audit_days`.

It writes one `retention.purged` record with what was removed: counts, the date range and,
for audit files, the last (seq, hash) of every chain in the removed files: the checkpoint
from which `gateway audit verify` accepts the files that remain. The record is written and
fsynced BEFORE the files are deleted: a crash in between leaves files that still verify, never
removed files without a checkpoint. With several processes the audit part runs under a lock
file; the second process finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from gateway.policy.snapshot import Snapshot
from gateway.services.audit_rotate import rotated_files, utc_day
from gateway.services.store import StateStore

if TYPE_CHECKING:
    from gateway.services.audit import AuditLog

log = structlog.get_logger("gateway.retention")
DAY = 86400.0


@dataclass
class PurgeReport:
    login_history: int = 0
    incidents: int = 0
    outbox: int = 0
    audit_files: list[str] = field(default_factory=list)
    audit_range: tuple[str, str] | None = None
    checkpoint: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.login_history or self.incidents or self.outbox or self.audit_files)


def chain_ends(files: list[Path]) -> dict[str, list[Any]]:
    """The last [seq, hash] of every chain in these files (the verify checkpoint)."""
    ends: dict[str, list[Any]] = {}
    for path in files:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(record, dict):
                    continue
                chain, seq, digest = record.get("chain"), record.get("seq"), record.get("hash")
                valid = isinstance(chain, str) and type(seq) is int and isinstance(digest, str)
                if valid and (chain not in ends or ends[chain][0] < seq):
                    ends[chain] = [seq, digest]
    return ends


def expired_audit_files(
    audit_path: Path, audit_days: int, now: float
) -> list[tuple[dt.date, Path]]:
    cutoff = utc_day(now) - dt.timedelta(days=audit_days)
    return [(day, path) for day, path in rotated_files(audit_path) if day < cutoff]


async def run_retention(
    snapshot: Snapshot, store: StateStore, audit: AuditLog, now: float | None = None
) -> PurgeReport:
    now = time.time() if now is None else now
    rules = snapshot.policy.retention
    report = PurgeReport()
    history_before = now - rules.login_history_days * DAY
    report.login_history = await store.login_failures_purge(history_before)
    report.login_history += await store.sign_ins_purge(history_before)
    report.login_history += await store.request_counts_purge(int(history_before) // 3600)
    report.incidents = await store.incidents_purge(now - rules.incidents_days * DAY)
    report.outbox = await store.outbox_purge(history_before)
    await asyncio.to_thread(_purge_audit_files, snapshot, audit, report, now)
    if not report.empty:
        log.info("retention_purged", login_history=report.login_history,
                 outbox=report.outbox, audit_files=len(report.audit_files))  # fmt: skip
    return report


def _purge_audit_files(
    snapshot: Snapshot, audit: AuditLog, report: PurgeReport, now: float
) -> None:
    """Runs in a thread: takes the rotation lock, records, fsyncs, then deletes."""
    rules = snapshot.policy.retention
    audit_path = snapshot.paths.audit_file
    lock_path = audit_path.with_name(audit_path.name + ".rotate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        expired = expired_audit_files(audit_path, rules.audit_days, now)
        if expired:
            files = [p for _d, p in expired]
            report.audit_files = [p.name for p in files]
            report.audit_range = (expired[0][0].isoformat(), expired[-1][0].isoformat())
            report.checkpoint = chain_ends(files)
        if report.empty:
            return
        _record(audit, report, rules, now)
        # Durable before anything is deleted (see the module docstring).
        if not audit.flush_sync():
            log.error("retention_aborted", reason="the audit trail cannot be written")
            report.audit_files = []
            return
        for _day, path in expired:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _record(audit: AuditLog, report: PurgeReport, rules: Any, now: float) -> None:
    def day(days: int) -> str:
        return (utc_day(now) - dt.timedelta(days=days)).isoformat()

    audit_files = None
    if report.audit_files:
        audit_files = {
            "count": len(report.audit_files),
            "files": report.audit_files,
            "from": report.audit_range[0] if report.audit_range else None,
            "to": report.audit_range[1] if report.audit_range else None,
            "checkpoint": report.checkpoint,
        }
    audit.record(
        "retention.purged",
        flush=True,
        login_history={"rows": report.login_history, "before": day(rules.login_history_days)},
        outbox={"rows": report.outbox, "before": day(rules.login_history_days)},
        incidents={"rows": report.incidents, "closed_before": day(rules.incidents_days)},
        audit_files=audit_files,
    )
