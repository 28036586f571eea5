"""Requests the front does not serve itself go to aiohttp's server, in the same process.

The front's parser is the only one that reads a client's bytes: a request for aiohttp is passed
on re-encoded from what the front parsed (request line, header fields as parsed, the body with
the framing the front validated: Content-Length bytes as they are, a chunked body re-chunked,
trailers dropped). aiohttp's parser therefore sees only requests the front has already framed,
and the two parsers can never disagree about where a request ends (no request smuggling between
them). After an upgrade (WebSocket) the connection's bytes are no longer HTTP and pass through
unchanged.

aiohttp's RequestHandler writes straight to the client's socket through `BridgeTransport`.
Once a connection has handed a request to aiohttp, every later request on it goes there too,
so responses stay in order without the two sides coordinating.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway.web.front.limits import TEXTS, HeadRefused, parser_status

if TYPE_CHECKING:
    from gateway.web.front.connection import FrontProtocol
    from gateway.web.front.limits import ConnectionGuard

import structlog

log = structlog.get_logger("gateway.listener")


def encode_head(
    method: bytes, target: bytes, version: str, headers: list[tuple[bytes, bytes]]
) -> bytes:
    parts = [method, b" ", target, b" HTTP/", version.encode(), b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class BridgedHandler(RequestHandler):
    """aiohttp's connection protocol behind the front. Its parser errors (none should happen on
    re-encoded input) and the front's refusals are answered without a byte of the request."""

    __slots__ = ("_guard", "_peer", "upgraded")

    def __init__(self, manager: Any, *, guard: ConnectionGuard, peer: str | None, **kw: Any):
        super().__init__(manager, **kw)
        self._guard = guard
        self._peer = peer
        self.upgraded = False  # the front saw an upgrade: what follows is not HTTP to it

    def feed_upgraded(self, data: bytes) -> None:
        """Bytes after a request the front read as an upgrade, which its parser never saw:
        the new protocol's if aiohttp switched (WebSocket), else dropped, never parsed as HTTP
        here (the connection closes after the answer, see finish_response)."""
        if self._upgraded or self._payload_parser is not None:
            self.data_received(data)

    async def finish_response(
        self, request: Any, resp: Any, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if self.upgraded and self._payload_parser is None and not self._messages:
            # The upgrade was declined. aiohttp would now parse the bytes after it as the next
            # requests, bypassing the front's parser and limits: close instead.
            self._message_tail = b""
            self._upgraded = False
            if isinstance(resp, web.StreamResponse):
                resp.force_close()
        return await super().finish_response(request, resp, start_time)

    @property
    def busy(self) -> bool:
        """A request is being answered or waits for its turn."""
        return bool(self._request_in_progress or self._messages)

    def queue_refusal(self, refusal: HeadRefused) -> None:
        """Answer `refusal` after the requests already queued, then close (aiohttp queues its
        own parser errors the same way)."""
        self._messages.append((_ErrInfo(refusal.status, refusal, refusal.reason), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail_body(self) -> None:
        """The body of the request aiohttp is reading broke off (the front's parser refused
        what followed): that request fails with 400 when it reads its body, and the
        connection closes after its answer."""
        if self._messages:
            payload = self._messages[-1][1]
        else:
            request = self._current_request
            payload = request.content if request is not None else None
        if payload is not None and payload is not EMPTY_PAYLOAD:
            payload.set_exception(
                web.HTTPBadRequest(text=TEXTS[400] + "\n", headers={"Server": "gateway"})
            )
        self.close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Our answer for what aiohttp refused; `message` (request bytes) is dropped."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        if status == 400 or isinstance(exc, HeadRefused):
            status, reason = parser_status(exc)
        else:
            reason = "internal_error"
            log.error("unhandled_error", error=type(exc).__name__ if exc else None)
        request_id = self._guard.rejected(status, reason, self._peer)
        response = web.Response(
            status=status,
            text=TEXTS.get(status, "The gateway could not handle this request.") + "\n",
            headers={"X-Gateway-Request-Id": request_id, "Server": "gateway"},
        )
        response.force_close()
        return response


class BridgeTransport(asyncio.Transport):
    """The client's transport as aiohttp's handler sees it: writes go straight to the socket;
    pausing reading pauses the front (which feeds the handler); closing closes the connection."""

    def __init__(self, transport: asyncio.Transport, front: FrontProtocol) -> None:
        super().__init__()
        self._transport = transport
        self._front = front

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._front.close()

    def abort(self) -> None:
        self._transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._front.pause("bridge")

    def resume_reading(self) -> None:
        self._front.resume("bridge")

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()
