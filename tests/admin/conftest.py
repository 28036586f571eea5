"""A real gateway for the console tests: alice is a gateway admin, bob is not (quick hashes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.factories import RunningGateway, client, echo_app, gateway_files, running_gateway, serve
from tests.web.test_signin import quick_users

PREFIX = "/_gateway"
ADMIN = f"{PREFIX}/admin/"


def console_files(tmp_path, *, enforce: str = "none", policy: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    security: dict[str, Any] = {"two_factor": {"enforce": enforce, "issuer": "Acme Mail"}}
    security.update(policy or {})
    return gateway_files(tmp_path, users=quick_users(), security=security)


@pytest.fixture
async def gw(tmp_path) -> AsyncIterator[RunningGateway]:
    async with serve(echo_app()) as upstream:
        files = console_files(tmp_path)
        files.config["apps"]["console"]["upstream"] = upstream
        files.write()
        async with running_gateway(files) as gateway:
            yield gateway


@pytest.fixture
async def http():  # type: ignore[no-untyped-def]
    async with client() as session:
        yield session
