"""`gateway check` warnings about notifications and legal contacts (sections 7.1, 7.5); pure."""

from __future__ import annotations

from gateway.policy.snapshot import Snapshot


def notification_warnings(snapshot: Snapshot) -> list[str]:
    policy = snapshot.policy
    out: list[str] = []
    if policy.notifications.enabled:
        if snapshot.config.smtp is None:
            out.append(
                "notifications.enabled is true but gateway.yaml has no smtp: section: no "
                "notification can be sent; add smtp: {host, port, from} (or set "
                "notifications.enabled: false to say so)"
            )
        if snapshot.users and not any(u.admin and u.email for u in snapshot.users.values()):
            out.append(
                "notifications.enabled is true but no gateway admin has an email: admin "
                "notifications reach nobody; set email: on a user with admin: true"
            )
    if snapshot.users and not policy.legal_contacts:
        out.append(
            "no legal_contacts: a security incident (several countries in one window) is "
            "mailed to admins only; add your Data Protection Officer under legal_contacts "
            "(name, email, role)"
        )
    return out
