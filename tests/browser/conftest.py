"""Browser tests: Debian's Chromium driven through Playwright's async API.

The gateway (tests.factories.running_gateway), the demo dashboard behind it and Playwright all
run in the test's own event loop. Chromium is never downloaded: the tests use /usr/bin/chromium
(scripts/system-packages.sh installs it) and FAIL, never skip, when it is missing. TOTP codes are
computed with Debian's `oathtool`, an implementation independent of the gateway's.

Screenshots go to test-artifacts/ at the repository root, under stable names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from gateway.demo.backends import dashboard_app
from tests.factories import RunningGateway, free_port, gateway_files, running_gateway

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("GATEWAY_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium phones home at start, and the closed network refuses its connections.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PREFIX = "/_gateway"
TOTP_PERIOD = 30


def _require(path: Path | str | None, what: str) -> str:
    if path is None or not Path(path).exists():
        pytest.fail(
            f"{what} is not installed (looked for {path}); the browser tests need it. "
            "Install it with scripts/system-packages.sh (apt-get install chromium oathtool). "
            "Never `playwright install`: the tests use Debian's Chromium.",
            pytrace=False,
        )
    return str(path)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = _require(CHROMIUM, "Chromium")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield instance
        finally:
            await instance.close()


@contextlib.asynccontextmanager
async def serve_on(app: web.Application, port: int, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Like tests.factories.serve, on a port chosen beforehand."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def demo_site(root: Path, enforce: str) -> AsyncIterator[RunningGateway]:
    """The gateway with the demo dashboard (which verifies the assertion) as `console`.

    The dashboard needs the gateway's JWKS URL and the gateway needs the dashboard's address, so
    the dashboard's port is picked first and the dashboard starts once the gateway runs.
    """
    dash_port = free_port()
    files = gateway_files(
        root,
        dashboard_upstream=f"http://127.0.0.1:{dash_port}",
        security={"two_factor": {"enforce": enforce, "issuer": "Browser Test"}},
    )
    async with (
        running_gateway(files) as gw,
        serve_on(dashboard_app(f"{gw.url}{PREFIX}/jwks.json"), dash_port),
    ):
        yield gw


@dataclass(frozen=True)
class Field:
    name: str
    labels: list[str]
    type: str


async def assert_accessible(page: Page) -> list[Field]:
    """A <title>, a lang attribute, and a label for every input that is not hidden, which
    Playwright's get_by_label finds and resolves to that very input."""
    assert (await page.title()).strip(), f"{page.url}: no <title>"
    lang = await page.locator("html").get_attribute("lang")
    assert lang and lang.strip(), f"{page.url}: <html> has no lang attribute"
    found: list[Field] = []
    inputs = page.locator("input:not([type=hidden]), select, textarea")
    for i in range(await inputs.count()):
        field = inputs.nth(i)
        info: dict[str, Any] = await field.evaluate(
            "e => ({name: e.name, type: e.type,"
            " labels: Array.from(e.labels || []).map(l => l.textContent.trim())})"
        )
        assert info["labels"], f"{page.url}: input {info['name']!r} has no label"
        by_label = page.get_by_label(info["labels"][0], exact=True)
        assert await by_label.count() == 1, (page.url, info)
        same = await by_label.evaluate("(e, other) => e === other", await field.element_handle())
        assert same, f"{page.url}: label {info['labels'][0]!r} finds another element"
        found.append(Field(info["name"], info["labels"], info["type"]))
    return found


def oathtool_code(secret: str, at: float) -> str:
    """The TOTP code for the time `at`, computed by Debian's oathtool (not by the gateway)."""
    exe = _require(shutil.which("oathtool"), "oathtool")
    out = subprocess.run(
        [exe, "--totp", "-b", secret, "--now", f"@{int(at)}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    code = out.stdout.strip()
    assert len(code) == 6 and code.isdigit(), out
    return code


def totp_step(at: float) -> int:
    return int(at // TOTP_PERIOD)


async def wait_for_step_after(step: int, bound: float = TOTP_PERIOD + 1) -> float:
    """Sleep until the TOTP step is past `step` (at most `bound` seconds); returns the time."""
    deadline = time.monotonic() + bound
    while totp_step(time.time()) <= step:
        assert time.monotonic() < deadline, "the TOTP step did not change in time"
        await asyncio.sleep(0.2)
    return time.time()


async def fill_login(page: Page, username: str, password: str) -> None:
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
