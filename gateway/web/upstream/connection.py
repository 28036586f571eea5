"""One keep-alive HTTP/1.1 connection to an upstream: an asyncio.Protocol fed to llhttp.

The protocol parses responses with httptools (llhttp, strict: bare LF line ends, obsolete line
folding, duplicate or conflicting Content-Length/Transfer-Encoding are errors) and keeps the
state of the one exchange in flight: status, headers, the body chunks not yet taken, and whether
the response ended cleanly. The consumer (`client.UpstreamResponse`) takes body chunks with
`next_body`; when more than `HIGH_WATER` bytes wait, reading from the socket pauses until the
consumer caught up (backpressure: a slow client slows the upstream, memory stays bounded).
Writing honours the transport's own flow control (`drain`).

Interim responses: `100 Continue` wakes a request that waits to send its body; other 1xx (102,
103) are read and dropped; `101` is an error (this client never asks for an upgrade).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final

import httptools

from gateway.web.upstream.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

if TYPE_CHECKING:
    from gateway.web.upstream.pool import Pool

HIGH_WATER: Final = 256 * 1024  # body bytes waiting for the consumer before reading pauses
LOW_WATER: Final = 64 * 1024
MAX_HEAD: Final = 64 * 1024  # status line + headers of one response
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})


def _expire(waiter: asyncio.Future[None], what: str) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(f"no data from the upstream {what}"))


class Connection(asyncio.Protocol):
    """The protocol of one upstream socket; used by one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.counted = False  # counted in pool.open (set once connected; forget() uncounts)
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._paused_writing = False
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._waiter: asyncio.Future[None] | None = None
        self._continue: asyncio.Future[None] | None = None
        self.begin(head=False)

    # -- one exchange --

    def begin(self, head: bool) -> None:
        """Reset the response state before a request is written."""
        self.head_request = head
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._framed = False  # Content-Length or Transfer-Encoding seen: not ended by EOF
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self.received_any = False
        self.body: deque[bytes] = deque()
        self.body_size = 0
        self.body_sent = True  # the request body was written whole (set False while streaming)

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and self.body_sent
            and not self.closed
            and self.transport is not None
            and not self.head_request
            and self.error is None
        )

    def expect_continue(self) -> asyncio.Future[None]:
        self._continue = self.loop.create_future()
        return self._continue

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have its methods
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamUnavailable("the upstream switched protocols unasked (101)"))
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised (ours: UpstreamError) in its own error.
            cause = exc.__cause__ or exc.__context__
            self._fail(
                cause
                if isinstance(cause, UpstreamError)
                else UpstreamUnavailable(f"malformed response from the upstream: {exc}")
            )

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if not self.complete and self.error is None:
            if self.headers_done and not self._framed and exc is None and self._no_body_rule():
                self._finish()  # body delimited by the end of the connection (RFC 9112 6.3)
            else:
                where = "mid-response" if self.headers_done else "before a response"
                self.error = UpstreamUnavailable(f"the upstream closed the connection {where}")
        self._wake()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(UpstreamUnavailable("the upstream closed the connection"))
        if self._continue is not None and not self._continue.done():
            self._continue.set_result(None)
        self.pool.forget(self)

    def _no_body_rule(self) -> bool:
        """True for a response whose body runs to EOF (no length, not 1xx/204/304, not HEAD)."""
        return not (self.head_request or self.status in (204, 304) or 100 <= self.status < 200)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks --

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        self._count(len(reason))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a trailer field: not forwarded (the client side cannot send trailers)
        self._count(len(name) + len(value))
        if name.lower() in _FRAMING:
            self._framed = True
        self.headers.append((name, value))

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise UpstreamUnavailable(f"the upstream's response head is over {MAX_HEAD} bytes")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if status == 100 and self._continue is not None and not self._continue.done():
                self._continue.set_result(None)
            if status == 101:
                raise UpstreamUnavailable("the upstream switched protocols unasked (101)")
            self.reason, self.headers, self._head_size, self._framed = b"", [], 0, False
            return
        self.status = status
        self.headers_done = True
        if self._continue is not None and not self._continue.done():
            self._continue.set_result(None)  # a final answer instead of 100: stop waiting
        if self.head_request:
            # llhttp does not know the method and would wait for the announced body: the
            # exchange ends here, and the connection is not reused (see `reusable`).
            self._finish()
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.body.append(body)
        self.body_size += len(body)
        if self.body_size > HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            self.keep_alive = self._parser.should_keep_alive()
            self._finish()

    # -- helpers --

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, within: float, what: str) -> None:
        """Until the parser made progress (or failed, or the connection ended), or `within`
        seconds passed (UpstreamTimeout). One timer handle, cheaper than asyncio.timeout."""
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(within, _expire, waiter, what)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:  # a cancelled earlier wait must not drop a newer one
                self._waiter = None

    def take_body(self) -> bytes:
        """Every body byte that arrived so far, in one piece; resumes reading if it paused."""
        body = self.body
        chunk = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self.body_size = 0
        if self._paused_reading and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()
        return chunk

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise UpstreamUnavailable("the upstream closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise UpstreamUnavailable("the upstream closed the connection")
        if self._paused_writing:
            if self._drain is None:
                self._drain = self.loop.create_future()
            await self._drain

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
