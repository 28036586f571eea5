"""Issue "sign-in": a real browser signs in through the gateway to the demo dashboard.

Two-factor is off (enforce: none). The demo dashboard behind the gateway verifies the
X-Gateway-Assertion against the gateway's JWKS and shows who it received.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import PREFIX, assert_accessible, demo_site, fill_login
from tests.factories import PASSWORD

pytestmark = pytest.mark.browser


async def test_sign_in_lands_on_the_requested_page(tmp_path, browser: Browser, artifacts):
    async with demo_site(tmp_path, "none") as gw:
        context = await browser.new_context(viewport={"width": 1000, "height": 800})
        page = await context.new_page()
        await page.goto(f"{gw.url}/some/page?tab=2")

        # Sent to the login page, with the page asked for kept as `next`.
        await expect(page).to_have_url(re.compile(rf"{re.escape(gw.url + PREFIX)}/login\?next="))
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        fields = await assert_accessible(page)
        assert {f.name for f in fields} == {"username", "password"}
        assert await page.get_by_label("Username").get_attribute("autocomplete") == "username"
        assert (
            await page.get_by_label("Password").get_attribute("autocomplete") == "current-password"
        )
        await page.screenshot(path=artifacts / "signin-login.png", full_page=True)

        await fill_login(page, "bob", PASSWORD)

        await expect(page).to_have_url(f"{gw.url}/some/page?tab=2")
        await expect(page.get_by_role("heading", name="Demo dashboard")).to_be_visible()
        await expect(page.locator("#whoami")).to_have_text("Signed in as bob")
        verified = page.get_by_text("Assertion verified")
        await expect(verified).to_be_visible()
        await expect(verified).to_contain_text("bob is viewer of console (auth: password)")
        await expect(page.get_by_text("Assertion not valid")).to_have_count(0)
        await page.screenshot(path=artifacts / "signin-dashboard.png", full_page=True)

        # Signed in: the login page sends the user on instead of asking again.
        await page.goto(f"{gw.url}{PREFIX}/login?next=/other")
        await expect(page).to_have_url(f"{gw.url}/other")
        await expect(page.locator("#whoami")).to_have_text("Signed in as bob")
        await context.close()


WRONG_LOGIN = re.compile(r"^Wrong username or password\. \d+ attempts? left")


async def test_wrong_password_shows_an_error_then_the_right_one_works(tmp_path, browser: Browser):
    async with demo_site(tmp_path, "none") as gw:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{gw.url}/some/page")
        await fill_login(page, "bob", "not-the-password")

        alert = page.get_by_role("alert")
        await expect(alert).to_have_text(WRONG_LOGIN)
        await expect(page.get_by_label("Username")).to_have_value("bob")
        await expect(page.get_by_label("Password")).to_have_value("")
        await assert_accessible(page)
        # An unknown user gets the very same answer.
        await fill_login(page, "mallory", "whatever-it-is")
        await expect(page.get_by_role("alert")).to_have_text(WRONG_LOGIN)
        await expect(page.locator("#whoami")).to_have_count(0)

        # The requested page survives the failed attempts.
        await fill_login(page, "bob", PASSWORD)
        await expect(page).to_have_url(f"{gw.url}/some/page")
        await expect(page.locator("#whoami")).to_have_text("Signed in as bob")
        await context.close()


async def test_login_works_without_javascript(tmp_path, browser: Browser):
    async with demo_site(tmp_path, "none") as gw:
        context = await browser.new_context(java_script_enabled=False)
        page = await context.new_page()
        await page.goto(f"{gw.url}/some/page")
        await expect(page).to_have_url(re.compile(rf"{re.escape(PREFIX)}/login\?next="))
        assert await page.locator("script").count() == 0
        await assert_accessible(page)
        await fill_login(page, "bob", PASSWORD)
        await expect(page).to_have_url(f"{gw.url}/some/page")
        await expect(page.locator("#whoami")).to_have_text("Signed in as bob")
        await expect(page.get_by_text("Assertion verified")).to_be_visible()

        # Sign out, still without JavaScript: the logout page's plain form.
        await page.goto(f"{gw.url}{PREFIX}/logout")
        await assert_accessible(page)
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("status")).to_have_text("You are signed out.")
        await page.goto(f"{gw.url}/some/page")
        await expect(page).to_have_url(re.compile(rf"{re.escape(PREFIX)}/login\?next="))
        await context.close()
