"""The gateway's own admin console under {prefix}/admin/ (docs/http.md).

A package of its own, mounted on the page table (`register`), so gateway/web/ keeps its one
request pipeline: the console adds pages, never steps. See docs/admin-console.md.

    console.py      who may enter (a gateway admin after every sign-in step) and the routes
    layout.py       the console's frame and shared markup
    home.py         admin/: incidents banner, system messages, policy, outbox, legal contacts
    incidents.py    admin/incidents
    users.py        admin/users and admin/users/{name}
    trusted_ips.py  admin/trusted-ips
    audit_page.py   admin/audit (search and JSON Lines export)
    secops.py       adapters over the incidents / sign-in history / trusted IP services
    providers.py    the protocols the notifications module plugs into (messages, outbox)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.web.pages import Pages

GET = frozenset({"GET", "HEAD"})
GET_POST = GET | {"POST"}


def register(pages: Pages) -> None:
    from gateway.admin import audit_page, home, incidents, trusted_ips, users
    from gateway.admin.console import Console, Route

    routes = [
        Route(re.compile(""), GET, home.view),
        Route(re.compile("audit"), GET, audit_page.view),
        Route(re.compile("incidents"), GET_POST, incidents.view),
        Route(re.compile("trusted-ips"), GET_POST, trusted_ips.view),
        Route(re.compile("users"), GET, users.index),
        Route(re.compile(r"users/(?P<name>[^/]+)"), GET_POST, users.view),
    ]
    pages.mount("admin/", Console(routes), "dashboard")
