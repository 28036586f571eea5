"""What the connections of one listening socket share, and their graceful end."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.web_server import Server

from gateway.web.front.limits import ConnectionGuard
from gateway.web.resources import SERVICES

if TYPE_CHECKING:
    from gateway.web.front.connection import FrontProtocol
    from gateway.web.resources import Services


class Front:
    def __init__(self, app: web.Application, server: Server, guard: ConnectionGuard) -> None:
        self.app = app
        self.server = server  # aiohttp's, for the requests the front hands over
        self.guard = guard
        self.loop = asyncio.get_running_loop()
        self.connections: set[FrontProtocol] = set()
        self.closing = False

    def services(self) -> Services | None:
        return self.app.get(SERVICES)

    async def shutdown(self, within: float) -> None:
        """Close idle connections now; let requests being answered here finish (each closes
        its connection when done), for at most `within` seconds. Connections aiohttp serves
        are its own to close (AppRunner.cleanup)."""
        self.closing = True
        deadline = self.loop.time() + within
        while True:
            for conn in list(self.connections):
                if conn.bridge is None and conn.idle:
                    conn.abort()
            busy = [c for c in self.connections if c.bridge is None]
            if not busy or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.bridge is None:
                conn.abort()
