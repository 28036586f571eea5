"""The pages people see, in Chromium: one look, accessible (axe-core), usable without JavaScript.

Sign-in with the product name, enrollment and recovery codes (download, copy, print), the account
page, error pages that say who and what with a way back, and the admin console's doors: 403 for a
non-admin and for an admin half-way through 2FA, a refused CSRF token, the audit search.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.async_api import Browser, expect

from tests.browser.a11y import check_page
from tests.browser.conftest import PREFIX, demo_site, fill_login, oathtool_code
from tests.factories import PASSWORD

pytestmark = pytest.mark.browser

ADMIN = f"{PREFIX}/admin/"


async def test_sign_in_pages_errors_and_console_doors(tmp_path, browser: Browser, artifacts):
    async with demo_site(tmp_path, "admins") as gw:
        base = gw.url
        alice = await browser.new_context(viewport={"width": 1100, "height": 900})
        page = await alice.new_page()

        # The login page names the product (two_factor.issuer).
        await page.goto(f"{base}{ADMIN}")
        await expect(page.locator(".brand")).to_have_text("Browser Test")
        await expect(page).to_have_title("Sign in · Browser Test")
        await check_page(page, artifacts, "page-login")
        await fill_login(page, "alice", PASSWORD)

        # Enrollment, then the recovery codes: download, copy and print.
        await expect(page).to_have_url(f"{base}{PREFIX}/2fa/enroll")
        await check_page(page, artifacts, "page-enroll")
        secret = await page.locator("[data-totp-secret]").get_attribute("data-totp-secret")
        assert secret
        await page.get_by_label("Code from the app").fill(oathtool_code(secret, time.time()))
        await page.get_by_role("button", name="Confirm and turn on").click()
        await expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
        codes = await page.locator("[data-recovery-code]").evaluate_all(
            "els => els.map(e => e.dataset.recoveryCode)"
        )
        assert len(codes) == 10
        async with page.expect_download() as waiting:
            await page.get_by_role("link", name="Download").click()
        download = await waiting.value
        assert download.suggested_filename == "recovery-codes.txt"
        saved = (await download.path()).read_text()
        assert all(code in saved for code in codes)
        await alice.grant_permissions(["clipboard-read", "clipboard-write"])
        await page.get_by_role("button", name="Copy").click()
        await expect(page.get_by_role("button", name="Copied")).to_be_visible()
        copied = await page.evaluate("navigator.clipboard.readText()")
        assert all(code in copied for code in codes)
        await expect(page.get_by_role("button", name="Print")).to_be_visible()
        await check_page(page, artifacts, "page-recovery-codes")
        await page.emulate_media(media="print")
        await page.screenshot(path=artifacts / "page-recovery-codes-print.png", full_page=True)
        await expect(page.get_by_role("link", name=re.compile("continue"))).to_be_hidden()
        await page.emulate_media(media="screen")
        continue_ = page.get_by_role("link", name=re.compile("continue"))
        await expect(continue_).to_have_class(re.compile(r"\bbutton\b"))
        await continue_.click()

        # Signed in with 2FA: the console.
        await expect(page).to_have_url(f"{base}{ADMIN}")
        await expect(page.get_by_role("heading", name="Gateway admin")).to_be_visible()
        await check_page(page, artifacts, "admin-home")
        await page.goto(f"{base}{PREFIX}/account")
        await check_page(page, artifacts, "page-account")
        await page.get_by_role("link", name="Change your password").click()
        await check_page(page, artifacts, "page-password")
        await page.get_by_role("link", name="Back to your account").click()
        await expect(page).to_have_url(f"{base}{PREFIX}/account")
        await page.goto(f"{base}{PREFIX}/logout")
        await check_page(page, artifacts, "page-logout")
        await page.goto(f"{base}{ADMIN}users")
        await check_page(page, artifacts, "admin-users")

        # A 404 says who is signed in and offers a way back.
        await page.goto(f"{base}{PREFIX}/no-such-page")
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        await expect(page.get_by_text("alice (alice@example.com)")).to_be_visible()
        await check_page(page, artifacts, "page-404")
        await page.get_by_role("link", name="Your account").click()
        await expect(page).to_have_url(f"{base}{PREFIX}/account")

        # Audit search: filters, results, export.
        await page.goto(f"{base}{ADMIN}audit")
        await page.get_by_label("Event").fill("login.success")
        await page.get_by_label("Principal").fill("alice")
        await page.get_by_role("button", name="Search").click()
        await expect(page).to_have_url(re.compile(r"event=login\.success"))
        rows = page.locator("table[aria-label='Audit records'] tbody tr")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("login.success")
        await check_page(page, artifacts, "admin-audit")
        async with page.expect_download() as waiting:
            await page.get_by_role("link", name="Download every match as JSON Lines").click()
        exported = (await (await waiting.value).path()).read_text().splitlines()
        assert len(exported) == 1 and '"event":"login.success"' in exported[0]

        # A refused CSRF token: the change is not made, the page says why.
        await page.goto(f"{base}{ADMIN}users/bob?confirm=end_sessions")
        end_all = page.get_by_role("button", name="End all sessions")
        form = page.locator("form", has=end_all)
        await form.locator("input[name=csrf_token]").evaluate("e => e.value = 'forged'")
        await end_all.click()
        await expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()
        await expect(
            page.get_by_text("security token was missing or did not match")
        ).to_be_visible()
        await expect(page.get_by_text("alice (alice@example.com)")).to_be_visible()
        await check_page(page, artifacts, "admin-csrf-refused")

        # An admin half-way through the sign-in (password done, code not yet): 403.
        second = await browser.new_context()
        half = await second.new_page()
        await half.goto(f"{base}{PREFIX}/login")
        await fill_login(half, "alice", PASSWORD)
        await expect(half).to_have_url(f"{base}{PREFIX}/2fa/verify")
        await check_page(half, artifacts, "page-verify")
        response = await half.goto(f"{base}{ADMIN}")
        assert response is not None and response.status == 403
        await expect(half.get_by_text("Finish signing in")).to_be_visible()
        await second.close()

        # A user who is not a gateway admin: 403, saying who and what, with a way back.
        third = await browser.new_context(java_script_enabled=False)
        bob = await third.new_page()
        await bob.goto(f"{base}{ADMIN}")
        await fill_login(bob, "bob", PASSWORD)
        await expect(bob).to_have_url(f"{base}{ADMIN}")
        await expect(bob.get_by_role("heading", name="Forbidden")).to_be_visible()
        await expect(bob.get_by_text("bob (bob@example.com)")).to_be_visible()
        await expect(bob.get_by_text(f"GET {ADMIN}")).to_be_visible()
        await bob.screenshot(path=artifacts / "admin-403.png", full_page=True)
        await bob.get_by_role("link", name="Go to the start page").click()
        await expect(bob.locator("#whoami")).to_have_text("Signed in as bob")
        await third.close()
        await alice.close()
