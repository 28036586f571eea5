"""The listening socket and every connection on it, before any request reaches the app
(docs/security.md: the gateway protects itself before any sign-in).

aiohttp's server, with these limits on each connection (GuardedRequestHandler):

- **Head timeout.** A connection whose request head is not complete within HEAD_TIMEOUT (10 s)
  of its first byte (or of the connection, for the first request) is closed: 408 if part of a
  head came, silently if nothing did. Idle keep-alive between requests is aiohttp's
  keepalive_timeout; a request being served is never cut.
- **Head size.** 8 KiB per request line, header name or header value (aiohttp's parser limits)
  and 64 KiB per head in all (counted here, since the parser has no total): 431 beyond. The
  bytes of a head are counted until it is complete, so a client that trickles headers cannot
  grow the parser's buffers past that.
- **Connections per client IP** (CONNECTIONS_PER_IP; the TCP peer, trusted proxies exempt since
  one proxy carries many clients; IPv6 per /64, which one machine usually holds whole, as the
  sign-in regulation counts it): a connection beyond it is answered 429 and closed.
- **File descriptors.** At MAX share of the process's descriptor limit new connections are
  answered 503 and closed, so the open ones keep being served and the upstream connections,
  state store and audit file still get descriptors. accept() itself never hits EMFILE first.
- **Parser errors** are answered by the gateway (400, 431, or 505 for a request line that is not
  HTTP/1.x), with X-Gateway-Request-Id, audited as a `request` record, and logged without a byte
  of the request: aiohttp's own error page and log line quote the offending bytes, which carried
  API keys, passwords and cookies into stderr.

Conditions an attacker can repeat (refused connections, oversized heads, timeouts, parser
errors) are logged once when they start and once with a count when they have been quiet for a
minute, never once per connection (ConditionLog).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway.policy.ipset import CompiledIPSet, parse_client_ip
from gateway.services.regulation import ip_subject

log = structlog.get_logger("gateway.listener")

HEAD_TIMEOUT: Final = 10.0
MAX_HEAD: Final = 64 * 1024
MAX_LINE: Final = 8 * 1024
MAX_HEADERS: Final = 128  # count; beyond: 431 like a head that is too large
CONNECTIONS_PER_IP: Final = 256
KEEPALIVE_TIMEOUT: Final = 75.0
QUIET_AFTER: Final = 60.0
LINGER: Final = 2.0  # seconds a refused client may go on sending after our answer

_REASONS: Final[dict[int, str]] = {
    400: "Bad Request",
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TEXTS: Final[dict[int, str]] = {
    400: "The request could not be understood.",
    408: "The request took too long to arrive.",
    429: "Too many connections from your address.",
    431: "The request head is too large.",
    503: "The gateway is at its connection limit. Try again in a moment.",
    505: "The gateway speaks HTTP/1.1.",
}


def raw_answer(status: int, request_id: str | None = None) -> bytes:
    """A complete, closing HTTP/1.1 answer written straight to the socket."""
    body = (_TEXTS[status] + "\n").encode()
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Server: gateway",
    ]
    if request_id:
        lines.append(f"X-Gateway-Request-Id: {request_id}")
    if status in (429, 503):
        lines.append("Retry-After: 1")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class ConditionLog:
    """One log line when a condition starts; one more, with a count, after it has been quiet
    for QUIET_AFTER seconds (checked when the next occurrence or the sweep comes)."""

    clock: Callable[[], float] = time.monotonic
    _active: dict[str, list[float | int]] = field(default_factory=dict)  # name -> [last, count]

    def note(self, condition: str, **fields: Any) -> None:
        now = self.clock()
        entry = self._active.get(condition)
        if entry is not None and now - entry[0] < QUIET_AFTER:
            entry[0], entry[1] = now, int(entry[1]) + 1
            return
        if entry is not None:
            self._ended(condition, int(entry[1]))
        self._active[condition] = [now, 1]
        log.warning(condition, **fields)

    def sweep(self) -> None:
        now = self.clock()
        for condition, (last, count) in list(self._active.items()):
            if now - last >= QUIET_AFTER:
                del self._active[condition]
                self._ended(condition, int(count))

    @staticmethod
    def _ended(condition: str, count: int) -> None:
        log.warning(f"{condition}_ended", occurrences=count)


def descriptor_budget() -> int:
    """How many client connections the process may hold: the soft descriptor limit is raised
    to the hard one, then half of it (less a reserve) goes to clients, the rest to upstream
    connections, the state store, the audit file and the listening sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return max(16, (soft - 64) // 2)


class ConnectionGuard:
    """Counts open connections, in all and per client IP; shared by the handlers of a process."""

    def __init__(
        self,
        trusted: Callable[[], CompiledIPSet],
        audit: Callable[[], Any],
        *,
        max_connections: int | None = None,
        per_ip: int = CONNECTIONS_PER_IP,
        head_timeout: float = HEAD_TIMEOUT,
    ) -> None:
        self._trusted = trusted
        self.audit = audit  # -> (AuditLog, Metrics) once the app has started, else None
        self.max_connections = max_connections or descriptor_budget()
        self.per_ip = per_ip
        self.head_timeout = head_timeout
        self.open = 0
        self._by_ip: dict[str, int] = {}
        self.conditions = ConditionLog()
        self._at_limit = False

    def admit(self, ip: str | None) -> int | None:
        """None to admit (and count) the connection, else the status to refuse it with."""
        self.conditions.sweep()
        if self.open >= self.max_connections:
            if not self._at_limit:
                self._at_limit = True
                log.error(
                    "connection_limit_reached",
                    open=self.open,
                    limit=self.max_connections,
                    hint="new connections are refused (503) until some close",
                )
            return 503
        if self._at_limit and self.open < self.max_connections * 0.9:
            self._at_limit = False
            log.warning("connection_limit_cleared", open=self.open, limit=self.max_connections)
        if ip is not None:
            key = ip_subject(ip)
            count = self._by_ip.get(key, 0)
            if count >= self.per_ip and not self._is_trusted(ip):
                self.conditions.note("connections_per_ip_exceeded", client_ip=ip, limit=self.per_ip)
                return 429
            self._by_ip[key] = count + 1
        self.open += 1
        return None

    def release(self, ip: str | None) -> None:
        self.open -= 1
        if ip is not None:
            key = ip_subject(ip)
            count = self._by_ip.get(key, 1) - 1
            if count > 0:
                self._by_ip[key] = count
            else:
                self._by_ip.pop(key, None)

    def _is_trusted(self, ip: str) -> bool:
        trusted = self._trusted()
        parsed = parse_client_ip(ip)
        return parsed is not None and not trusted.empty and trusted.contains(parsed[1], parsed[0])

    def rejected(self, status: int, reason: str, ip: str | None) -> str:
        """Audit and (once per condition) log a request the listener answered itself.
        Returns the request id. The reason is a class of error, never request bytes."""
        request_id = str(uuid.uuid4())
        self.conditions.note("request_head_rejected", status=status, reason=reason, client_ip=ip)
        services = self.audit()
        if services is not None:
            audit, metrics = services
            decision = "deny:bad_request"
            audit.record(
                "request",
                request_id=request_id,
                client_ip=ip,
                surface=None,
                app=None,
                principal=None,
                auth=None,
                decision=decision,
                method=None,
                path=None,
                status=status,
                duration_ms=0.0,
                reasons=[reason],
            )
            metrics.observe_request("gateway", "", decision, 0.0)
        return request_id


class HeadRefused(Exception):
    """A head the listener refuses after the parser accepted it (size in all, HTTP version)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _parser_status(exc: BaseException | None) -> tuple[int, str]:
    if isinstance(exc, HeadRefused):
        return exc.status, exc.reason
    if isinstance(exc, LineTooLong):
        return 431, "line_too_long"
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message):
        return 431, "too_many_headers"
    if exc is None:
        return 400, "bad_request"
    return 400, "parser:" + type(exc).__name__


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with the limits of the module docstring."""

    __slots__ = (
        "_admitted",
        "_guard",
        "_head_bytes",
        "_head_deadline",
        "_head_timer",
        "_last_payload",
        "_peer",
        "_refused",
    )

    def __init__(self, manager: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._peer: str | None = None
        self._admitted = False
        self._refused = False
        self._head_bytes = 0
        self._head_deadline: float | None = None  # loop time by which the pending head must be in
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_payload: Any = None

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) and peer else None
        refusal = self._guard.admit(self._peer)
        if refusal is not None:
            transport.write(raw_answer(refusal))  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self.transport = _Lingering(self.transport, self)  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._guard.release(self._peer)
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    # -- heads --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the refusal is queued; the connection closes after it
        if self._upgraded or self._force_close or self._close or not self._admitted:
            super().data_received(data)
            return
        last = self._last_payload
        awaiting_head = last is None or last.is_eof()
        if awaiting_head:
            self._head_bytes += len(data)
            if self._head_deadline is None:
                self._arm_head_timer()
        before = self._request_count
        super().data_received(data)
        completed = self._request_count - before
        if completed:
            new = list(self._messages)[-completed:] if self._messages else []
            found = self._check_heads(new)
            self._head_bytes = 0
            self._disarm_head_timer()
            if new:
                self._last_payload = new[-1][1]
            if found is not None:
                index, refusal = found
                self._refuse(refusal, drop=len(new) - index)
        elif awaiting_head and self._head_bytes > MAX_HEAD:
            self._refuse(HeadRefused(431, "head_too_large"), drop=0)

    def _check_heads(self, new: list[Any]) -> tuple[int, HeadRefused] | None:
        """The first of the new heads the listener refuses: (its index, why)."""
        for index, (message, _payload) in enumerate(new):
            version = getattr(message, "version", None)
            if version is None:  # a parser error, queued by aiohttp: handle_error answers it
                # Its traceback holds the frame that holds the whole received chunk (up to
                # 256 KiB); and the parser, now in an error state, would queue one more error
                # (and pin one more chunk) for every read until the answer goes out.
                message.exc.__traceback__ = None
                self._refused = True
                return None
            if version.major != 1:
                return index, HeadRefused(505, "http_version")
            if self._head_bytes > MAX_HEAD and _head_size(message) > MAX_HEAD:
                return index, HeadRefused(431, "head_too_large")
        return None

    def _refuse(self, refusal: HeadRefused, *, drop: int) -> None:
        """Queue the refusal in place of the last `drop` heads, the way aiohttp queues its
        parser's errors: answered by handle_error after the requests before it, then closed.
        Nothing of the refused head reaches the app, and the rest of the input is ignored."""
        self._refused = True
        for _ in range(min(drop, len(self._messages))):
            self._messages.pop()
        self._messages.append((_ErrInfo(refusal.status, refusal, refusal.reason), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # The head deadline is a number, not a timer per request: scheduling and cancelling an
    # asyncio timer for every head of a keep-alive connection cost a few us per request. One
    # timer per connection at most is pending; when it fires before the current deadline (it
    # was set for an earlier head) it is set again for the rest, so a head still has exactly
    # `head_timeout` seconds.

    def _arm_head_timer(self) -> None:
        deadline = self._loop.time() + self._guard.head_timeout
        self._head_deadline = deadline
        if self._head_timer is None:
            self._head_timer = self._loop.call_at(deadline, self._head_timer_fired)

    def _disarm_head_timer(self) -> None:
        self._head_deadline = None  # a pending timer finds no deadline and does nothing

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:
            self._head_timer = self._loop.call_at(deadline, self._head_timer_fired)
            return
        self._head_deadline = None
        self._head_timeout()

    def _head_timeout(self) -> None:
        if self._force_close or self._upgraded or self._request_in_progress or self._messages:
            return  # a request is being served: never cut
        last = self._last_payload
        if last is not None and not last.is_eof():
            return  # a body is still arriving (aiohttp's own timeouts apply)
        if self._head_bytes:
            self._guard.conditions.note("request_head_timeout", client_ip=self._peer)
            if self.transport is not None:
                self.transport.write(raw_answer(408))  # type: ignore[attr-defined]
        self.force_close()

    # -- parser errors ------------------------------------------------------------------------

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Our answer for what aiohttp's parser refused; `message` (request bytes) is dropped."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        if status == 400 or isinstance(exc, HeadRefused):
            status, reason = _parser_status(exc)
        else:
            reason = "internal_error"
            log.error("unhandled_error", error=type(exc).__name__ if exc else None)
        request_id = self._guard.rejected(status, reason, self._peer)
        response = web.Response(
            status=status,
            text=_TEXTS.get(status, "The gateway could not handle this request.") + "\n",
            headers={"X-Gateway-Request-Id": request_id, "Server": "gateway"},
        )
        response.force_close()
        return response


class _Lingering:
    """The connection's transport, closed gently after a refused head.

    A client refused mid-head (431) is usually still sending. Closing the socket with its bytes
    unread makes the kernel send a reset, and the client may lose our answer before reading it.
    So after a refusal, close() sends FIN only, goes on reading (and discarding: the handler is
    `_refused`) and closes for good after LINGER seconds or when the client closes.
    """

    __slots__ = ("_handler", "_transport")

    def __init__(self, transport: asyncio.Transport, handler: GuardedRequestHandler) -> None:
        self._transport = transport
        self._handler = handler

    def close(self) -> None:
        transport = self._transport
        if not self._handler._refused or transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER, transport.close)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _head_size(message: Any) -> int:
    line = len(message.method) + len(message.path) + 11  # "M P HTTP/1.1\r\n"
    return line + sum(len(name) + len(value) + 4 for name, value in message.raw_headers) + 2


# -- the site -----------------------------------------------------------------------------------


class ListenError(Exception):
    """The address cannot be listened on; the message is one sentence for the operator."""


class GatewaySite(web.TCPSite):
    """A TCP site whose connections are GuardedRequestHandlers."""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.AppRunner, *args: Any, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(runner, *args, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        factory = functools.partial(
            GuardedRequestHandler,
            server,
            guard=self._guard,
            loop=loop,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            access_log=None,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            max_headers=MAX_HEADERS,
        )
        try:
            self._server = await loop.create_server(
                factory,
                self._host,
                self._port,
                ssl=self._ssl_context,
                backlog=self._backlog,
                reuse_address=self._reuse_address,
                reuse_port=self._reuse_port,
                # a TLS handshake is part of the head: same timeout
                ssl_handshake_timeout=HEAD_TIMEOUT if self._ssl_context else None,
            )
        except OSError as exc:
            raise ListenError(_listen_error(exc, self._host, self._port)) from None
        self._bound_port = self._server.sockets[0].getsockname()[1]


def _listen_error(exc: OSError, host: str | None, port: int) -> str:
    where = f"{host or '0.0.0.0'}:{port}"  # noqa: S104 - text for people
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is already in use by another program; "
            "stop it, or choose another port (listen.port in gateway.yaml, or --port)"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: this machine has no such address"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def guard_for(app: web.Application, **limits: Any) -> ConnectionGuard:
    """The guard of an app built by gateway.app.build_app: reads the snapshot in force.
    `limits` override ConnectionGuard's defaults (tests use short timeouts)."""
    from gateway.web.resources import SERVICES

    def trusted() -> CompiledIPSet:
        return app[SERVICES].holder.current.trusted_proxies

    def audit() -> Any:
        services = app.get(SERVICES)
        return None if services is None else (services.audit, services.metrics)

    return ConnectionGuard(trusted, audit, **limits)


async def start_gateway(
    app: web.Application,
    host: str | None,
    port: int,
    *,
    ssl_context: Any = None,
    reuse_port: bool = False,
    guard: ConnectionGuard | None = None,
) -> tuple[web.AppRunner, GatewaySite]:
    """Start `app` (its cleanup_ctx runs first) and listen; raises ListenError."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    site = GatewaySite(
        runner,
        host,
        port,
        ssl_context=ssl_context,
        reuse_port=reuse_port or None,
        guard=guard or guard_for(app),
    )
    try:
        await site.start()
    except ListenError:
        await runner.cleanup()
        raise
    return runner, site
