"""The console's reads and writes of incidents, sign-in history and trusted login IPs.

Thin adapters over the security-operations services (gateway/services/), so the views stay
markup and form handling. None where that part is not available in this build.
"""

from __future__ import annotations

from gateway.admin.console import Admin
from gateway.policy.snapshot import User


async def open_incident_count(admin: Admin) -> int | None:
    return None


async def user_activity(admin: Admin, user: User, *, form: dict[str, str] | None = None) -> str:
    return '<p class="muted">Sign-in history is not available in this build.</p>'


async def add_trusted_ip(admin: Admin, *, cidr: str, description: str, scope: str) -> str | None:
    return "Trusted login IPs are not available in this build."
