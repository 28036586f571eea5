"""Operator logs: one JSON object per line on stderr, through structlog.

Request id and client IP are bound per request through contextvars (web/observe.py), so every
line logged while serving a request carries them. Stable snake_case event names.

Libraries that log through the standard library (aiohttp, asyncio) get the same JSON lines, with the
exception's type and where it was raised but never its message or traceback text: aiohttp's parser
exceptions quote the request bytes (API keys, passwords, cookies). The gateway's own
`log.exception(...)` lines likewise carry the exception's type and stack, never its message. A
library message that repeats (asyncio's "socket.accept() out of system resource" at the descriptor
limit) is logged once a minute with a count of what was suppressed, not once per connection."""

from __future__ import annotations

import json as jsonlib
import logging
import os
import sys
import time
from types import TracebackType
from typing import Any

import structlog

REPEAT_WINDOW = 60.0


class StdlibJsonFormatter(logging.Formatter):
    """One JSON object per record, without exception text (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "event": record.getMessage() if not record.exc_info else record.msg,
            "logger": record.name,
            "level": record.levelname.lower(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
        }
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _exc, tb = record.exc_info
            out["error"] = exc_type.__name__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                out["where"] = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        suppressed = getattr(record, "suppressed", None)
        if suppressed:
            out["suppressed"] = suppressed
        return jsonlib.dumps(out, default=str)


def _frames(tb: TracebackType | None) -> list[str]:
    out = []
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append(f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    return out


def safe_exc_info(_logger: object, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: an exception as its type and stack, never its message.

    Exception messages quote what they choked on (a header value, a form field, request bytes),
    so they are where a client's secret would reach the log. The type and the frames are enough
    to find the bug; the request id in the same line finds the request in the audit trail.
    """
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    exc_type, _exc, tb = exc_info
    if exc_type is not None:
        event_dict["error"] = exc_type.__name__
        event_dict["stack"] = _frames(tb)
    return event_dict


class RepeatFilter(logging.Filter):
    """Let a message template through once per REPEAT_WINDOW per logger; count the rest."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, object], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < REPEAT_WINDOW:
            seen[1] += 1
            return False
        record.suppressed = int(seen[1]) if seen else 0
        self._seen[key] = [now, 0]
        if len(self._seen) > 1000:  # templates, not values: stays small; bound it anyway
            self._seen.clear()
        return True


def configure_logging(level: str | None = None, *, json: bool | None = None) -> None:
    level_name = (level or os.environ.get("GATEWAY_LOG_LEVEL") or "info").upper()
    numeric = getattr(logging, level_name, logging.INFO)
    if json is None:
        json = not sys.stderr.isatty()
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            safe_exc_info,  # type and stack of an exception, never its message
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp and asyncio log through the standard library: same stream, JSON too.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StdlibJsonFormatter())
    handler.addFilter(RepeatFilter())
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
