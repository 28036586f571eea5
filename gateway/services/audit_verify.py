"""Reading the audit trail: the record format, chain verification, and tail/follow for the CLI.

This module only reads. The writer is `gateway.services.audit.AuditLog`; both sides share the
format defined here (`BASE_FIELDS`, `CHAIN_FIELDS`, `record_hash`), so a change to it is made once.

How the chain works (docs/http.md, docs/architecture.md): every writing process has its own
chain, named by a random `chain` id. Its records carry `seq` (1, 2, 3...), `prev` (the `hash` of
the previous record of the same chain, null for seq 1) and `hash`, an HMAC-SHA256 over the record
without `hash`, serialised canonically (orjson, keys sorted). Lines of several chains interleave in
one file; `verify` follows each chain separately.

What `verify` can and cannot see:
- an edited line: its hash no longer matches (only the key holder can compute a new one);
- a forged line: same, whatever chain it claims;
- a removed or reordered line: a gap or a step back in its chain's `seq`;
- lines cut off the END of a chain: NOT visible in the file alone (a chain that stops early looks
  like a process that stopped). That is what the chain heads in the state store are for: pass them
  as `heads` and a chain that ends before the head the store saw is reported.
- a chain whose first line is not seq 1 is reported, unless a checkpoint vouches for the
  start: retention (`retention.purged`, section 7.4) deletes whole rotated files and records
  the last (seq, hash) of every chain it removed. `verify` takes those checkpoints from the
  `retention.purged` records in the files it reads (their own hash must verify, so only the
  key holder can make one) or from the caller: a chain that starts at seq N+1 with `prev` equal
  to the checkpoint's hash of seq N is whole. Deleting the beginning of the trail without such
  a record is still reported.

Several files (the rotated ones, then the current one) are read in order as one stream.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any, BinaryIO

import orjson

#: Every record starts with these fields, in this order (null where they do not apply).
BASE_FIELDS: tuple[str, ...] = (
    "ts",
    "event",
    "request_id",
    "client_ip",
    "surface",
    "app",
    "principal",
    "auth",
    "decision",
)
#: Every record ends with these fields, set by the writer (never by the caller).
CHAIN_FIELDS: tuple[str, ...] = ("chain", "seq", "prev", "hash")

_CANONICAL = orjson.OPT_SORT_KEYS
_TAIL_BLOCK = 64 * 1024


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes the hash covers: the record without `hash`, keys sorted at every level."""
    if "hash" in record:
        record = {k: v for k, v in record.items() if k != "hash"}
    return orjson.dumps(record, option=_CANONICAL)


def record_hash(key: bytes, record: dict[str, Any]) -> str:
    """HMAC-SHA256 (hex) of `canonical(record)`; `key` is the audit sub-key of the secret key."""
    return hmac.digest(key, canonical(record), sha256).hex()


