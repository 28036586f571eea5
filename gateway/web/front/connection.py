"""One client connection of the front: limits, the parser, and who answers each request.

The front is the gateway's HTTP/1.1 server (asyncio.Protocol + httptools, the llhttp parser).
Its parser is the only one that reads what clients send. Each request head it parses goes one of
two ways:

- **served here** (gateway.web.front.proxied): a request to an app of the `api` surface, in
  origin form, without an upgrade. These are the gateway's hot path: the gate decides on the
  snapshot alone (allowlist, API key, role), and the request is forwarded with the lean upstream
  client, with no aiohttp request or response objects built for it.
- **to aiohttp** (gateway.web.front.bridge): everything else (the gateway's own pages, the
  dashboard surface with its sessions, WebSocket upgrades, anything unusual), re-encoded from
  what the parser read. From then on the connection stays with aiohttp.

Limits (docs/security.md), for every connection whichever side answers:

- **Head timeout.** A request head must be complete within HEAD_TIMEOUT (10 s) of its first
  byte (of the connection, for the first request): else 408 if part of a head came, silently
  closed if nothing did. Idle keep-alive between requests: KEEPALIVE_TIMEOUT. A request being
  served is never cut.
- **Head size.** 8 KiB per request target, header name or header value, 128 header fields, and
  64 KiB per head in all (also counted on the raw bytes while a head is incomplete, so a client
  that trickles a huge header cannot grow the parser's buffers): 431 beyond.
- **Versions.** HTTP/1.0 and HTTP/1.1; anything else 505.
- **Transfer codings.** A request body is sent with a Content-Length or chunked, nothing else
  (`gzip, chunked` and the like): 501.
- **Parser errors** (llhttp, strict: bare LF, obsolete line folding, Content-Length with
  Transfer-Encoding, two lengths, bad chunk sizes...) are answered 400 with a request id,
  audited as a `request` record, and logged without a byte of the request.
- **Connections per client IP and file descriptors**: ConnectionGuard, at accept.

Requests on one connection are answered in order: a pipelined request waits (and reading
pauses) until the one before it was answered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final

import httptools
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.policy import decide
from gateway.web.front import authz
from gateway.web.front.body import BodyStream
from gateway.web.front.bridge import BridgedHandler, BridgeTransport, encode_head
from gateway.web.front.limits import (
    KEEPALIVE_TIMEOUT,
    LINGER,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_LINE,
    HeadRefused,
    raw_answer,
)
from gateway.web.front.proxied import PROXY, FastRequest, serve
from gateway.web.gate import Described, locate
from gateway.web.observe import new_context
from gateway.web.paths import path_has_prefix
from gateway.web.proxy import ClientStalled

if TYPE_CHECKING:
    from gateway.web.front.site import Front

log = structlog.get_logger("gateway.listener")

_BRIDGE: Final = "bridge"  # queue item: hand the connection to aiohttp
# Pipelined requests parsed ahead of their turn: each holds some 25 times its bytes once
# parsed, and one read can bring thousands. Beyond this many, the rest of a read waits as bytes.
MAX_WAITING: Final = 32
_SLICE: Final = 4096  # a long read is parsed this much at a time
_VERSIONS: Final = frozenset({"1.0", "1.1"})
_TE: Final = b"transfer-encoding"
_CL: Final = b"content-length"

Item = FastRequest | HeadRefused | str


class FrontProtocol(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self.front = front
        self.loop = front.loop
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.tls = False
        self.closed = False
        self._admitted = False
        self._refused = False  # input is ignored; the connection closes after our answer
        self._parser = httptools.HttpRequestParser(self)
        # who answers
        self._queue: deque[Item] = deque()
        self._unparsed = b""  # the rest of a read, while MAX_WAITING requests wait
        self._busy = False  # a request is being served here
        # The connection's worker task serves its requests one after the other, and waits
        # for the next one on `_waiting`: cheaper than a task per request.
        self._worker: asyncio.Task[None] | None = None
        self._waiting: asyncio.Future[FastRequest] | None = None
        self._handoff: FastRequest | None = None  # the next request, started by the worker
        self.bridge: BridgedHandler | None = None
        self._to_bridge: list[bytes] | None = None  # for aiohttp, before it takes over
        self._late_refusal: HeadRefused | None = None
        self._upgraded = False
        # the message being parsed
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._codings: list[bytes] = []  # Transfer-Encoding values
        self._head_size = 0
        self._in_body = False
        self._body: BodyStream | None = None  # its body, when served here
        self._bridging = False  # its bytes go to aiohttp
        self._rechunk = False  # ... re-chunked
        # after a chunk header, before its data: after the last chunk, the trailer section
        self._chunk_header = False
        self._trailer_bytes = 0  # received while _chunk_header (the trailer's size, about)
        # limits
        self._head_bytes = 0
        self._awaiting_head = True
        self._deadline: float | None = None
        self._deadline_kind = ""
        self._timer: asyncio.TimerHandle | None = None
        self._paused: set[str] = set()
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have its methods
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) and peer else None
        refusal = self.front.guard.admit(self.peer)
        if refusal is not None:
            transport.write(raw_answer(refusal))
            transport.close()
            return
        self._admitted = True
        self.transport = transport  # type: ignore[assignment]
        self.tls = transport.get_extra_info("sslcontext") is not None
        self.front.connections.add(self)
        self._arm("head", self.front.guard.head_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self.closed = True
        self.front.guard.release(self.peer)
        self.front.connections.discard(self)
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gone = ConnectionResetError("the client closed the connection")
        if self._body is not None:
            self._body.fail(gone)
        for item in self._queue:
            if isinstance(item, FastRequest) and item.body is not None:
                item.body.fail(gone)
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(gone)
        self._stop_worker()
        if self.bridge is not None:
            self.bridge.connection_lost(exc)
        self.transport = None

    def eof_received(self) -> bool:
        return False  # the client is done sending: close (as aiohttp's server does)

    @property
    def idle(self) -> bool:
        """Nothing is being answered or waiting, here or in aiohttp."""
        return not self._busy and not self._queue and (self.bridge is None or not self.bridge.busy)

    def close(self) -> None:
        """Close the connection; after a refusal gently (FIN, then read and drop for LINGER s),
        so a client still sending does not get a reset that could lose our answer."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._refused and transport.can_write_eof():
            transport.write_eof()
            if self._paused:  # read (and drop) what the client still sends
                self._paused.clear()
                transport.resume_reading()
            self.loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    def abort(self) -> None:
        """Close now (an idle connection at shutdown: nothing is waiting to be sent)."""
        if self.transport is not None:
            self.transport.close()

    def cut(self) -> None:
        """Drop the connection at once, with whatever was not yet sent: an answer cut short
        must not wait for a client that may never read the rest."""
        if self.transport is not None:
            self.transport.abort()

    # -- reading ------------------------------------------------------------------------------

    def pause(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self._paused:
            self._paused.discard(reason)
            if not self._paused and self.transport is not None:
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._upgraded:
            self._send_upgraded(data)
            return
        if self._unparsed:  # reading is paused; in case a read was already under way
            self._unparsed += data
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
            if self._deadline_kind != "head":
                self._arm("head", self.front.guard.head_timeout)
        elif self._chunk_header:
            self._trailer_bytes += len(data)
        try:
            self._feed(data)
        finally:
            self._kick()  # requests parsed from this read start only now (see _refuse)

    def _feed(self, data: bytes) -> None:
        if len(data) <= _SLICE:
            if not self._parse(data, data, 0):
                return
        else:
            view = memoryview(data)
            for start in range(0, len(data), _SLICE):
                if len(self._queue) >= MAX_WAITING:
                    self._unparsed = data[start:]  # parsed as the queue drains (_kick)
                    return
                if not self._parse(view[start : start + _SLICE], data, start):
                    return
        if self._awaiting_head and self._head_bytes > MAX_HEAD:
            self._refuse(HeadRefused(431, "head_too_large"))
        elif self._chunk_header and self._trailer_bytes > MAX_HEAD:
            # httptools holds an unfinished trailer field whole: a trailer section is held to
            # the size of a head (it is never passed on)
            self._refuse(HeadRefused(431, "trailer_too_large"))

    def _parse(self, piece: bytes | memoryview, data: bytes, start: int) -> bool:
        """Feed `piece`, which starts at `start` in `data`; False if the rest of `data` is not
        for the parser (an upgrade, a refusal)."""
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True  # the rest is not HTTP (a WebSocket's frames): aiohttp's
            if self.bridge is not None:
                self.bridge.upgraded = True
            tail = data[start + exc.args[0] :]
            if tail:
                self._send_upgraded(tail)
            return False
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, HeadRefused):
                log.error("front_error", error=type(cause).__name__ if cause else None)
                cause = HeadRefused(400, "bad_request")
            self._refuse(cause)
            return False
        except httptools.HttpParserError as exc:
            self._refuse(HeadRefused(400, "parser:" + type(exc).__name__))
            return False
        return True

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._target = b""
        self._headers = []
        self._codings = []
        self._head_size = 0
        if self._deadline_kind != "head":
            # A head whose first byte came in the read that ended the request before it:
            # data_received did not see it start.
            self._head_bytes = self._head_bytes or 1
            self._arm("head", self.front.guard.head_timeout)

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > MAX_LINE:
            raise HeadRefused(431, "line_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            return  # a trailer field of a chunked body: not passed on
        if len(name) > MAX_LINE or len(value) > MAX_LINE:
            raise HeadRefused(431, "line_too_long")
        self._headers.append((name, value))
        if len(name) == 17 and name.lower() == _TE:
            self._codings.append(value)
        if len(self._headers) > MAX_HEADERS:
            raise HeadRefused(431, "too_many_headers")
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise HeadRefused(431, "head_too_large")

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._awaiting_head = False
        self._head_bytes = 0
        self._deadline = None
        self._deadline_kind = ""
        parser = self._parser
        version = parser.get_http_version()
        if version not in _VERSIONS:
            raise HeadRefused(505, "http_version")
        method = parser.get_method()
        if self._head_size + len(method) + len(self._target) > MAX_HEAD:
            raise HeadRefused(431, "head_too_large")
        codings = self._codings
        if codings and (len(codings) > 1 or codings[0].strip().lower() != b"chunked"):
            # e.g. "gzip, chunked": forwarding it as chunked would hand the backend a coded
            # body that no longer says so (RFC 9112 6.1: 501 for a coding not understood).
            raise HeadRefused(501, "transfer_coding")
        upgrade = parser.should_upgrade()
        if self.bridge is None and self._to_bridge is None and not upgrade:
            request = self._request_for_here(method, version, parser.should_keep_alive())
            if request is not None:
                self._body = request.body
                self._enqueue(request)
                return
        self._to_aiohttp(method, version, upgrade)

    def on_chunk_header(self) -> None:
        self._chunk_header = True
        self._trailer_bytes = 0

    def on_chunk_complete(self) -> None:
        self._chunk_header = False

    def on_body(self, body: bytes) -> None:
        self._chunk_header = False
        if self._body is not None:
            self._body.feed(body)
        elif self._bridging:
            self._send_bridge(b"%x\r\n%b\r\n" % (len(body), body) if self._rechunk else body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._chunk_header = False
        self._awaiting_head = True
        if self._body is not None:
            self._body.finish()
            self._body = None
        elif self._bridging and self._rechunk:
            self._send_bridge(b"0\r\n\r\n")
        self._bridging = False

    # -- who answers --------------------------------------------------------------------------

    def _request_for_here(
        self, method_b: bytes, version: str, keep_alive: bool
    ) -> FastRequest | None:
        """The request, if the front serves it itself (see the module docstring); else None."""
        target_b = self._target
        services = self.front.services()
        if services is None or target_b[:1] != b"/":
            return None
        headers = [
            (n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in self._headers
        ]
        multi = CIMultiDictProxy(CIMultiDict(headers))
        hosts = multi.getall("Host", ())
        if len(hosts) > 1 or (not hosts and version == "1.1"):
            return None  # aiohttp's parser refuses these (400)
        method = method_b.decode("ascii")
        view = Described(
            method, hosts[0] if hosts else None, target_b.decode("utf-8", "surrogateescape"), multi
        )
        snapshot = services.holder.current
        ctx = new_context(snapshot, self.peer, multi, self.tls, bind=False)  # bound in serve
        if locate(ctx, view) is not None:
            return None  # aiohttp's side answers the 400 (the same steps, the same answer)
        assert ctx.path is not None
        length = multi.get("Content-Length")
        content_length = int(length) if length is not None else None
        has_body = bool(content_length) or bool(self._codings)
        kind = PROXY
        if path_has_prefix(ctx.path, snapshot.prefix):
            name = authz.endpoint(ctx, snapshot)
            if name is None or has_body:
                return None
            described = authz.described_for_here(ctx, name, method, multi, self.peer)
            if described is None:
                return None
            kind, view = name, described
        else:
            app = decide.match_route(snapshot, ctx.host.name if ctx.host else None, ctx.path)
            if app is None or app.surface != "api":
                return None
            ctx.app, ctx.surface = app, app.surface
        body = BodyStream(self._pause_body, self._resume_body) if has_body else None
        expect = has_body and version == "1.1" and multi.get("Expect", "").lower() == "100-continue"
        return FastRequest(
            kind, method, version, headers, view, ctx, keep_alive, body, content_length, expect
        )

    def _to_aiohttp(self, method: bytes, version: str, upgrade: bool) -> None:
        chunked = bool(self._codings)
        if upgrade and (
            chunked
            or any(n.lower() == _CL and v.strip() not in (b"", b"0") for n, v in self._headers)
        ):
            # After an upgrade the bytes that follow are not HTTP: a body here would be read
            # as the new protocol by one side and as the body by the other.
            raise HeadRefused(400, "upgrade_with_body")
        self._bridging = True
        self._rechunk = chunked
        if self.bridge is None and self._to_bridge is None:
            self._to_bridge = []
            self._enqueue(_BRIDGE)
        self._send_bridge(encode_head(method, self._target, version, self._headers))

    def _send_bridge(self, data: bytes) -> None:
        if self.bridge is not None:
            self.bridge.data_received(data)
        elif self._to_bridge is not None:
            self._to_bridge.append(data)

    def _send_upgraded(self, data: bytes) -> None:
        if self.bridge is not None:
            self.bridge.feed_upgraded(data)
        elif self._to_bridge is not None:
            self._to_bridge.append(data)  # with the upgrade's head: aiohttp keeps it as its tail

    def _enqueue(self, item: Item) -> None:
        self._queue.append(item)

    def _kick(self) -> None:
        """Start what is next in line, unless a request is being answered here; reading pauses
        while requests wait (pipelining), and at most MAX_WAITING of them (and one read's
        bytes) are held, parsing the rest of the read as they are answered."""
        queue = self._queue
        while True:
            while queue and not self._busy:
                self._start(queue.popleft())
            if not self._unparsed or len(queue) >= MAX_WAITING or self._refused or self.closed:
                break
            data, self._unparsed = self._unparsed, b""
            self._feed(data)
        if queue or self._unparsed:
            self.pause("queue")
        else:
            self.resume("queue")

    def _start(self, item: Item) -> None:
        if isinstance(item, FastRequest):
            self._busy = True
            waiting = self._waiting
            if waiting is not None:
                self._waiting = None
                waiting.set_result(item)
            elif self._worker is not None:  # the worker is finishing a request: next is this
                self._handoff = item
            else:
                self._worker = self.loop.create_task(self._work(item))
        elif isinstance(item, HeadRefused):
            self._answer_refusal(item)
        else:
            self._start_bridge()

    async def _work(self, request: FastRequest) -> None:
        """Serve `request`, then each next request served here, until the connection ends."""
        try:
            while True:
                try:
                    keep_alive = await serve(self, request, self.front.services())  # type: ignore[arg-type]
                finally:
                    self._busy = False
                if self.closed:
                    return
                if not keep_alive or self.front.closing:
                    self.close()
                    return
                self._kick()
                if self.idle and self._awaiting_head and self._deadline is None:
                    self._arm("idle", KEEPALIVE_TIMEOUT)
                handoff, self._handoff = self._handoff, None
                if handoff is None:
                    self._waiting = self.loop.create_future()
                    handoff = await self._waiting  # cancelled when the connection ends
                request = handoff
        except asyncio.CancelledError:
            return
        finally:
            self._worker = None

    def _stop_worker(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()

    def _start_bridge(self) -> None:
        front = self.front
        assert self.transport is not None
        handler = BridgedHandler(
            front.server,
            guard=front.guard,
            peer=self.peer,
            loop=self.loop,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            access_log=None,
            # the front checked the limits; the re-encoded line adds " HTTP/1.1" and the method
            max_line_size=MAX_LINE + 64,
            max_field_size=MAX_LINE + 64,
            max_headers=MAX_HEADERS,
        )
        self.bridge = handler
        self._stop_worker()  # nothing more is served here
        handler.upgraded = self._upgraded
        handler.connection_made(BridgeTransport(self.transport, self))
        if self._writing_paused:
            handler.pause_writing()
        pending = b"".join(self._to_bridge or ())
        self._to_bridge = None
        if pending:
            handler.data_received(pending)
        if self._late_refusal is not None:
            handler.queue_refusal(self._late_refusal)

    # -- refusals -----------------------------------------------------------------------------

    def _refuse(self, refusal: HeadRefused) -> None:
        """Answer `refusal` after the requests before it, then close; ignore all further input."""
        self._refused = True
        body, self._body = self._body, None
        if body is not None:
            body.fail(ConnectionResetError("the client sent a malformed body"))
            waiting = self._queue[-1] if self._queue else None
            if not (isinstance(waiting, FastRequest) and waiting.body is body):
                # The request is being answered (its upload is now cut); no answer can follow
                # a response that may have started.
                self._enqueue(_CLOSE)
                return
            self._queue.pop()  # not started yet: it is answered by the refusal instead
        if self._bridging and self.bridge is not None:
            self.bridge.fail_body()  # aiohttp is reading this body: its request fails (400)
        elif self._bridging and self._rechunk:
            # Not handed over yet: a chunk size aiohttp cannot parse, in the same bytes as the
            # head, makes it refuse the request as it refuses its own parser errors (400).
            self._send_bridge(_BAD_CHUNK)
        elif self.bridge is not None:
            self.bridge.queue_refusal(refusal)
        elif self._to_bridge is not None:
            self._late_refusal = refusal
        else:
            self._enqueue(refusal)

    def _answer_refusal(self, refusal: HeadRefused) -> None:
        if refusal is _CLOSE:
            self.close()
            return
        request_id = self.front.guard.rejected(refusal.status, refusal.reason, self.peer)
        if self.transport is not None:
            self.transport.write(raw_answer(refusal.status, request_id))
        self.close()

    # -- timers: one pending handle per connection, however many requests ---------------------

    def _arm(self, kind: str, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        self._deadline, self._deadline_kind = deadline, kind
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._fired)

    def _fired(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline, self._fired)
            return
        kind, self._deadline, self._deadline_kind = self._deadline_kind, None, ""
        if self.transport is None:
            return
        if not self.idle or self._in_body:  # a request is being answered, or its body arriving
            if kind == "head" and self._awaiting_head:  # ...and the next head is due after it
                self._arm(kind, self.front.guard.head_timeout)
            return
        if kind == "head" and self._head_bytes:
            self.front.guard.conditions.note("request_head_timeout", client_ip=self.peer)
            self.transport.write(raw_answer(408))
            self._refused = True  # closed gently: a client still sending must get the 408
        self.close()

    # -- writing (the hot path's side; aiohttp writes through BridgeTransport) -----------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)

    async def drain(self, within: float) -> None:
        """Until the client has read enough of what was written; ConnectionResetError if it
        reads nothing for `within` seconds (a client that stops reading would otherwise hold
        the upstream connection as long as it likes)."""
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        if self._writing_paused:
            if self._drain is None:
                self._drain = self.loop.create_future()
            timer = self.loop.call_later(within, _stalled, self._drain, within)
            try:
                await self._drain
            finally:
                timer.cancel()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.bridge is not None:
            self.bridge.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self.bridge is not None:
            self.bridge.resume_writing()

    def _pause_body(self) -> None:
        self.pause("body")

    def _resume_body(self) -> None:
        self.resume("body")


def _stalled(drain: asyncio.Future[None], within: float) -> None:
    if not drain.done():
        drain.set_exception(ClientStalled(f"the client read nothing for {within:g} s"))


_BAD_CHUNK: Final = b"not-a-chunk-size\r\n"
_CLOSE: Final = HeadRefused(400, "body_broken")  # queue item: close once the turn comes
