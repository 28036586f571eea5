"""Operator logs: one JSON object per line on stderr, through structlog.

Request id and client IP are bound per request through contextvars (web/observe.py), so every
line logged while serving a request carries them. Stable snake_case event names.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


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
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp and asyncio log through the standard library: same stream, same level.
    logging.basicConfig(
        stream=sys.stderr,
        level=max(numeric, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )
