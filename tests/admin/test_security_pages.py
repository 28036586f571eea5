"""The console's incident and trusted-IP pages over real HTTP: bob signs in from two countries
(his public address named by a trusted proxy in X-Forwarded-For, judged by the bundled GeoIP
table), which opens an incident; alice, a gateway admin, works through it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.admin.conftest import ADMIN
from tests.factories import RunningGateway, client, gateway_files, running_gateway
from tests.web.test_signin import Form, fetch, post_form, quick_users, sign_in, wait_for_audit

GB, NL = "81.2.69.142", "193.0.6.139"


@pytest.fixture
async def incident_gw(tmp_path) -> AsyncIterator[RunningGateway]:
    files = gateway_files(
        tmp_path,
        users=quick_users(),
        extra_config={"trusted_proxies": ["127.0.0.1/32"]},
        security={
            "two_factor": {"enforce": "none"},
            "incidents": {"window": "24h", "distinct_countries": 2},
            "trusted_login_ips": [
                {"cidr": "66.249.0.0/17", "scope": "example.com", "description": "Mail fetcher"}
            ],
        },
    )
    async with running_gateway(files) as gw:
        for ip in (GB, NL):
            async with client(headers={"X-Forwarded-For": ip}) as bob:
                assert (await sign_in(bob, gw, "bob")).status == 302
        await wait_for_audit(gw.files, "incident.opened")
        yield gw


async def admin_client(gw: RunningGateway):  # type: ignore[no-untyped-def]
    http = client()
    assert (await sign_in(http, gw, "alice")).status == 302
    return http


def rows_with_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="(\d+)"', html)


class TestIncidents:
    """Banner, list, acknowledge, resolve with a note."""

    async def test_banner_list_acknowledge_resolve(self, incident_gw):
        gw = incident_gw
        async with await admin_client(gw) as http:
            home = await fetch(http, "GET", f"{gw.url}{ADMIN}")
            assert "New security incidents detected: 1 open incident." in home.text
            assert f"{ADMIN}incidents?state=open" in Form(home.text).links

            listing = await fetch(http, "GET", f"{gw.url}{ADMIN}incidents?state=open")
            ids = rows_with_ids(listing.text)
            assert len(ids) == 1
            assert "GB, NL" in listing.text and GB in listing.text and NL in listing.text

            done = await post_form(http, gw, "admin/incidents", {"id": ids[0]})
            assert done.status == 303  # no note: acknowledge
            after = await fetch(http, "GET", f"{gw.url}{ADMIN}incidents?state=acknowledged")
            assert rows_with_ids(after.text) == ids
            assert "acknowledged." in after.text

            ask = await fetch(http, "GET", f"{gw.url}{ADMIN}incidents?resolve={ids[0]}")
            assert ask.status == 200 and "Resolution note" in ask.text
            empty = await post_form(
                http, gw, "admin/incidents", {"action": "resolve", "id": ids[0], "note": " "}
            )
            assert empty.status == 400
            assert Form(empty.text).error
            resolved = await post_form(
                http, gw, "admin/incidents", {"id": ids[0], "note": "Bob was travelling"}
            )
            assert resolved.status == 303
            home = await fetch(http, "GET", f"{gw.url}{ADMIN}")
            assert "No open security incidents." in home.text
            final = await fetch(http, "GET", f"{gw.url}{ADMIN}incidents?state=resolved")
            assert "Bob was travelling" in final.text
        for event in ("admin.incident.acknowledged", "incident.acknowledged"):
            assert (await wait_for_audit(gw.files, event))[0]["principal"] == "alice"
        resolved_records = await wait_for_audit(gw.files, "admin.incident.resolved")
        assert resolved_records[0]["principal"] == "alice"


MARK_SAFE: list[tuple[str, str, str | None]] = [
    (f"{GB}/24", "Bob's office", "has host bits set; did you mean 81.2.69.0/24?"),
    ("81.2.64.0/20", "Bob's provider", "/20 is not allowed"),
    ("2a00:1450::/40", "Phone network", "/40 is not allowed"),
    ("not-an-address", "Typo", "is not an IP address or network"),
    ("81.2.69.0/24", "", "a description is required"),
    ("81.2.69.0/24", "Bob's office", None),
    ("66.249.0.0/17", "Mail fetcher", "already trusted for example.com by the policy"),
    ("2a00:1450:4001::/48", "Bob's phone provider", None),
    (NL, "Bob's hotel", None),
]


class TestMarkAsSafe:
    """ "Mark as safe" on the user's page with each prefix rule, then trusted-ips."""

    async def test_rules_refusals_and_removal(self, incident_gw):
        gw = incident_gw
        async with await admin_client(gw) as http:
            page = await fetch(http, "GET", f"{gw.url}{ADMIN}users/bob")
            assert page.status == 200
            form = Form(page.text)
            scopes = [a for a in re.findall(r'name="scope" value="([^"]*)"', page.text)]
            assert scopes and set(scopes) == {"example.com"}
            assert GB in page.text and NL in page.text
            assert "Sign-ins, last 24 h</dt><dd>2" in page.text
            assert "GB, NL" in page.text
            assert form.inputs["cidr"]["value"] in (GB, NL)

            for cidr, description, refusal in MARK_SAFE:
                fields: dict[str, Any] = {
                    "action": "mark_safe",
                    "cidr": cidr,
                    "description": description,
                    "scope": "example.com",
                }
                reply = await post_form(http, gw, "admin/users/bob", fields)
                if refusal is None:
                    assert reply.status == 303, (cidr, reply.text[:500])
                else:
                    assert reply.status == 400, cidr
                    assert refusal in Form(reply.text).error.replace("&#x27;", "'"), (
                        cidr,
                        Form(reply.text).error,
                    )
                    kept = Form(reply.text).inputs
                    assert kept["cidr"]["value"] == cidr  # what was typed stays

            page = await fetch(http, "GET", f"{gw.url}{ADMIN}users/bob")
            assert page.text.count("<td>yes</td>") == 2  # both sign-ins trusted now

            listing = await fetch(http, "GET", f"{gw.url}{ADMIN}trusted-ips?scope=example.com")
            ids = rows_with_ids(listing.text)
            assert len(ids) == 3
            assert 'data-source="policy"' in listing.text and "policy (read-only)" in listing.text
            found = await fetch(http, "GET", f"{gw.url}{ADMIN}trusted-ips?search={NL}")
            assert len(rows_with_ids(found.text)) == 1

            ask = await fetch(http, "GET", f"{gw.url}{ADMIN}trusted-ips?remove={ids[0]}")
            assert Form(ask.text).inputs["id"]["value"] == ids[0]
            assert (
                len(rows_with_ids((await fetch(http, "GET", f"{gw.url}{ADMIN}trusted-ips")).text))
                == 3
            )  # asking removed nothing
            removed = await post_form(http, gw, "admin/trusted-ips", {"id": ids[0]})
            assert removed.status == 303
            after = await fetch(http, "GET", f"{gw.url}{ADMIN}trusted-ips?scope=example.com")
            assert ids[0] not in rows_with_ids(after.text)

            added = await post_form(
                http,
                gw,
                "admin/trusted-ips",
                {"cidr": "10.0.0.1/24", "description": "VPN", "scope": "example.org"},
            )
            assert added.status == 400
            assert "did you mean 10.0.0.0/24?" in Form(added.text).error
        added_records = await wait_for_audit(gw.files, "trusted_ip.added", 3)
        assert {r["principal"] for r in added_records} == {"alice"}
        assert (await wait_for_audit(gw.files, "admin.trusted_ip.removed"))[0]["principal"] == (
            "alice"
        )
