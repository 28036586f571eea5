"""A request body as it arrives from the client, for the upstream client to stream on.

The front's parser feeds decoded body bytes (Content-Length or chunked framing already removed)
into `feed`; the request's task reads them with `chunks()`. When more than HIGH_WATER bytes wait,
the connection stops reading from the socket until the reader caught up (`pause`/`resume` are
the connection's), so a fast client uploading to a slow upstream holds bounded memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final

from gateway.web.proxy import ClientStalled

HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024


class BodyStream:
    __slots__ = ("_chunks", "_error", "_pause", "_paused", "_resume", "_size", "_waiter", "done")

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        self._paused = False
        self._error: BaseException | None = None
        self.done = False  # the whole body arrived

    @property
    def started(self) -> bool:
        """Some of the body arrived (or all of it)."""
        return bool(self._chunks) or self.done or self._size > 0

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """The client went away (or sent a broken body) before the end."""
        if not self.done and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            self._resume()
        return data

    async def chunks(self, idle: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives; the error given to `fail` (a ConnectionResetError saying why)
        if the body breaks off before its end, or if nothing of it arrives for `idle` seconds
        (a client trickling a body would otherwise hold the upstream connection)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._chunks:
                yield self._take()
                continue
            if self.done:
                return
            if self._error is not None:
                raise self._error
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(idle, self._idle, waiter, idle) if idle else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def _idle(self, waiter: asyncio.Future[None], idle: float) -> None:
        if not waiter.done():
            self.fail(ClientStalled(f"no body bytes from the client for {idle:g} s"))

    async def discard(self, within: float) -> bool:
        """Read the rest of the body and drop it; True if it ended within `within` seconds."""

        async def drain() -> None:
            async for _ in self.chunks():
                pass

        try:
            await asyncio.wait_for(drain(), within)
        except (TimeoutError, ConnectionResetError):
            return False
        return True
