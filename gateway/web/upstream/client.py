"""A small HTTP/1.1 client for the proxy hop: one pool per upstream, streamed bodies both ways.

    client = UpstreamClient()
    response = await client.request("http://127.0.0.1:3000", "GET", "/path?q", headers,
                                    body=None, connect_timeout=5, read_timeout=60)
    async for chunk in response.chunks(): ...     # raises UpstreamError if cut short
    response.release()                            # the connection goes back only if read whole

What it does and why (docs/performance.md has the measurements):

- The request head is written with one `transport.write`; header values were checked by the
  caller's parser, the gateway's own are checked here for CR/LF (no header injection).
- Request bodies: with a Content-Length exactly that many bytes, else chunked. The body is sent
  while the response is awaited, so an upstream that answers early (413, 401) is heard at once;
  the connection is then not reused.
- `Expect: 100-continue` (`expect_continue=True`): the head goes first; the body follows on
  `100 Continue`, on a final answer (then it is not sent), or after `EXPECT_WAIT` seconds
  (RFC 9110 10.1.1: a client need not wait forever for an upstream that ignores Expect).
- Timeouts: `connect_timeout` for the TCP (and TLS) connection; `read_timeout` for each wait for
  data from the upstream once the request was sent (a silent upstream: 504). A slow client upload
  does not count against the upstream.
- A pooled connection the upstream closed just as it was reused (nothing received) is retried
  once on a new connection when the request has no body; anything else is an error (502).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from typing import Final
from urllib.parse import urlsplit

from gateway.web.upstream.connection import Connection
from gateway.web.upstream.errors import UpstreamError, UpstreamUnavailable
from gateway.web.upstream.pool import DEFAULT_LIMIT, IDLE_TIMEOUT, Pool

EXPECT_WAIT: Final = 1.0
Headers = list[tuple[str, str]]


def _encode_head(method: str, target: str, headers: Headers, extra: str) -> bytes:
    text = f"{method} {target} HTTP/1.1\r\n" + "\r\n".join(map(": ".join, headers))
    text += "\r\n" + extra + "\r\n" if headers else extra + "\r\n"
    # Every line ends in CRLF: any other CR or LF came from a value (header injection).
    expected = len(headers) + 2 + (1 if extra else 0)
    if text.count("\n") != expected or text.count("\r") != expected:
        raise ValueError("CR or LF in a request line or header")
    return text.encode("utf-8", "surrogateescape")


class UpstreamResponse:
    """The status and headers of a final response, and its body as it streams in."""

    __slots__ = ("_client", "_conn", "_pool", "_read_timeout", "_released", "headers", "status")

    def __init__(self, pool: Pool, conn: Connection, read_timeout: float) -> None:
        self._pool = pool
        self._conn = conn
        self._read_timeout = read_timeout
        self._released = False
        self.status = conn.status
        self.headers: Headers = [
            (n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in conn.headers
        ]

    @property
    def reason(self) -> str:
        return self._conn.reason.decode("latin-1")

    @property
    def complete(self) -> bool:
        """The whole body has arrived (small responses usually come in one read)."""
        return self._conn.complete

    def read_now(self) -> bytes:
        """The body received so far (all of it once `complete`)."""
        return self._conn.take_body() if self._conn.body else b""

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; UpstreamError if the upstream stops or fails before its end."""
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take_body()
                continue
            if conn.complete:
                return
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._read_timeout, "mid-response")

    def release(self) -> None:
        """Hand the connection back: kept for reuse only if the response was read to its end."""
        if not self._released:
            self._released = True
            self._pool.release(self._conn)

    def close(self) -> None:
        """Give up on the rest of the response: the connection is closed."""
        if not self._released:
            self._released = True
            self._conn.close()
            self._pool.release(self._conn)


