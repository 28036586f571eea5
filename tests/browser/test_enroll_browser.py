"""Issue "2FA": enrollment interstitial, recovery codes, and the code prompt, in a real browser.

Two-factor is required for everybody (enforce: all). Codes are computed with Debian's oathtool
from the secret the page shows, as a user typing the key into an authenticator app would.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import (
    PREFIX,
    assert_accessible,
    demo_site,
    fill_login,
    oathtool_code,
    totp_step,
    wait_for_step_after,
)
from tests.factories import PASSWORD

pytestmark = pytest.mark.browser

NOT_SIGNED_IN = re.compile(rf"{re.escape(PREFIX)}/(login|2fa/enroll|2fa/verify)(\?|$)")


async def assert_not_through(page: Page, base: str, path: str) -> None:
    """Half signed in: a page behind the gateway (or the account page) is never reached."""
    response = await page.goto(f"{base}{path}")
    assert response is not None
    await expect(page).to_have_url(NOT_SIGNED_IN)
    await expect(page.get_by_role("heading", name="Demo dashboard")).to_have_count(0)
    await expect(page.get_by_role("heading", name="Your account")).to_have_count(0)
    assert "X-Gateway-Assertion" not in await page.content()


async def test_enroll_then_sign_in_again_with_a_code(tmp_path, browser: Browser, artifacts):
    async with demo_site(tmp_path, "all") as gw:
        base = gw.url
        context = await browser.new_context(viewport={"width": 1000, "height": 900})
        page = await context.new_page()

        # -- password accepted: the enrollment interstitial --------------------------------------
        await page.goto(f"{base}/")
        await fill_login(page, "alice", PASSWORD)
        await expect(page).to_have_url(f"{base}{PREFIX}/2fa/enroll")
        await expect(
            page.get_by_role("heading", name="Set up two-factor authentication")
        ).to_be_visible()
        fields = await assert_accessible(page)
        assert [f.name for f in fields] == ["code"]

        qr = page.locator(".qr svg")  # inline in the page, not an <img> fetched elsewhere
        await expect(qr).to_have_count(1)
        await expect(qr).to_be_visible()
        box = await qr.bounding_box()
        assert box is not None and box["width"] >= 100 and box["height"] >= 100, box

        holder = page.locator("[data-totp-secret]")
        await expect(holder).to_have_count(1)
        secret = await holder.get_attribute("data-totp-secret")
        assert secret and re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
        shown = (await holder.inner_text()).replace(" ", "")
        assert shown == secret, "the key shown as text is the secret"

        link = page.locator('a[href^="otpauth://"]')
        await expect(link).to_have_count(1)
        await expect(link).to_be_visible()
        uri = urlsplit(await link.get_attribute("href") or "")
        assert uri.scheme == "otpauth" and uri.netloc == "totp"
        assert unquote(uri.path) == "/Browser Test:alice@example.com"
        params = parse_qs(uri.query)
        assert params["secret"] == [secret] and params["issuer"] == ["Browser Test"]
        await page.screenshot(path=artifacts / "enroll-interstitial.png", full_page=True)

        # -- half signed in: nothing behind the gateway, not even the account page -------------
        for path in ("/", "/some/page", f"{PREFIX}/account", f"{PREFIX}/password"):
            await assert_not_through(page, base, path)
        response = await page.goto(f"{base}{PREFIX}/2fa/enroll")
        assert response is not None and "no-store" in response.headers.get("cache-control", "")
        await expect(holder).to_have_attribute("data-totp-secret", secret)  # same key as scanned

        # -- a wrong code, then the right one ---------------------------------------------------
        wrong = "111111" if oathtool_code(secret, time.time()) == "000000" else "000000"
        await page.get_by_label("Code from the app").fill(wrong)
        await page.get_by_role("button", name="Confirm and turn on").click()
        await expect(page.get_by_role("alert")).to_contain_text("does not match")
        await expect(holder).to_have_attribute("data-totp-secret", secret)

        enrolled_at = time.time()
        first_code = oathtool_code(secret, enrolled_at)
        await page.get_by_label("Code from the app").fill(first_code)
        await page.get_by_role("button", name="Confirm and turn on").click()

        # -- recovery codes, shown once ---------------------------------------------------------
        await expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
        codes = page.locator("[data-recovery-code]")
        await expect(codes).to_have_count(10)
        values = [await codes.nth(i).get_attribute("data-recovery-code") for i in range(10)]
        assert all(values) and len(set(values)) == 10, values
        await assert_accessible(page)
        await page.screenshot(path=artifacts / "recovery-codes.png", full_page=True)
        await page.get_by_role("link", name=re.compile("continue")).click()

        # -- signed in, with both factors -------------------------------------------------------
        await expect(page).to_have_url(f"{base}/")
        await expect(page.locator("#whoami")).to_have_text("Signed in as alice")
        await expect(page.get_by_text("Assertion verified")).to_contain_text(
            "alice is admin of console (auth: password+totp)"
        )

        # -- sign out from the account page -----------------------------------------------------
        await page.goto(f"{base}{PREFIX}/account")
        await expect(page.get_by_role("heading", name="Your account")).to_be_visible()
        await expect(page.get_by_text("10 recovery codes left")).to_be_visible()
        await assert_accessible(page)
        await page.screenshot(path=artifacts / "account.png", full_page=True)
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("status")).to_have_text("You are signed out.")
        await page.go_back()  # the account page is not shown again from a cache
        await expect(page.get_by_role("heading", name="Your account")).to_have_count(0)
        await assert_not_through(page, base, "/")

        # -- sign in again: the code prompt -----------------------------------------------------
        await page.goto(f"{base}/some/page")
        await fill_login(page, "alice", PASSWORD)
        await expect(page).to_have_url(f"{base}{PREFIX}/2fa/verify")
        await expect(page.get_by_role("heading", name="Two-factor authentication")).to_be_visible()
        fields = await assert_accessible(page)
        assert [f.name for f in fields] == ["code"]
        code_field = page.get_by_label("Authentication code")
        assert await code_field.get_attribute("autocomplete") == "one-time-code"
        assert await code_field.get_attribute("inputmode") == "numeric"
        await page.screenshot(path=artifacts / "code-prompt.png", full_page=True)

        for path in ("/", f"{PREFIX}/account"):
            await assert_not_through(page, base, path)
        await page.goto(f"{base}{PREFIX}/2fa/verify")

        # The code that confirmed the enrollment is accepted only once.
        await code_field.fill(first_code)
        await page.get_by_role("button", name="Verify").click()
        await expect(page.get_by_role("alert")).to_be_visible()
        if totp_step(time.time()) <= totp_step(enrolled_at) + 1:  # still within the drift window
            await expect(page.get_by_role("alert")).to_contain_text("already used")
        await expect(page).to_have_url(f"{base}{PREFIX}/2fa/verify")

        # A fresh code, from the next 30-second step.
        fresh_at = await wait_for_step_after(totp_step(enrolled_at))
        await code_field.fill(oathtool_code(secret, fresh_at))
        await page.get_by_role("button", name="Verify").click()
        await expect(page).to_have_url(f"{base}/some/page")
        await expect(page.locator("#whoami")).to_have_text("Signed in as alice")
        await expect(page.get_by_text("Assertion verified")).to_contain_text(
            "(auth: password+totp)"
        )
        await context.close()
