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
    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._counts: dict[tuple[str, int], int] = {}

    def add(self, user: str) -> None:
        """Count one request of `user` (the request path: no I/O, no await)."""
        key = (user, int(self._clock()) // HOUR)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def pending(self, user: str, since_hour: int) -> int:
        """Counts of this process not written yet (so a page shows them at once)."""
        return sum(n for (u, h), n in self._counts.items() if u == user and h >= since_hour)

    async def flush(self) -> None:
        """Write the counts so far; on failure they are kept for the next try."""
        counts, self._counts = self._counts, {}
        if not counts:
            return
        try:
            await self._store.request_counts_add(counts)
        except BaseException:
            for key, n in counts.items():
                self._counts[key] = self._counts.get(key, 0) + n
            raise

    async def run(self, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every `interval` seconds until cancelled (then call `flush()` once more)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("request_counts_flush_failed", error=str(exc))
