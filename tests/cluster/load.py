"""A bounded load through nginx for the failure tests: every request's start, end and outcome."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    status: int | None  # None: the connection failed or the body was cut
    echoed: bool

    def in_flight_at(self, moment: float) -> bool:
        return self.started < moment < self.ended


@dataclass
class Load:
    """`workers` clients, each with its own session cookie, each sending at most `requests`
    GETs (and stopping earlier once `stop` is set)."""

    url: str
    cookies: list[dict[str, str]]
    requests: int = 400
    pause: float = 0.005
    outcomes: list[Outcome] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _worker(self, cookies: dict[str, str]) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(
            cookies=cookies, timeout=timeout, cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            for _ in range(self.requests):
                if self.stop.is_set():
                    return
                started = time.monotonic()
                status: int | None = None
                echoed = False
                try:
                    async with http.get(self.url, allow_redirects=False) as reply:
                        await reply.read()
                        status = reply.status
                        echoed = reply.headers.get("X-Backend") == "echo"
                except (aiohttp.ClientError, TimeoutError):
                    status = None
                self.outcomes.append(Outcome(started, time.monotonic(), status, echoed))
                await asyncio.sleep(self.pause)

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(c) for c in self.cookies))

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is None or o.status >= 500]
