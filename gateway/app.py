"""The only wiring module: resources, middleware order, the fixed {prefix} pages, one catch-all.

A request goes: observe (request id, client IP, snapshot; audit and metrics on the way out)
-> session middleware (aiohttp-session; loads lazily, saves only on the gateway's own pages)
-> gate.entry (normalise, match, allowlist, authenticate, authorize) -> proxy or a gateway page.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp_session import session_middleware

from gateway import admin
from gateway.policy.diff import diff as policy_diff
from gateway.policy.snapshot import Snapshot
from gateway.policy.source import LoadResult, PolicyHolder, poll, watch
from gateway.services.audit import AuditLog
from gateway.services.geoip import GeoIp
from gateway.services.metrics import Metrics
from gateway.services.notify import runtime as notify_runtime
from gateway.services.readiness import two_factor_warning
from gateway.services.removed_users import end_sessions_of_removed_users
from gateway.services.secret_key import load_secret_key
from gateway.services.security import SecurityOps
from gateway.services.session_store import open_session_store
from gateway.services.signing import REFRESH_INTERVAL, KeyRing
from gateway.services.store import open_store
from gateway.web import auth_views, forward_auth, ops
from gateway.web.csrf import Csrf
from gateway.web.gate import entry
from gateway.web.live_sockets import REVALIDATE_EVERY, LiveSockets
from gateway.web.observe import observe
from gateway.web.pages import Pages
from gateway.web.proxy import Forwarder
from gateway.web.resources import SERVICES, Services
from gateway.web.sessions import StoreSessionStorage
from gateway.web.upstream import UpstreamClient

log = structlog.get_logger("gateway")

SESSION_PURGE_INTERVAL = 300.0


def build_pages() -> Pages:
    pages = Pages()
    pages.add("healthz", ops.healthz, "open", ("GET",))
    pages.add("readyz", ops.readyz, "open", ("GET",))
    pages.add("jwks.json", ops.jwks, "open", ("GET",))
    pages.add("metrics", ops.metrics, "ops", ("GET",))
    auth_views.register(pages)
    pages.add("authz/auth-request", forward_auth.auth_request, "proxy", forward_auth.METHODS)
    pages.add("authz/forward-auth", forward_auth.forward_auth, "proxy", forward_auth.METHODS)
    admin.register(pages)  # {prefix}/admin/...: the admin console (gateway/admin/)
    return pages


def build_app(holder: PolicyHolder, *, watch_files: bool = True) -> web.Application:
    """The application for one process. `holder` carries the first, already valid snapshot."""
    storage = StoreSessionStorage(lambda: app[SERVICES].sessions)
    app = web.Application(
        middlewares=[
            observe,  # 1. context, request id, audit + metrics for every request
            session_middleware(storage),  # 2. sessions for the gateway's own pages and the gate
        ],
    )
    app.cleanup_ctx.append(_services(holder, watch_files))
    app.on_response_prepare.append(name_server)
    app.router.add_route("*", "/{path:.*}", entry)
    return app


SERVER_NAME = "gateway"


async def name_server(_request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp sends `Server: Python/3.x aiohttp/3.x` (set before this hook runs): versions help
    only attackers. Another Server header (a backend's own) is passed through as it is."""
    if response.headers.get("Server") == SERVER_SOFTWARE:
        response.headers["Server"] = SERVER_NAME


def _services(holder: PolicyHolder, watch_files: bool):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        snapshot = holder.current
        secret_key = load_secret_key(snapshot.paths.secret_key_file)
        store = await open_store(snapshot.config.state, snapshot.paths.config_dir)
        sessions = open_session_store(snapshot.config.sessions, store, snapshot.paths.config_dir)
        audit = AuditLog(
            snapshot.paths.audit_file,
            secret_key.derive("audit-chain"),
            head_sink=lambda chain, seq, digest: store.audit_head_put(
                chain, seq, digest, time.time()
            ),
        )
        await audit.start()
        keyring = KeyRing(store, secret_key)
        await keyring.load_or_create()
        metrics = Metrics()
        security = SecurityOps(
            store,
            audit,
            lambda: holder.current,
            geoip=GeoIp(geoip_database(snapshot)),
            metrics=metrics,
        )
        services = Services(
            holder=holder,
            secret_key=secret_key,
            metrics=metrics,
            audit=audit,
            store=store,
            sessions=sessions,
            keyring=keyring,
            forwarder=Forwarder(UpstreamClient(), Forwarder.new_ws_session(), LiveSockets()),
            csrf=Csrf(secret_key.derive("csrf")),
            pages=build_pages(),
            started_at=time.time(),
            security=security,
        )
        app[SERVICES] = services
        holder.on_reload(_reload_listener(services))
        services.metrics.policy_generation.set(snapshot.generation)
        tasks = [
            asyncio.create_task(_every(REFRESH_INTERVAL, keyring.refresh)),
            asyncio.create_task(
                _every(SESSION_PURGE_INTERVAL, lambda: sessions.purge_expired(time.time()))
            ),
            asyncio.create_task(
                _every(
                    REVALIDATE_EVERY,
                    lambda: services.forwarder.sockets.revalidate(
                        sessions, holder.current.config.sessions.idle_timeout
                    ),
                )
            ),
            asyncio.create_task(_every(1.0, services.metrics.flush_periodically)),
        ]
        tasks += notify_runtime.start(services)  # outbox sender, system messages, retention
        await security.start()
        if watch_files:
            tasks.append(asyncio.create_task(watch(holder)))
            tasks.append(asyncio.create_task(poll(holder)))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(holder.reload()))
        audit.record(
            "gateway.started",
            flush=True,
            policy_generation=snapshot.generation,
            fingerprint=snapshot.fingerprint[:16],
        )
        await _warn_two_factor(services, snapshot)
        settle_heap()
        services.ready = True
        try:
            yield
        finally:
            services.ready = False
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.forwarder.close()
            await security.close()
            await audit.close()
            await sessions.close()
            await store.close()

    return ctx


