"""axe-core through Playwright (axe-playwright-python bundles axe.min.js): no serious or critical
violation on a page, and a screenshot of it kept in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page

_AXE = Axe()
BLOCKING = frozenset({"serious", "critical"})


async def check_page(page: Page, artifacts: Path | None = None, name: str | None = None) -> None:
    """Fails with axe's own report of each serious or critical violation."""
    results = await _AXE.run(page)
    violations = results.response.get("violations", [])
    blocking = [v for v in violations if v.get("impact") in BLOCKING]
    report = "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(node.get("target")) for node in v.get("nodes", [])[:5])
        for v in blocking
    )
    if artifacts is not None and name is not None:
        await page.screenshot(path=artifacts / f"{name}.png", full_page=True)
    assert not blocking, f"{page.url}: accessibility violations\n{report}"
