"""The listening socket: the gateway's own HTTP/1.1 server (gateway.web.front) in front of
aiohttp's application. The limits every connection is held to are in gateway.web.front.limits
and gateway.web.front.connection; which requests aiohttp answers, in gateway.web.front.bridge.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

from aiohttp import web

from gateway.policy.ipset import CompiledIPSet
from gateway.web.front.connection import FrontProtocol
from gateway.web.front.limits import HEAD_TIMEOUT, ConnectionGuard
from gateway.web.front.site import Front

__all__ = ["ConnectionGuard", "GatewaySite", "ListenError", "guard_for", "start_gateway"]

SHUTDOWN_TIMEOUT = 10.0


# -- the site -----------------------------------------------------------------------------------


class ListenError(Exception):
    """The address cannot be listened on; the message is one sentence for the operator."""


class GatewaySite(web.TCPSite):
    """A TCP site whose connections are the front's (gateway.web.front.connection)."""

    __slots__ = ("_front", "_guard")

    def __init__(self, runner: web.AppRunner, *args: Any, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(runner, *args, **kwargs)
        self._guard = guard
        self._front: Front | None = None

    async def start(self) -> None:
        self._runner._reg_site(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        front = self._front = Front(self._runner.app, server, self._guard)

        def factory() -> FrontProtocol:
            return FrontProtocol(front)

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

    async def stop(self) -> None:
        await super().stop()  # no new connections
        if self._front is not None:
            await self._front.shutdown(SHUTDOWN_TIMEOUT)


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
