"""Warnings that need the state store, shared by `gateway check` and the reload log."""

from __future__ import annotations

from gateway.policy.snapshot import Snapshot
from gateway.services.store import StateStore


async def two_factor_warning(snapshot: Snapshot, store: StateStore | None) -> str | None:
    """Enforcing 2FA before any admin has enrolled sends admins to the interstitial too.

    Only a warning: enforcement is never weakened because of it. `store` None: there is no
    state yet, so nobody has enrolled.
    """
    enforce = snapshot.policy.two_factor.enforce
    admins = [u for u in snapshot.users.values() if u.admin]
    if enforce == "none" or not admins:
        return None
    for admin in admins:
        if store is not None and await store.totp_get(admin.name) is not None:
            return None
    return (
        f"two_factor.enforce is {enforce!r} while no gateway admin has enrolled 2FA yet; "
        "admins will meet the enrollment screen at their next sign-in (enroll yourself "
        "first on the account page). Enforcement stays on."
    )
