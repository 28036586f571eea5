"""Daily rotation of the audit file (section 7.4): `audit.path` plus the date of its records.

`audit.jsonl` becomes `audit.jsonl.2026-12-02` when the UTC day changes (and at start when the
file was last written on an earlier day). Several worker processes append to the same file;
one of them renames it, under an flock on a lock file beside it, and the others notice the
new inode within a second (AuditLog._reopen_if_rotated) and continue in the new file. Chains
go on across files, so `gateway audit verify` reads the rotated files and the current one in
order, as one stream.

The rotation is link-then-unlink, never a rename over an existing name: a rotated file is
never overwritten. If the day's name is taken (a restart that rotated already), `.1`, `.2`...
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
from pathlib import Path

_SUFFIX = re.compile(r"^\.(\d{4}-\d{2}-\d{2})(\.\d+)?$")


def utc_day(at: float) -> dt.date:
    return dt.datetime.fromtimestamp(at, dt.UTC).date()


def rotated_files(path: Path) -> list[tuple[dt.date, Path]]:
    """The rotated files of `path`, oldest first: (day of their records, path)."""
    out = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(path.name):
            continue
        match = _SUFFIX.match(entry.name[len(path.name) :])
        if match and entry.is_file():
            n = int(match.group(2)[1:]) if match.group(2) else 0
            out.append((dt.date.fromisoformat(match.group(1)), n, entry))
    return [(day, p) for day, _n, p in sorted(out)]


def trail_files(path: Path) -> list[Path]:
    """Every file of the audit trail in order: the rotated ones, then the current one."""
    files = [p for _day, p in rotated_files(path)]
    return [*files, path] if path.exists() else files


def rotate(path: Path, day: dt.date, fd: int | None) -> Path | None:
    """Give the file at `path` its dated name, unless someone else already rotated it.

    `fd` is the caller's descriptor of the file it believes is current (None at start): when
    `path` names another file by now, the rotation happened elsewhere and nothing is done.
    Returns the new name, or None.
    """
    lock_path = path.with_name(path.name + ".rotate-lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            return None
        if fd is not None:
            mine = os.fstat(fd)
            if (mine.st_ino, mine.st_dev) != (on_disk.st_ino, on_disk.st_dev):
                return None
        if on_disk.st_size == 0:
            return None
        for n in range(1000):
            target = path.with_name(f"{path.name}.{day.isoformat()}" + (f".{n}" if n else ""))
            try:
                os.link(path, target)
            except FileExistsError:
                continue
            os.unlink(path)
            return target
        return None


def rotate_stale_at_open(path: Path, today: dt.date) -> Path | None:
    """At (re)open: a file last written on an earlier day is rotated under that day's name."""
    try:
        written = utc_day(os.stat(path).st_mtime)
    except FileNotFoundError:
        return None
    if written >= today:
        return None
    return rotate(path, written, None)