def hash_matches(key: bytes, record: dict[str, Any], claimed: str) -> bool:
    """Constant-time, as bytes: compare_digest raises TypeError on a non-ASCII str, and an
    edited line must be reported, not crash the check."""
    return hmac.compare_digest(record_hash(key, record).encode(), claimed.encode())


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of `verify`: ok when no problem was found; each problem names where and what."""

    ok: bool
    records: int
    chains: int
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _ChainState:
    seq: int
    hash: str
    line: str  # where the record is: "line 12" or "audit.jsonl.2026-12-02:12"
    # Set while the chain's latest slot is held by a record whose hash failed (already reported):
    # the state before it, so the authentic record for that slot is still recognised.
    before_suspect: tuple[int, str | None, str] | None = None
    authentic: bool = True  # False while the chain is known only from a record that failed


def _missing(n: int) -> str:
    return "1 record" if n == 1 else f"{n} records"


def purge_checkpoints(paths: Sequence[Path], key: bytes) -> dict[str, tuple[int, str]]:
    """chain -> (seq, hash) from every authentic `retention.purged` record in these files."""
    out: dict[str, tuple[int, str]] = {}
    for path in paths:
        with open(path, "rb") as f:
            for raw in f:
                if b"retention.purged" not in raw:
                    continue
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if not _is_chained(record) or record.get("event") != "retention.purged":
                    continue
                if not hash_matches(key, record, record["hash"]):
                    continue
                files = record.get("audit_files") or {}
                for chain, point in (files.get("checkpoint") or {}).items():
                    seq, digest = point
                    if chain not in out or out[chain][0] < seq:
                        out[chain] = (int(seq), str(digest))
    return out


def _lines(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    several = len(paths) > 1
    for path in paths:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                yield (f"{path.name}:{number}" if several else f"line {number}"), raw


def verify(
    path: Path | Sequence[Path],
    key: bytes,
    heads: Iterable[tuple[str, int, str]] = (),
    checkpoints: dict[str, tuple[int, str]] | None = None,
) -> VerifyReport:
    """Check every line of the audit file(s) at `path` against the chain rules.

    Several paths are read in order as one stream (rotated files oldest first, then the
    current one). `heads` are (chain, seq, hash) triples the state store recorded while the
    file was written; with them, lines cut off the end of a chain are detected too.
    `checkpoints` (chain -> (seq, hash)) add to those found in `retention.purged` records.
    Raises OSError when a file cannot be read (that is not a verdict on its content).
    """
    paths = [path] if isinstance(path, Path | str) else list(path)
    paths = [Path(p) for p in paths]
    points = purge_checkpoints(paths, key)
    for chain, point in (checkpoints or {}).items():
        if chain not in points or points[chain][0] < point[0]:
            points[chain] = point
    wanted: dict[tuple[str, int], str] = {
        (c, s): h for c, s, h in heads if not (c in points and points[c][0] >= s)
    }
    found: dict[tuple[str, int], tuple[str, str]] = {}  # (chain, seq) -> (hash, where)
    chains: dict[str, _ChainState] = {}
    problems: list[str] = []
    records = verified = 0

    for number, raw in _lines(paths):
        line = raw.strip()
        if not line:
            problems.append(f"{number}: empty line")
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            problems.append(f"{number}: not JSON")
            continue
        if not _is_chained(record):
            problems.append(f"{number}: not an audit record (no chain, seq, prev or hash)")
            continue
        records += 1
        chain, seq, prev, claimed = (record[k] for k in CHAIN_FIELDS)
        state = chains.get(chain)
        if not hash_matches(key, record, claimed):
            problems.append(f"{number}: hash mismatch (record edited or forged)")
            # A record claiming the next seq holds that slot, so that one edited line gives
            # one problem; a record claiming any other place is ignored.
            if state is None and seq == 1:
                chains[chain] = _ChainState(1, claimed, number, (0, None, ""), authentic=False)
            elif state is not None and seq == state.seq + 1:
                state.before_suspect = (state.seq, state.hash, state.line)
                state.seq, state.hash, state.line = seq, claimed, number
            continue
        verified += 1
        if (chain, seq) in wanted:
            found[(chain, seq)] = (claimed, number)
        where = f"{number}: chain {chain}:"
        if state is None:
            vouched = points.get(chain) == (seq - 1, prev)
            if seq != 1 and not vouched:
                problems.append(
                    f"{where} starts at seq {seq}, not 1 "
                    "(earlier lines missing, or purged by retention)"
                )
            chains[chain] = _ChainState(seq, claimed, number)
            continue
        suspect, state.before_suspect = state.before_suspect, None
        state.authentic = True
        if suspect is not None and seq == state.seq and prev == suspect[1]:
            # The authentic record of the slot a forged line claimed: the forgery was
            # reported, the chain goes on from here.
            state.seq, state.hash, state.line = seq, claimed, number
            continue
        expected = state.seq + 1
        if seq == expected:
            # After an edited line its successor's prev may not match: already reported.
            if prev != state.hash and suspect is None:
                problems.append(
                    f"{where} prev does not match the hash of seq {state.seq} ({_at(state.line)})"
                )
        elif seq > expected:
            problems.append(
                f"{where} seq {seq} follows seq {state.seq} "
                f"({_missing(seq - expected)} missing or reordered)"
            )
        else:
            problems.append(f"{where} seq {seq} follows seq {state.seq} (duplicate or reordered)")
            continue  # the chain's furthest point stays where it was
        state.seq, state.hash, state.line = seq, claimed, number

    for (chain, seq), expected_hash in wanted.items():
        state = chains.get(chain)
        if state is None or not state.authentic:
            problems.append(
                f"chain {chain}: the state store saw seq {seq} but the file has no record of "
                "this chain (lines cut off the end, or the file replaced)"
            )
        elif state.seq < seq:
            problems.append(
                f"chain {chain}: the state store saw seq {seq} but the file ends at seq "
                f"{state.seq} (lines cut off the end)"
            )
        elif (chain, seq) in found and found[(chain, seq)][0] != expected_hash:
            problems.append(
                f"chain {chain}: seq {seq} on {_at(found[(chain, seq)][1])} is not the record "
                "the state store saw (file rewritten)"
            )

    if records and not verified:
        # Not one record in the whole trail verifies: the key is not the one that wrote it
        # (another gateway's secret_key_file, a regenerated key), not every line forged.
        problems = [
            f"none of the {records} records verifies with this secret key: the key does not "
            "match this trail (check secret_key_file or GATEWAY_SECRET_KEY)"
        ]
    authentic = sum(state.authentic for state in chains.values())
    return VerifyReport(ok=not problems, records=records, chains=authentic, problems=problems)


def _at(where: str) -> str:
    """ "line 12" stays as is; "audit.jsonl:12" becomes "audit.jsonl line 12"."""
    return where if where.startswith("line ") else where.replace(":", " line ", 1)


def _is_chained(record: object) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("chain"), str)
        and type(record.get("seq")) is int
        and isinstance(record.get("hash"), str)
        and (record.get("prev") is None or isinstance(record.get("prev"), str))
        and "prev" in record
    )


def _parse(line: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {"_unparsed": line.decode("utf-8", "replace")}
    return record if isinstance(record, dict) else {"_unparsed": line.decode("utf-8", "replace")}


def _last_lines(f: BinaryIO, end: int, n: int) -> list[bytes]:
    """The last `n` complete, non-empty lines before offset `end`, reading backwards in blocks."""
    if n <= 0:
        return []
    pos, data = end, b""
    while pos > 0 and data.count(b"\n") <= n:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a line still being written
    if pos > 0:
        lines = lines[1:]  # may start mid-line
    return [line for line in lines if line.strip()][-n:]


def tail(path: Path, n: int = 10) -> list[dict[str, Any]]:
    """The last `n` records of the file, oldest first, read from the end (cheap on big files).

    A line that is not JSON comes back as ``{"_unparsed": text}`` so a viewer can still show it.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        return [_parse(line) for line in _last_lines(f, end, n)]


def follow(path: Path, n: int = 10, *, poll_interval: float = 0.5) -> Iterator[dict[str, Any]]:
    """Yield the last `n` records, then every record appended later (like `tail -f`); never ends.

    Picks up a rotated (replaced) or truncated file from its beginning.
    """
    f = open(path, "rb")  # noqa: SIM115 -- reopened on rotation, closed in finally
    try:
        pos = f.seek(0, os.SEEK_END)
        for line in _last_lines(f, pos, n):
            yield _parse(line)
        partial = b""
        while True:
            f.seek(pos)
            chunk = f.read()
            if chunk:
                pos += len(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _parse(line)
                continue
            try:
                on_disk = os.stat(path)
            except FileNotFoundError:
                on_disk = None
            mine = os.fstat(f.fileno())
            if on_disk is not None and (on_disk.st_ino, on_disk.st_dev) != (
                mine.st_ino,
                mine.st_dev,
            ):
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                pos, partial = 0, b""
                continue
            if mine.st_size < pos:
                pos, partial = 0, b""
                continue
            time.sleep(poll_interval)
    finally:
        f.close()