def settle_heap() -> None:
    """Move the long-lived objects (the policy snapshot: up to 100,000s of allowlist entries)
    out of the garbage collector's sight.

    Otherwise every full collection walks them all, which showed as pauses of hundreds of
    milliseconds in the benchmark's p99. Called after start-up and after each reload: unfreeze
    first, so the previous snapshot, now garbage, can be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    # A request allocates a few hundred short-lived objects; collecting the young generation
    # every 700 allocations (the default) cost ~18 us per request in the benchmark.
    gc.set_threshold(10_000, 20, 20)


async def _every(seconds: float, job) -> None:  # type: ignore[no-untyped-def]
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:
            log.exception("periodic_job_failed", job=getattr(job, "__qualname__", str(job)))


# Settings read once at start: a reload that changes them logs that a restart is needed.
RESTART_KEYS = (
    "listen",
    "tls",
    "state",
    "sessions.store",
    "sessions.password_file",
    "sessions.ca_file",
    "sessions.key_prefix",
)


def _setting(snapshot: Snapshot, dotted: str) -> object:
    value: object = snapshot.config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _reload_listener(services: Services):  # type: ignore[no-untyped-def]
    async def on_reload(result: LoadResult, previous: Snapshot) -> None:
        audit = services.audit
        if result.snapshot is None:
            errors = [str(p) for p in result.report.errors]
            services.metrics.reloads.labels("failed").inc()
            log.error("policy_rejected", errors=errors, kept_generation=previous.generation)
            audit.record(
                "policy.rejected",
                flush=True,
                decision=None,
                errors=errors,
                files=list(result.files),
                kept_generation=previous.generation,
            )
            await notify_runtime.after_reload(services, previous, None, None, list(result.files))
            return
        services.metrics.reloads.labels("ok").inc()
        new = result.snapshot
        if new.fingerprint == previous.fingerprint:
            # e.g. a rejected file put back as it was: the system message clears
            await notify_runtime.after_reload(services, previous, None, None, [])
            return
        settle_heap()
        await end_sessions_of_removed_users(services.sessions, audit, previous, new)
        services.forwarder.sockets.recheck(new)
        services.metrics.policy_generation.set(new.generation)
        services.security.geoip.configure(geoip_database(new))
        for warning in new.warnings:
            log.warning("policy_warning", warning=warning)
        restart = [k for k in RESTART_KEYS if _setting(new, k) != _setting(previous, k)]
        if restart:
            log.warning(
                "restart_required",
                keys=restart,
                hint="these settings take effect only after a restart; "
                "until then the gateway keeps its address, state store and session store",
            )
        await _warn_two_factor(services, new)
        log.info("policy_reloaded", generation=new.generation, files=list(result.files))
        changes = policy_diff(previous, new)
        audit.record(
            "policy.reloaded",
            flush=True,
            generation=new.generation,
            fingerprint=new.fingerprint[:16],
            files=list(result.files),
            warnings=list(new.warnings) or None,
            changes=changes.record or None,
        )
        await notify_runtime.after_reload(services, previous, new, changes, list(result.files))

    return on_reload


async def _warn_two_factor(services: Services, snapshot: Snapshot) -> None:
    try:
        warning = await two_factor_warning(snapshot, services.store)
    except Exception:
        log.exception("two_factor_check_failed")
        return
    if warning:
        log.warning("two_factor_no_admin_enrolled", warning=warning)


def geoip_database(snapshot: Snapshot) -> Path | None:
    """`geoip.database`, relative to the config file's folder."""
    database = snapshot.config.geoip.database
    return snapshot.paths.config_dir / database if database else None


def initial_holder(config_file: Path, result: LoadResult) -> PolicyHolder:
    assert result.snapshot is not None
    holder = PolicyHolder(config_file, result.snapshot)
    holder.last_result = result
    return holder
