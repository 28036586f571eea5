"""The audit trail: hash-chained JSON Lines, written through a private structlog chain.

One `AuditLog` per process (docs/http.md, docs/architecture.md):

    audit = AuditLog(path, secret.derive(KEY_PURPOSE), head_sink=store.save_audit_head)
    await audit.start()                  # in the app's cleanup_ctx; `await audit.close()` after
    audit.record("request", request_id=rid, client_ip=ip, decision="allow", status=200, ...)

The request path never touches the disk: `record()` runs the structlog processors below (redact
secrets, timestamp, chain, render with orjson) and the last "logger" appends the line to memory;
`request` records are queued and rendered in small batches (see `record`). The base fields come
first and in contract order because they are the logger's bound context (all null), which the
call's fields then fill in place.

A background task writes the memory to the file every 100 ms (or at 256 KiB, or at once for
`flush=True`), fsyncs at most once a second, and after each fsync hands the chain head to
`head_sink`, so the state store can later tell whether lines were cut off the end. Heads follow
the fsync, not the write, so a power cut cannot make the store claim lines the disk never kept.

The structlog logger is private (`structlog.wrap_logger` with its own processors): the app's own
logging configuration neither changes the audit lines nor receives them. Problems of the audit
trail itself (disk full, permissions, a failing head sink) go to the app log as
`structlog.get_logger("gateway.audit")` errors; the records stay in memory and are retried.

Several worker processes append to the same file: each has its own chain, every write is one
`os.write` of whole lines on an O_APPEND descriptor, so lines never interleave mid-line. A process
forked from one that already holds an AuditLog starts a fresh chain of its own.

Rotation: daily, by the writer itself (audit_rotate.py: `audit.path` plus the date). Also,
about once a second the writer notices when the path names another file (renamed or
removed by logrotate) and continues in a new file there; chains go on, so a new file verified
alone reports `starts at seq N` for each chain: verify rotated files in order, as one stream.
Rotate by renaming (logrotate's default), not `copytruncate`, which loses the lines written
between the copy and the truncation.

Without an event loop (CLI verbs such as `gateway user unlock`) use it synchronously:
`record(...)` then `flush_sync()` or `close_sync()`, or `with AuditLog(...) as audit: ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import secrets
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from hashlib import sha256
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import structlog

from gateway.services.audit_rotate import rotate, rotate_stale_at_open, utc_day
from gateway.services.audit_verify import (
    BASE_FIELDS,
    CHAIN_FIELDS,
    VerifyReport,
    canonical,
    follow,
    record_hash,
    tail,
    verify,
)

__all__ = [
    "BASE_FIELDS",
    "CHAIN_FIELDS",
    "KEY_PURPOSE",
    "REDACTED",
    "SECRET_FIELDS",
    "AuditLog",
    "HeadSink",
    "VerifyReport",
    "canonical",
    "follow",
    "record_hash",
    "redact_secrets",
    "tail",
    "verify",
]

#: The HKDF purpose label of the audit sub-key: `secret_key.derive(KEY_PURPOSE)`.
KEY_PURPOSE = "audit-chain"

#: Receives (chain, seq, hash) of the last record that is written and fsynced.
HeadSink = Callable[[str, int, str], Awaitable[None]]

#: Field names whose values never reach the file (any case; nested dicts and lists too).
SECRET_FIELDS = frozenset(
    {"password", "code", "totp", "key", "api_key", "secret", "session_id", "token", "cookie"}
)
# Also caught: new_password, csrf_token, recovery_code... but not status_code or key_sha256.
_SECRET_SUFFIXES = (
    "_password",
    "_secret",
    "_token",
    "_api_key",
    "_cookie",
    "_totp",
    "_session_id",
    "recovery_code",
    "totp_code",
)
REDACTED = "[redacted]"

_CHAIN_SET = frozenset(CHAIN_FIELDS)  # set by the log itself, never by a caller
RENDER_BATCH = 256  # queued request records rendered together (see AuditLog.record)
QUEUED_LINE_BYTES = 512  # a request record's usual size, for the byte limits of the queue
_WRITE_CHUNK = 1024 * 1024  # lines per os.write are grouped up to this size
_COMPLAIN_EVERY = 60.0  # seconds between repeated error logs of the same kind
_MAX_DEPTH = 32

_log = structlog.get_logger("gateway.audit")


# --- processors -------------------------------------------------------------------------------

_secret_names: dict[str, bool] = {}  # name -> is it secret; a cache (bounded)
_clean_names: set[str] = set(BASE_FIELDS)  # names seen and found harmless (bounded)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _is_secret_name(name: object) -> bool:
    flag = _secret_names.get(name) if type(name) is str else None
    if flag is None:
        lowered = str(name).lower()
        flag = lowered in SECRET_FIELDS or lowered.endswith(_SECRET_SUFFIXES)
        if type(name) is str and len(_secret_names) < 4096:
            _secret_names[name] = flag
    return flag


def _redact_value(value: Any, depth: int = 0) -> Any:
    """A copy of nested mappings/lists with secret-named fields redacted (the caller's stay)."""
    if depth > _MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if v is not None and _is_secret_name(k) else _redact_value(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _redact_value(dataclasses.asdict(value), depth + 1)  # orjson would expand it
    return value


def redact_secrets(_logger: object, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Replace the value of every secret-named field with "[redacted]" (defence in depth).

    Matches the names in SECRET_FIELDS and names ending in one of them (new_password,
    csrf_token...), in any case, also inside nested mappings, lists and dataclasses. Other
    objects are rendered with str(): pass plain values, not objects that print their secrets.
    """
    # Fast path, taken by nearly every record: known harmless names, plain scalar values or
    # lists of strings (a request record's `reasons`).
    if event_dict.keys() <= _clean_names:
        types = set(map(type, event_dict.values()))
        if types <= _SCALARS or (
            types - _SCALARS == {list}
            and all(type(x) is str for v in event_dict.values() if type(v) is list for x in v)
        ):
            return event_dict
    for name, value in event_dict.items():
        if _is_secret_name(name):
            if value is not None:
                event_dict[name] = REDACTED
            continue
        if type(name) is str and len(_clean_names) < 4096:
            _clean_names.add(name)
        if type(value) not in _SCALARS:
            event_dict[name] = _redact_value(value)
    return event_dict


_EMPTY_RECORD = dict.fromkeys(BASE_FIELDS)  # bound as context: fixes the order, nulls by default


class _Timestamp:
    """Processor: `ts`, RFC 3339 UTC with milliseconds; strftime once per second, not per record.

    It also drops caller-supplied chain fields, which belong to the log.
    """

    __slots__ = ("_clock", "_prefix", "_second")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: object, _method: str, ed: dict[str, Any]) -> dict[str, Any]:
        return self.stamp(ed, self._clock())

    def stamp(self, ed: dict[str, Any], now: float) -> dict[str, Any]:
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        ed["ts"] = "%s.%03dZ" % (self._prefix, (now - second) * 1000)  # noqa: UP031 -- fastest
        if not _CHAIN_SET.isdisjoint(ed):
            for name in CHAIN_FIELDS:
                ed.pop(name, None)
        return ed


def _default(obj: Any) -> Any:
    """orjson fallback: sets become sorted lists, anything else its str()."""
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    return str(obj)


class _Chain:
    """Processor: adds chain, seq, prev and the HMAC over the canonical record."""

    __slots__ = ("_inner", "_outer", "id", "prev", "seq")

    def __init__(self, key: bytes) -> None:
        # HMAC-SHA256 (RFC 2104) from two pre-keyed hash states, copied per record: a third of
        # the cost of copying an hmac.HMAC, a sixth of OpenSSL 3's one-shot hmac.digest (which
        # looks the algorithm up on every call). tests/services/test_audit_fast.py checks it
        # against hmac.
        if len(key) > 64:
            key = sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = sha256(bytes(b ^ 0x36 for b in key))
        self._outer = sha256(bytes(b ^ 0x5C for b in key))
        self.restart()

    def mac(self, body: bytes) -> str:
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def restart(self) -> None:
        self.id = secrets.token_hex(6)
        self.seq = 0
        self.prev: str | None = None

    def __call__(self, _logger: object, _method: str, record: dict[str, Any]) -> dict[str, Any]:
        seq = self.seq + 1
        record["chain"] = self.id
        record["seq"] = seq
        record["prev"] = self.prev
        # Serialise before touching the state: if this raises, the chain has no gap.
        body = orjson.dumps(record, default=_default, option=orjson.OPT_SORT_KEYS)
        digest = self.mac(body)
        record["hash"] = digest
        self.seq, self.prev = seq, digest
        return record


def _render(_logger: object, _method: str, record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, default=_default, option=orjson.OPT_APPEND_NEWLINE)


class _Buffer:
    """The structlog "logger" at the end of the chain: keeps the rendered lines in memory."""

    __slots__ = ("lines", "size")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.size = 0

    def audit(self, line: bytes) -> None:
        self.lines.append(line)
        self.size += len(line)


class _AuditBoundLogger(structlog.BoundLoggerBase):
    """A bound logger with a single method, `audit`, so nothing else can be called by mistake."""

    def audit(self, event: str, **fields: Any) -> Any:
        return self._proxy_to_logger("audit", event, **fields)


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Coerce a value to what JSON can hold (used only when a record failed to serialise)."""
    if depth > _MAX_DEPTH:
        return "[too deep]"
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:  # lone surrogates, e.g. from undecodable bytes
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v, depth + 1) for v in value]
    return _json_safe(str(value), depth + 1)


# --- the log ----------------------------------------------------------------------------------


class _Complaints:
    """Rate limit for the log's own error messages: a disk-full must not flood the app log."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, kind: str) -> bool:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is None or now - last >= _COMPLAIN_EVERY:
            self._last[kind] = now
            return True
        return False

    def resolved(self, kind: str) -> bool:
        return self._last.pop(kind, None) is not None


class _IOResult:
    __slots__ = ("left", "sync_error", "write_error", "written")

    def __init__(self) -> None:
        self.written = 0
        self.left = 0
        self.write_error: OSError | None = None
        self.sync_error: OSError | None = None


async def _unless_cancelled(task: asyncio.Task[None]) -> None:
    """Await a task that someone else may have cancelled (shutdown) without failing close()."""
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # close() itself is being cancelled


_live: weakref.WeakSet[AuditLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for audit in list(_live):
        audit._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class AuditLog:
    """Append-only, hash-chained audit records of one process; see the module docstring."""

    def __init__(
        self,
        path: Path | str,
        key: bytes,
        *,
        head_sink: HeadSink | None = None,
        flush_interval: float = 0.1,
        fsync_interval: float = 1.0,
        flush_bytes: int = 256 * 1024,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(key, bytes) or not key:
            raise ValueError("the audit key must be non-empty bytes")
        self.path = Path(path)
        self._head_sink = head_sink
        self._flush_interval = flush_interval
        self._fsync_interval = fsync_interval
        self._flush_bytes = flush_bytes
        self._max_buffer = max_buffer_bytes

        self._chain = _Chain(key)
        self._timestamp = _Timestamp(clock)
        self._buffer = _Buffer()
        self._logger: _AuditBoundLogger = structlog.wrap_logger(
            self._buffer,
            processors=[redact_secrets, self._timestamp, self._chain, _render],
            wrapper_class=_AuditBoundLogger,
            context_class=dict,
        ).bind(**_EMPTY_RECORD)
        self._queued: list[tuple[str, dict[str, Any], float]] = []  # request records to render
        self._lock = threading.Lock()  # chain state + buffer + queue
        self._io_lock = threading.Lock()  # the file descriptor; taken before _lock, never after

        self._fd: int | None = None
        self._clock = clock
        self._day = utc_day(clock())  # the UTC day of the open file's records: rotation
        self._torn = False  # a short write left part of a line: start the next write with "\n"
        self._unsynced = False
        self._written_head: tuple[str, int, str] | None = None
        self._synced_head: tuple[str, int, str] | None = None
        self._sunk_head: tuple[str, int, str] | None = None
        self._complaints = _Complaints()
        self.dropped = 0  # records dropped because the buffer outgrew max_buffer_bytes

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._sink_task: asyncio.Task[None] | None = None
        self._closing = False
        _live.add(self)

    # -- request path (synchronous, never raises, never touches the disk) --

    def record(self, event: str, /, *, flush: bool = False, **fields: Any) -> None:
        """Queue one record. `flush=True` (security events) writes it at once.

        Base fields not given are null; `ts`, `chain`, `seq`, `prev`, `hash` are the log's own.
        Never raises and never waits for the disk; safe to call from other threads too.

        `request` records (one per request) are rendered in batches (RENDER_BATCH, or when the
        writer runs): the same work, done in one loop over many records, costs about half what
        it costs between two requests, whose code and data have pushed the renderer's out of
        the CPU caches (docs/performance.md). The time is taken now; the values must not change
        after the call (pass copies of lists you keep using). Any other event renders what is
        queued, then itself, at once: the file keeps the order of the calls.
        """
        now = self._clock()
        if event == "request" and not flush:
            with self._lock:
                queued = self._queued
                queued.append((event, fields, now))
                if len(queued) >= RENDER_BATCH:
                    self._render_queued()
        else:
            with self._lock:
                self._render_queued()
                self._render(event, fields, now)
        size = self._buffer.size + QUEUED_LINE_BYTES * len(self._queued)
        if size > self._max_buffer or size >= self._flush_bytes:
            self.render_queued()  # the limits are on bytes: count the queued ones exactly
            size = self._buffer.size
        if size > self._max_buffer:
            self._drop_oldest()
        if flush or size >= self._flush_bytes:
            self._wake_writer()

    def render_queued(self) -> None:
        """Render the queued `request` records now (the writer does before each write)."""
        with self._lock:
            self._render_queued()

    def _render_queued(self) -> None:  # under _lock
        queued = self._queued
        if queued:
            self._queued = []
            for event, fields, now in queued:
                self._render(event, fields, now)

    def _render(self, event: str, fields: dict[str, Any], now: float) -> None:  # under _lock
        """The processors of the structlog chain, called directly: the same line, byte for
        byte (tests/services/test_audit_fast.py), at a fraction of structlog's dispatch."""
        try:
            record = _EMPTY_RECORD.copy()
            record.update(fields)
            record["event"] = event
            record = redact_secrets(None, "audit", record)
            record = self._chain(None, "audit", self._timestamp.stamp(record, now))
            self._buffer.audit(_render(None, "audit", record))
        except Exception as exc:
            self._render_coerced(event, fields, now, exc)

    def _render_coerced(  # under _lock
        self, event: str, fields: dict[str, Any], now: float, exc: Exception
    ) -> None:
        try:
            safe = {str(k): _json_safe(v) for k, v in fields.items()}
            record = _EMPTY_RECORD.copy()
            record.update(safe)
            record["event"] = _json_safe(event)
            record = redact_secrets(None, "audit", record)
            record = self._chain(None, "audit", self._timestamp.stamp(record, now))
            self._buffer.audit(_render(None, "audit", record))
        except Exception as again:
            _log.error("audit_record_failed", audit_event=event, error=repr(again), first=repr(exc))

    def _wake_writer(self) -> None:
        wake, loop = self._wake, self._loop
        if wake is None or loop is None or self._task is None:
            return
        if threading.get_ident() == self._loop_thread:
            wake.set()
        else:
            # A closed loop raises: the records then wait for close() or flush_sync().
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def _drop_oldest(self) -> None:
        with self._lock:
            buffer = self._buffer
            count, freed, over = 0, 0, buffer.size - self._max_buffer
            while freed < over and count < len(buffer.lines):
                freed += len(buffer.lines[count])
                count += 1
            del buffer.lines[:count]
            buffer.size -= freed
            self.dropped += count
        if count and self._complaints.due("overflow"):
            _log.error(
                "audit_records_dropped",
                path=str(self.path),
                dropped=count,
                dropped_total=self.dropped,
                limit_bytes=self._max_buffer,
                reason="the audit file cannot be written and the buffer is full",
            )

    # -- information --

    @property
    def chain(self) -> str:
        """This process's chain id."""
        return self._chain.id

    @property
    def written_head(self) -> tuple[str, int, str] | None:
        """(chain, seq, hash) of the last record written to the file (maybe not yet fsynced)."""
        return self._written_head

    @property
    def synced_head(self) -> tuple[str, int, str] | None:
        """(chain, seq, hash) of the last record written and fsynced: what the head sink gets."""
        return self._synced_head

    @property
    def pending(self) -> int:
        """Records not yet written."""
        return len(self._buffer.lines) + len(self._queued)

    # -- writing (one thread at a time, under _io_lock) --

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._day = utc_day(self._clock())
            rotate_stale_at_open(self.path, self._day)  # last written on an earlier day
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o640)
        return self._fd

    def _write_lines(self, fd: int, lines: list[bytes]) -> int:
        """Append whole lines, grouped into os.write calls of up to 1 MiB; return how many landed.

        Raises OSError with `.lines_written` set when a write fails.
        """
        done = 0
        while done < len(lines):
            end, size = done, 0
            while end < len(lines) and (end == done or size + len(lines[end]) <= _WRITE_CHUNK):
                size += len(lines[end])
                end += 1
            prefix = b"\n" if self._torn else b""
            try:
                n = os.write(fd, prefix + b"".join(lines[done:end]))
                if n == 0:
                    raise OSError(errno.EIO, "write returned 0 bytes")
            except OSError as exc:
                exc.lines_written = done  # type: ignore[attr-defined]
                raise
            self._unsynced = True
            self._torn = False
            n -= len(prefix)
            if n == size:
                done = end
                continue
            # Short write (disk full): the lines that fit count; the cut one is written again
            # whole after a newline, leaving one broken line that `verify` reports as not JSON.
            while n >= len(lines[done]):
                n -= len(lines[done])
                done += 1
            self._torn = n > 0
        return done

    def _io(self, sync: bool) -> _IOResult:
        """Write everything buffered (and fsync if asked); failed lines go back to the front."""
        result = _IOResult()
        with self._io_lock:
            with self._lock:
                self._render_queued()
                lines = self._buffer.lines
                self._buffer.lines, self._buffer.size = [], 0
            if lines:
                try:
                    result.written = self._write_lines(self._open(), lines)
                except OSError as exc:
                    result.write_error = exc
                    result.written = getattr(exc, "lines_written", 0)
                if result.written:
                    last = orjson.loads(lines[result.written - 1])
                    self._written_head = (last["chain"], last["seq"], last["hash"])
                if result.written < len(lines):
                    left = lines[result.written :]
                    result.left = len(left)
                    with self._lock:
                        self._buffer.lines[:0] = left
                        self._buffer.size += sum(map(len, left))
            if sync and self._fd is not None:
                try:
                    if self._unsynced:
                        os.fsync(self._fd)
                        self._unsynced = False
                    self._synced_head = self._written_head
                    self._reopen_if_rotated()
                except OSError as exc:
                    result.sync_error = exc
        return result

    def _reopen_if_rotated(self) -> None:
        """If the path now names another file (logrotate), the next write opens the new one."""
        assert self._fd is not None
        today = utc_day(self._clock())
        if today != self._day:  # daily rotation (audit_rotate.py); one process renames
            rotate(self.path, self._day, self._fd)
            self._day = today
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            on_disk = None
        mine = os.fstat(self._fd)
        if on_disk is None or (on_disk.st_ino, on_disk.st_dev) != (mine.st_ino, mine.st_dev):
            os.close(self._fd)
            self._fd = None

    def _report(self, result: _IOResult) -> bool:
        """Log what went wrong (rate limited) or that it recovered; True when all is well."""
        if result.write_error is not None:
            if self._complaints.due("write"):
                _log.error(
                    "audit_write_failed",
                    path=str(self.path),
                    error=str(result.write_error),
                    pending_records=len(self._buffer.lines),
                    pending_bytes=self._buffer.size,
                    action="kept in memory, retrying",
                )
        elif result.written and self._complaints.resolved("write"):
            _log.info("audit_write_recovered", path=str(self.path), written=result.written)
        if result.sync_error is not None and self._complaints.due("fsync"):
            _log.error("audit_fsync_failed", path=str(self.path), error=str(result.sync_error))
        if len(self._buffer.lines) and self._buffer.size > self._max_buffer:
            self._drop_oldest()
        return result.write_error is None and result.sync_error is None and not result.left

    def _close_fd(self) -> None:
        with self._io_lock:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                finally:
                    self._fd = None

    # -- synchronous use (CLI) --

    def flush_sync(self) -> bool:
        """Write and fsync everything buffered now; False (and logged) if that failed."""
        return self._report(self._io(sync=True))

    def close_sync(self) -> bool:
        """`flush_sync()` and release the file (the head sink is not called: it is async)."""
        ok = self.flush_sync()
        self._close_fd()
        return ok

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_sync()

    # -- the background writer --

    async def start(self) -> None:
        """Start the background writer on the running loop (idempotent)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self) -> None:
        """Stop the writer, write and fsync every record, hand the last head to the sink."""
        if self._task is not None:
            self._closing = True
            assert self._wake is not None
            self._wake.set()
            await _unless_cancelled(self._task)
            self._task = None
        if self._sink_task is not None:
            await _unless_cancelled(self._sink_task)
            self._sink_task = None
        result = await asyncio.to_thread(self._io, True)
        if not self._report(result) and self._buffer.lines:
            _log.error(
                "audit_records_unwritten_at_close",
                path=str(self.path),
                records=len(self._buffer.lines),
            )
        head = self._synced_head
        if head is not None and head != self._sunk_head:
            await self._call_sink(head)
        self._close_fd()
        self._loop = self._wake = None

    async def __aenter__(self) -> AuditLog:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self) -> None:
        assert self._wake is not None
        last_sync = time.monotonic()
        while not self._closing:
            try:
                async with asyncio.timeout(self._flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                break  # close() does the last write itself
            now = time.monotonic()
            sync = now - last_sync >= self._fsync_interval
            self.render_queued()  # here on the loop's thread, not in the writer's
            if not self._buffer.lines and not sync:
                continue
            try:
                self._report(await asyncio.to_thread(self._io, sync))
            except Exception as exc:  # a bug here must not stop the audit trail
                _log.error("audit_writer_error", error=repr(exc))
            if sync:
                last_sync = now
                self._sink_head()

    def _sink_head(self) -> None:
        head = self._synced_head
        if self._head_sink is None or head is None or head == self._sunk_head:
            return
        if self._sink_task is not None and not self._sink_task.done():
            return  # the store is slow: the next second sends a newer head
        self._sink_task = asyncio.create_task(self._call_sink(head), name="audit-head-sink")

    async def _call_sink(self, head: tuple[str, int, str]) -> None:
        if self._head_sink is None:
            return
        try:
            await self._head_sink(*head)
        except Exception as exc:
            if self._complaints.due("sink"):
                _log.error("audit_head_sink_failed", chain=head[0], seq=head[1], error=repr(exc))
        else:
            self._sunk_head = head

    # -- fork --

    def _forked(self) -> None:
        """In a forked child: a new chain; the parent keeps and writes what was buffered."""
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._chain.restart()
        self._buffer.lines, self._buffer.size = [], 0
        self._queued = []
        self._written_head = self._synced_head = self._sunk_head = None
        self._unsynced = False
        self._loop = self._wake = None
        self._task = self._sink_task = None
        self._closing = False
