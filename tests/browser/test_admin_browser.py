"""The admin console in Chromium (docs/http.md): the incidents banner, an incident and its
evidence, the user's page with "Mark as safe" under each prefix rule (refusals with their
messages), trusted IPs by domain with removal after a confirmation, all accessible (axe-core).

bob signs in from Great Britain and the Netherlands (his address named by a trusted proxy in
X-Forwarded-For, judged by the bundled GeoIP table): an incident opens. alice, a gateway admin
with 2FA enforced for admins, reviews it.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.a11y import check_page
from tests.browser.conftest import PREFIX, fill_login, oathtool_code
from tests.factories import PASSWORD, client, gateway_files, running_gateway
from tests.web.test_signin import sign_in, wait_for_audit

pytestmark = pytest.mark.browser

ADMIN = f"{PREFIX}/admin/"
GB, NL = "81.2.69.142", "193.0.6.139"


async def mark_safe(page: Page, cidr: str, description: str) -> None:
    """Open the first row's "Mark as safe", fill it in, submit."""
    row = page.locator("tbody tr", has=page.locator("details")).first
    await row.locator("summary").click()
    await row.get_by_label("Address or network").fill(cidr)
    await row.get_by_label("Description").fill(description)
    await row.get_by_role("button", name="Mark as safe").click()


async def test_incident_review_and_trusted_ips(tmp_path, browser: Browser, artifacts):
    files = gateway_files(
        tmp_path,
        extra_config={"trusted_proxies": ["127.0.0.1/32"]},
        security={
            "two_factor": {"enforce": "admins", "issuer": "Acme Mail"},
            "incidents": {"window": "24h", "distinct_countries": 2},
            "trusted_login_ips": [
                {"cidr": "66.249.0.0/17", "scope": "example.com", "description": "Mail fetcher"}
            ],
            "legal_contacts": [
                {"name": "Dana Ops", "email": "dpo@example.com", "role": "Data Protection Officer"}
            ],
        },
    )
    async with running_gateway(files) as gw:
        base = gw.url
        for ip in (GB, NL):
            async with client(headers={"X-Forwarded-For": ip}) as bob:
                assert (await sign_in(bob, gw, "bob")).status == 302
        await wait_for_audit(gw.files, "incident.opened")

        context = await browser.new_context(viewport={"width": 1200, "height": 900})
        page = await context.new_page()
        await page.goto(f"{base}{ADMIN}")
        await fill_login(page, "alice", PASSWORD)
        secret = await page.locator("[data-totp-secret]").get_attribute("data-totp-secret")
        assert secret
        await page.get_by_label("Code from the app").fill(oathtool_code(secret, time.time()))
        await page.get_by_role("button", name="Confirm and turn on").click()
        await page.get_by_role("link", name=re.compile("continue")).click()

        # -- home: the banner, legal contacts ------------------------------------------------
        await expect(page).to_have_url(f"{base}{ADMIN}")
        banner = page.get_by_role("alert")
        await expect(banner).to_contain_text("New security incidents detected")
        await expect(page.get_by_role("link", name="dpo@example.com")).to_be_visible()
        await check_page(page, artifacts, "admin-home-incident")
        await banner.get_by_role("link", name="Review the incidents").click()

        # -- the incident: user, countries, the sign-ins that caused it ----------------------
        await expect(page).to_have_url(f"{base}{ADMIN}incidents?state=open")
        row = page.locator("tr[data-id]")
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text("bob")
        await expect(row).to_contain_text("GB, NL")
        await expect(row).to_contain_text(GB)
        await expect(row).to_contain_text(NL)
        await check_page(page, artifacts, "admin-incidents")
        await row.get_by_role("button", name="Acknowledge").click()
        await expect(page.get_by_role("status")).to_contain_text("acknowledged")

        # -- bob's page: last sign-ins, Mark as safe under each rule -------------------------
        await page.get_by_role("link", name="bob", exact=True).first.click()
        await expect(page).to_have_url(f"{base}{ADMIN}users/bob")
        await expect(page.get_by_text("Countries, last 24 h")).to_be_visible()
        await check_page(page, artifacts, "admin-user")
        scope = page.locator("details input[name=scope]").first
        await expect(scope).to_have_value("example.com")
        refusals = [
            (f"{GB}/24", "Office", "has host bits set; did you mean 81.2.69.0/24?"),
            ("81.2.64.0/20", "Provider", "/20 is not allowed"),
            ("2a00:1450::/40", "Phones", "/40 is not allowed"),
            ("81.2.69.0/24", " ", "a description is required"),
        ]
        for cidr, description, message in refusals:
            await mark_safe(page, cidr, description)
            await expect(page.get_by_role("alert")).to_contain_text(message)
            await expect(page.locator("#cidr-retry")).to_have_value(cidr)
        await page.screenshot(path=artifacts / "admin-mark-safe-refused.png", full_page=True)
        await mark_safe(page, "81.2.69.0/24", "Bob's office")
        await expect(page.get_by_role("status")).to_contain_text(
            "81.2.69.0/24 is trusted for example.com"
        )
        await mark_safe(page, NL, "Bob's hotel")
        await expect(page.get_by_role("status")).to_contain_text(f"{NL} is trusted")
        await expect(page.locator("tbody tr td:nth-child(6)", has_text="yes")).to_have_count(2)

        # -- trusted IPs by domain: search, remove after confirming --------------------------
        await page.get_by_role("link", name="Trusted IPs").click()
        await page.get_by_label("Email domain", exact=True).first.select_option("example.com")
        await page.get_by_role("button", name="Show").click()
        await expect(page.locator("tr[data-id]")).to_have_count(2)
        await expect(page.locator('tr[data-source="policy"]')).to_contain_text("read-only")
        await check_page(page, artifacts, "admin-trusted-ips")
        await page.get_by_label("Search").fill(NL)
        await page.get_by_role("button", name="Show").click()
        entry = page.locator("tr[data-id]")
        await expect(entry).to_have_count(1)
        await entry.get_by_role("link", name="Remove…").click()
        await expect(page.get_by_role("heading", name="Remove a trusted login IP")).to_be_visible()
        await check_page(page, artifacts, "admin-confirm-remove")
        await page.get_by_role("button", name="Remove").click()
        await expect(page.get_by_role("status")).to_contain_text(f"{NL} is no longer trusted")
        await expect(page.locator("tr[data-id]")).to_have_count(1)

        # -- resolve with a note -------------------------------------------------------------
        await page.get_by_role("link", name="Incidents").click()
        await page.get_by_role("link", name="Resolve…").click()
        await page.get_by_label("Resolution note (required)").fill("Bob travels; office marked")
        await check_page(page, artifacts, "admin-resolve")
        await page.get_by_role("button", name="Resolve incident").click()
        await expect(page.get_by_role("status")).to_contain_text("resolved")
        await page.get_by_role("link", name="Home").click()
        await expect(page.get_by_text("No open security incidents.")).to_be_visible()

        # -- the trail shows every change with alice as principal ----------------------------
        await page.goto(f"{base}{ADMIN}audit?event=admin.*")
        rows = page.locator("table[aria-label='Audit records'] tbody tr")
        await expect(rows).to_have_count(5)  # acknowledge, 2 added, removed, resolved
        for i in range(5):
            await expect(rows.nth(i).locator("td").nth(2)).to_have_text("alice")
        await context.close()
