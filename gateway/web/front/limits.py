"""The limits every client connection is held to before a request reaches the gateway
(docs/security.md: the gateway protects itself before any sign-in), and the bookkeeping they
need: connections counted per process and per client IP, answers the front writes itself, and
conditions an attacker can repeat logged once, not once per connection.
"""

from __future__ import annotations

import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

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

REASONS: Final[dict[int, str]] = {
    400: "Bad Request",
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
TEXTS: Final[dict[int, str]] = {
    400: "The request could not be understood.",
    408: "The request took too long to arrive.",
    429: "Too many connections from your address.",
    431: "The request head is too large.",
    501: "The gateway accepts request bodies without a transfer coding, or chunked only.",
    503: "The gateway is at its connection limit. Try again in a moment.",
    505: "The gateway speaks HTTP/1.1.",
}


def raw_answer(status: int, request_id: str | None = None) -> bytes:
    """A complete, closing HTTP/1.1 answer written straight to the socket."""
    body = (TEXTS[status] + "\n").encode()
    lines = [
        f"HTTP/1.1 {status} {REASONS[status]}",
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


def parser_status(exc: BaseException | None) -> tuple[int, str]:
    if isinstance(exc, HeadRefused):
        return exc.status, exc.reason
    if isinstance(exc, LineTooLong):
        return 431, "line_too_long"
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc.message):
        return 431, "too_many_headers"
    if exc is None:
        return 400, "bad_request"
    return 400, "parser:" + type(exc).__name__
