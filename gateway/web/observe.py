"""The outermost middleware: request id, client IP, the snapshot for this request, and on the way
out the request id header, the audit record and the metrics. Every request passes here, whatever
answers it."""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.context import CONTEXT_KEY, RequestContext
from gateway.policy import decide
from gateway.policy.snapshot import Snapshot
from gateway.services.store import StoreUnavailable
from gateway.web.client_ip import resolve_client
from gateway.web.errors import error_response
from gateway.web.request_ids import new_request_id
from gateway.web.resources import SERVICES, Services

log = structlog.get_logger("gateway.request")


@web.middleware
async def observe(request: web.Request, handler) -> web.StreamResponse:  # type: ignore[no-untyped-def]
    services = request.app[SERVICES]
    ctx = new_context(services.holder.current, request.remote, request.headers, request.secure)
    request[CONTEXT_KEY] = ctx
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers["X-Gateway-Request-Id"] = ctx.request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers["X-Gateway-Request-Id"] = ctx.request_id
        raise
    except StoreUnavailable as exc:
        # Sessions, bans or 2FA state cannot be checked: refuse (fail closed), never guess.
        # The pools reconnect by themselves; readyz reports it meanwhile.
        log.warning("store_unavailable", path=ctx.path, error=str(exc))
        ctx.decision = decide.deny("not_ready", "state or session store unreachable")
        status = 503
        return error_response(
            request,
            "not_ready",
            surface=ctx.surface,
            request_id=ctx.request_id,
            detail="Sign-in is paused for a moment: the gateway cannot reach its session store. "
            "Try again shortly.",
            headers={"Retry-After": "5", "X-Gateway-Request-Id": ctx.request_id},
        )
    except Exception:
        log.exception("unhandled_error", path=ctx.path)
        ctx.decision = ctx.decision or decide.deny("internal_error", "unhandled error")
        status = 500
        return _internal_error(request, ctx)
    finally:
        record_request(
            services,
            ctx,
            status,
            ctx.method or request.method,
            ctx.path if ctx.path is not None else _raw_path(request, ctx),
        )


def new_context(
    snapshot: Snapshot,
    peer: str | None,
    headers: CIMultiDictProxy[str],
    tls: bool,
    *,
    bind: bool = True,
) -> RequestContext:
    """A request's context: its id, its client (step 1), the snapshot it is decided on.
    `bind`: also bind the id and client IP to the log context of the running task (the
    front binds them later, in the task that serves the request)."""
    client = resolve_client(
        peer, headers, snapshot.trusted_proxies, snapshot.config.client_ip_header
    )
    ctx = RequestContext(
        request_id=new_request_id(),
        started=time.perf_counter(),
        snapshot=snapshot,
        client_ip=client.text,
        client_addr=client.parsed,
        secure=tls or client.proto == "https",
    )
    if bind:
        bind_log_context(ctx)
    return ctx


def bind_log_context(ctx: RequestContext) -> None:
    # Overwrites the previous request's values on a keep-alive connection; nothing else is
    # bound per request, so no clear (which walks every context variable) is needed.
    structlog.contextvars.bind_contextvars(request_id=ctx.request_id, client_ip=ctx.client_ip)


def record_request(
    services: Services, ctx: RequestContext, status: int, method: str, path: str
) -> None:
    """The request's audit record and metrics, whoever answered it (aiohttp or the front)."""
    elapsed = time.perf_counter() - ctx.started
    decision = ctx.decision.label if ctx.decision else ("allow" if status < 400 else "error")
    app = ctx.app.name if ctx.app else None
    services.audit.record(
        "request",
        request_id=ctx.request_id,
        client_ip=ctx.client_ip,
        surface=ctx.surface,
        app=app,
        principal=ctx.principal,
        auth=ctx.auth,
        decision=decision,
        method=method,
        path=path,
        status=status,
        duration_ms=round(elapsed * 1000, 2),
        reasons=ctx.reasons.copy() or None,  # the record is rendered later (audit.record)
        monitor=ctx.monitored.copy() or None,
        mode=ctx.mode,
    )
    services.metrics.observe_request(
        ctx.surface or "gateway", app or "", decision, elapsed, ctx.mode
    )


def _raw_path(request: web.Request, ctx: RequestContext) -> str:
    """The path as received, for a request whose path could not be normalised."""
    return (ctx.raw_path or request.raw_path.split("?", 1)[0])[:512]


def internal_error_page(request_id: str) -> str:
    from gateway.web.html import message_page

    return message_page(
        "Something went wrong",
        "The gateway could not handle this request.",
        request_id,
        links=[("/", "Go to the start page")],
    )


def _internal_error(request: web.Request, ctx: RequestContext) -> web.Response:
    response = web.Response(
        status=500, text=internal_error_page(ctx.request_id), content_type="text/html"
    )
    response.headers["X-Gateway-Request-Id"] = ctx.request_id
    return response
