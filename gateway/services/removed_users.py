"""A user removed from the policy is signed out everywhere, at once and for good.

Without this their sessions would only be refused while the name is missing: restoring the user
(an edit undone, a file that came back) would bring every old session back to life. Ending them
at the reload that removes the user makes the removal final; a restored user signs in again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.policy.snapshot import Snapshot
    from gateway.services.audit import AuditLog
    from gateway.services.session_store import SessionStore


async def end_sessions_of_removed_users(
    sessions: SessionStore, audit: AuditLog, previous: Snapshot, new: Snapshot
) -> list[str]:
    """Revoke the sessions of every user in `previous` but not in `new`; returns their names."""
    removed = sorted(set(previous.users) - set(new.users))
    for name in removed:
        revoked = await sessions.revoke_user(name)
        audit.record(
            "session.revoked",
            flush=True,
            principal=name,
            surface="dashboard",
            decision=None,
            reason="user removed from the policy",
            sessions_revoked=revoked,
            generation=new.generation,
        )
    return removed
