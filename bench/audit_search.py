"""Audit search on a 1 GB trail: time to the first page and peak memory of the console's search.

    .venv/bin/python bench/audit_search.py            # generates ~1 GB once (kept), then measures
    BENCH_AUDIT_GB=0.2 BENCH_REPEAT=3 .venv/bin/python bench/audit_search.py

The trail is written like the gateway's (orjson lines, base fields first, chain fields last) over
ten days: nine rotated files (`audit.jsonl.YYYY-MM-DD`) and the current file. Each query runs in
a fresh child process (`--child`), which reports the seconds to its first page of 50 records and
its peak RSS (VmHWM) over the interpreter's RSS before the search. The reference is GNU
`tac FILES | grep -m 50 NEEDLE` on the same files: the same newest-first scan, in C. Rows are
interleaved per round; the table shows medians. The page cache is warm (the files were just
written or read); the machine is shared, so figures are noisy.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.services.audit_search import (  # noqa: E402
    AuditQuery,
    export_batches,
    search_page,
    trail_files,
)

TARGET_GB = float(os.environ.get("BENCH_AUDIT_GB", "1"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
FOLDER = Path(
    os.environ.get("BENCH_AUDIT_DIR", Path(tempfile.gettempdir()) / "gateway-audit-bench")
)
END = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DAYS = 10
USERS = [f"user{i:04d}" for i in range(2000)]

# (name, form fields, page, reference needle or None for "no grep equivalent")
QUERIES: list[tuple[str, dict[str, str], int, str | None]] = [
    ("newest page, no filter", {}, 1, '"ts"'),
    ("event=login.failure", {"event": "login.failure"}, 1, '"event":"login.failure"'),
    ("event=admin.* since 6 h", {"event": "admin.*", "since": "2026-12-03T06:00:00Z"}, 1, None),
    ("page 200, no filter", {}, 200, None),
    ("client_ip=203.0.113.0/24", {"client_ip": "203.0.113.0/24"}, 1, '"client_ip":"203.0.113.'),
    (
        "principal seen once, oldest (full scan)",
        {"principal": "rare-user"},
        1,
        '"principal":"rare-user"',
    ),
    ("no match (full scan)", {"event": "no.such.event"}, 1, '"event":"no.such.event"'),
]


def generate(folder: Path, target_bytes: int) -> Path:
    """About target_bytes of records over DAYS days, oldest first; returns the current file."""
    folder.mkdir(parents=True, exist_ok=True)
    audit = folder / "audit.jsonl"
    marker = folder / f".complete-{target_bytes}"
    if marker.exists():
        return audit
    for old in folder.iterdir():
        old.unlink()
    rng = random.Random(7)
    per_day = target_bytes // DAYS
    start = END - timedelta(days=DAYS)
    seq = 0
    for day in range(DAYS):
        day_start = start + timedelta(days=day)
        name = audit if day == DAYS - 1 else folder / f"audit.jsonl.{day_start:%Y-%m-%d}"
        written = 0
        lines: list[bytes] = []
        # Spread the day's records evenly; a record is ~500 bytes.
        count = per_day // 500
        with open(name, "wb") as f:
            for i in range(count):
                seq += 1
                at = day_start + timedelta(seconds=86400 * i / count)
                principal = rng.choice(USERS) if rng.random() < 0.9 else None
                if day == 0 and i == 0:
                    principal = "rare-user"
                kind = rng.random()
                event, decision = "request", "allow"
                if kind < 0.02:
                    event, decision = "login.failure", "deny:unauthenticated"
                elif kind < 0.025:
                    event, decision = "admin.trusted_ip.added", "allow"
                elif kind < 0.08:
                    decision = "deny:forbidden"
                ip = (
                    f"203.0.113.{rng.randrange(256)}"
                    if rng.random() < 0.01
                    else f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
                )
                record = {
                    "ts": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
                    "event": event,
                    "request_id": f"{rng.getrandbits(128):032x}",
                    "client_ip": ip,
                    "surface": "dashboard",
                    "app": "console",
                    "principal": principal,
                    "auth": "password+totp" if principal else None,
                    "decision": decision,
                    "method": "GET",
                    "path": f"/mail/{rng.randrange(10**6)}",
                    "status": 200 if decision == "allow" else 403,
                    "duration_ms": round(rng.random() * 50, 2),
                    "chain": "5f0c1a2b3c4d",
                    "seq": seq,
                    "prev": "0" * 64,
                    "hash": f"{rng.getrandbits(256):064x}",
                }
                lines.append(orjson.dumps(record))
                if len(lines) == 10_000:
                    chunk = b"\n".join(lines) + b"\n"
                    f.write(chunk)
                    written += len(chunk)
                    lines = []
            if lines:
                f.write(b"\n".join(lines) + b"\n")
    marker.touch()
    return audit


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child(audit: str, fields: str, page: int, export: bool) -> None:
    """One search in this fresh process; prints JSON with seconds and memory."""
    query = AuditQuery.from_params(json.loads(fields))
    before = rss_kib("VmRSS")
    started = time.perf_counter()
    files = trail_files(Path(audit))
    if export:
        size = sum(len(b) for b in export_batches(files, query))
        found = size
    else:
        found = len(search_page(files, query, page, 50).records)
    seconds = time.perf_counter() - started
    peak = rss_kib("VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "found": found,
                "rss_mib": before / 1024,
                "peak_extra_mib": (peak - before) / 1024,
            }
        )
    )


def run_ours(audit: Path, fields: dict[str, str], page: int, export: bool = False) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(audit),
            json.dumps(fields),
            str(page),
            "1" if export else "0",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def run_reference(audit: Path, needle: str) -> float:
    files = [str(p) for p in trail_files(audit)]
    started = time.perf_counter()
    subprocess.run(
        f"tac {' '.join(files)} | grep -F -m 50 -- {json.dumps(needle)} > /dev/null",
        shell=True,
        check=False,
    )
    return time.perf_counter() - started


def main() -> None:
    target = int(TARGET_GB * 1024**3)
    began = time.perf_counter()
    audit = generate(FOLDER, target)
    files = trail_files(audit)
    total = sum(p.stat().st_size for p in files)
    print(
        f"trail: {total / 1024**3:.2f} GiB in {len(files)} files under {FOLDER} "
        f"(ready in {time.perf_counter() - began:.0f} s)",
        flush=True,
    )
    for p in files:  # warm the page cache for both sides alike
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    ours: dict[str, list[dict]] = {q[0]: [] for q in QUERIES}
    ref: dict[str, list[float]] = {q[0]: [] for q in QUERIES}
    export_runs: list[dict] = []
    for _ in range(REPEAT):
        for name, fields, page, needle in QUERIES:
            ours[name].append(run_ours(audit, fields, page))
            if needle is not None:
                ref[name].append(run_reference(audit, needle))
        export_runs.append(run_ours(audit, {"event": "admin.*"}, 1, export=True))
    rows = [
        "| query | first page (s), median | tac+grep -m 50 (s) | ratio "
        "| peak RSS over start (MiB) |",
        "|---|---|---|---|---|",
    ]
    for name, _fields, _page, needle in QUERIES:
        secs = statistics.median(r["seconds"] for r in ours[name])
        extra = max(r["peak_extra_mib"] for r in ours[name])
        if needle is not None:
            reference = statistics.median(ref[name])
            rows.append(
                f"| {name} | {secs:.3f} | {reference:.3f} | {secs / reference:.1f}x | {extra:.1f} |"
            )
        else:
            rows.append(f"| {name} | {secs:.3f} | — | — | {extra:.1f} |")
    exp_secs = statistics.median(r["seconds"] for r in export_runs)
    exp_mib = export_runs[0]["found"] / 1024**2
    exp_extra = max(r["peak_extra_mib"] for r in export_runs)
    rows.append(
        f"| export event=admin.* as JSON Lines ({exp_mib:.1f} MiB) | {exp_secs:.3f} "
        f"(all) | — | — | {exp_extra:.1f} |"
    )
    base = ours[QUERIES[0][0]][0]["rss_mib"]
    print(f"\n{REPEAT} round(s), interpreter RSS before the search: {base:.0f} MiB\n")
    print("\n".join(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
    else:
        main()
