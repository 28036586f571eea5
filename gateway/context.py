"""One typed context per request: what the pipeline learnt, for the response and the audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from gateway.policy.decide import Decision
from gateway.policy.snapshot import AppRoute, Snapshot
from gateway.web.hosts import Host

CONTEXT_KEY: Final = web.RequestKey("gateway.context", "RequestContext")


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float  # perf_counter()
    snapshot: Snapshot  # read once at the start; the whole request uses only this one
    client_ip: str | None
    client_addr: tuple[int, int] | None  # (version, integer) for allowlist lookups
    secure: bool  # https as seen by the client (TLS here, or a trusted TLS-terminating proxy)
    path: str | None = None  # the normalised path: matched, authorised and forwarded
    host: Host | None = None  # the canonical Host: matched and forwarded
    surface: str | None = None
    app: AppRoute | None = None
    principal: str | None = None
    auth: str | None = None
    role: str | None = None
    email: str | None = None
    decision: Decision | None = None
    mode: str = "full-proxy"  # or "forward-auth": another proxy asked for the decision
    method: str | None = None  # forward-auth: the described request's method (audit)
    raw_path: str | None = None  # forward-auth: the described path as received (audit)
    monitored: list[str] = field(default_factory=list)  # would-be denials in monitor mode
    reasons: list[str] = field(default_factory=list)


def context_of(request: web.Request) -> RequestContext:
    return request[CONTEXT_KEY]  # type: ignore[no-any-return]