class UpstreamClient:
    def __init__(self, *, limit_per_upstream: int = DEFAULT_LIMIT) -> None:
        self._limit = limit_per_upstream
        self._pools: dict[str, Pool] = {}
        self._tls: ssl.SSLContext | None = None

    def _pool(self, upstream: str) -> Pool:
        pool = self._pools.get(upstream)
        if pool is None:
            parts = urlsplit(upstream)
            tls = None
            if parts.scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                tls = self._tls
            elif parts.scheme != "http":
                raise UpstreamUnavailable(f"unsupported upstream scheme {parts.scheme!r}")
            port = parts.port or (443 if tls else 80)
            pool = self._pools[upstream] = Pool(
                parts.hostname or "", port, tls, limit=self._limit, idle_timeout=IDLE_TIMEOUT
            )
        return pool

    async def request(
        self,
        upstream: str,
        method: str,
        target: str,
        headers: Headers,
        body: AsyncIterable[bytes] | None = None,
        *,
        content_length: int | None = None,
        connect_timeout: float,
        read_timeout: float,
        expect_continue: bool = False,
    ) -> UpstreamResponse:
        """Send one request to `upstream` (scheme://host:port) and return the final response's
        head; the caller reads the body and releases. `headers` must hold the framing header
        (Content-Length) when `content_length` is given; chunked framing is added here."""
        pool = self._pool(upstream)
        extra = ""
        if body is not None and content_length is None:
            extra = "Transfer-Encoding: chunked\r\n"
        head = _encode_head(method, target, headers, extra)
        for attempt in (1, 2):
            conn, reused = await pool.acquire(connect_timeout)
            try:
                await self._exchange(
                    conn, head, method, body, content_length, read_timeout, expect_continue
                )
            except UpstreamError as exc:
                stale = (
                    isinstance(exc, UpstreamUnavailable)
                    and reused
                    and conn.closed
                    and not conn.received_any
                    and body is None
                    and attempt == 1
                )
                conn.close()
                pool.release(conn)
                if stale:
                    continue  # the upstream closed an idle connection as we reused it
                raise
            except BaseException:
                conn.close()
                pool.release(conn)
                raise
            return UpstreamResponse(pool, conn, read_timeout)
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        conn: Connection,
        head: bytes,
        method: str,
        body: AsyncIterable[bytes] | None,
        content_length: int | None,
        read_timeout: float,
        expect_continue: bool,
    ) -> None:
        conn.begin(head=method == "HEAD")
        if body is None:
            conn.write(head)
        else:
            conn.body_sent = False
            if expect_continue:
                go_on = conn.expect_continue()
                conn.write(head)
                # An upstream that ignores Expect gets the body anyway after EXPECT_WAIT.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(go_on), min(EXPECT_WAIT, read_timeout))
                if conn.headers_done or conn.error is not None:
                    body = None  # answered without the body: do not send it
            else:
                conn.write(head)
            if body is not None:
                sending = asyncio.ensure_future(_send_body(conn, body, content_length))
                try:
                    while not sending.done() and not conn.headers_done and conn.error is None:
                        waiting = asyncio.ensure_future(conn.wait(1e9, "while sending"))
                        await asyncio.wait((sending, waiting), return_when=asyncio.FIRST_COMPLETED)
                        waiting.cancel()
                        await asyncio.gather(waiting, return_exceptions=True)
                    if sending.done() and not conn.headers_done:
                        sending.result()  # the client went away, or the upstream did
                finally:
                    if not sending.done():
                        sending.cancel()  # answered before the body was sent: stop sending
                    await asyncio.gather(sending, return_exceptions=True)
        while not conn.headers_done:
            if conn.error is not None:
                raise conn.error
            await conn.wait(read_timeout, "before a response")

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


async def _send_body(conn: Connection, body: AsyncIterable[bytes], length: int | None) -> None:
    sent = 0
    async for chunk in body:
        if not chunk:
            continue
        sent += len(chunk)
        if length is not None:
            if sent > length:
                raise UpstreamUnavailable("the request body is longer than its Content-Length")
            conn.write(chunk)
        else:
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        await conn.drain()
    if length is None:
        conn.write(b"0\r\n\r\n")
    elif sent != length:
        raise UpstreamUnavailable("the request body ended before its Content-Length")
    conn.body_sent = True
