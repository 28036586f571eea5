"""Keep-alive connections to one upstream (scheme, host, port), at most `limit` open at once.

Idle connections are reused last-in first-out (the warmest socket first); those idle longer than
`idle_timeout` are closed when the pool is next used, and a connection the upstream closed while
idle drops out by itself (`forget`). A request that finds `limit` connections busy waits for one
to come back, at most the connect timeout (then 504, as for a connect that takes too long).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Final

from gateway.web.upstream.connection import Connection
from gateway.web.upstream.errors import UpstreamTimeout, UpstreamUnavailable

DEFAULT_LIMIT: Final = 512
IDLE_TIMEOUT: Final = 15.0  # below the usual backend keep-alive (aiohttp 75 s, nginx 75 s)


def _expire_waiter(waiter: asyncio.Future[Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("every connection to the upstream is busy"))


class Pool:
    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        *,
        limit: int = DEFAULT_LIMIT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.loop = asyncio.get_running_loop()
        self.idle: deque[Connection] = deque()
        self.open = 0  # connecting, busy and idle
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()

    async def acquire(self, connect_timeout: float) -> tuple[Connection, bool]:
        """A connection for one exchange, and whether it was used before (may be stale)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.closed:
                return conn, True
        if self.open >= self.limit:
            conn = await self._wait_for_one(connect_timeout)
            if conn is not None:
                return conn, True
        return await self._connect(connect_timeout), False

    async def _wait_for_one(self, within: float) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = self.loop.call_later(within, _expire_waiter, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed a connection in the same loop turn as the cancellation: pass it on.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()
                if handed is not None:
                    self.release(handed)
            raise
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _connect(self, within: float) -> Connection:
        self.open += 1
        try:
            async with asyncio.timeout(within):
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError as exc:
            self._closed_one()
            raise UpstreamTimeout(f"no connection to {self.host}:{self.port} in time") from exc
        except OSError as exc:
            self._closed_one()
            raise UpstreamUnavailable(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        except BaseException:
            self._closed_one()
            raise
        if conn.closed:  # closed between connecting and now: forget() did not count it
            self._closed_one()
            raise UpstreamUnavailable(f"{self.host}:{self.port} closed the connection at once")
        conn.counted = True
        return conn

    def release(self, conn: Connection) -> None:
        """Back after an exchange: kept if the whole response was read and both sides agree."""
        if not conn.reusable:
            conn.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        now = self.loop.time()
        conn.idle_since = now
        self.idle.append(conn)
        idle = self.idle
        while idle and now - idle[0].idle_since > self.idle_timeout:
            idle.popleft().close()

    def forget(self, conn: Connection) -> None:
        """The connection closed (either side): it no longer counts towards the limit."""
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.counted:
            conn.counted = False
            self._closed_one()

    def _closed_one(self) -> None:
        self.open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # room for a new connection
                return

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
