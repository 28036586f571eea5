"""Requests per user and hour: a dictionary increment on the request path, written to the state
store in the background.

Every process keeps its own counts and adds them to the store's (user, hour) rows every few
seconds, so several processes' counts add up. A crash loses at most one interval of counts:
these are activity figures for admins, not billing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from gateway.services.store import StateStore

log = structlog.get_logger("gateway.security")

FLUSH_INTERVAL = 5.0
HOUR = 3600


class RequestCounter:
    """Counts of this process: the current hour's per user (what the request path touches),
    and earlier hours' not written yet. The hour rolls over when the counts are flushed, and
    `run()` wakes at each hour boundary to do so, so a request is counted in its own hour."""

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._hour = int(clock()) // HOUR
        self._current: dict[str, int] = {}
        self._unwritten: dict[tuple[str, int], int] = {}

    def add(self, user: str) -> None:
        """Count one request of `user` (the request path: one dict update, no clock, no I/O)."""
        current = self._current
        current[user] = current.get(user, 0) + 1

    def _roll(self) -> None:
        """File the current counts under their hour; start the hour the clock says now."""
        current, self._current = self._current, {}
        for user, n in current.items():
            key = (user, self._hour)
            self._unwritten[key] = self._unwritten.get(key, 0) + n
        self._hour = int(self._clock()) // HOUR

    def pending(self, user: str, since_hour: int) -> int:
        """Counts of this process not written yet (so a page shows them at once)."""
        current = self._current.get(user, 0) if self._hour >= since_hour else 0
        return current + sum(
            n for (u, h), n in self._unwritten.items() if u == user and h >= since_hour
        )

    async def flush(self) -> None:
        """Write the counts so far; on failure they are kept for the next try."""
        self._roll()
        counts, self._unwritten = self._unwritten, {}
        if not counts:
            return
        try:
            await self._store.request_counts_add(counts)
        except BaseException:
            for key, n in counts.items():
                self._unwritten[key] = self._unwritten.get(key, 0) + n
            raise

    async def run(self, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every `interval` seconds and at each hour boundary, until cancelled (then
        call `flush()` once more)."""
        while True:
            to_next_hour = HOUR - self._clock() % HOUR
            await asyncio.sleep(min(interval, to_next_hour + 0.001))
            try:
                await self.flush()
            except Exception as exc:
                log.warning("request_counts_flush_failed", error=str(exc))
