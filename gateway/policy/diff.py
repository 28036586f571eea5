"""What changed between two policy snapshots, for the reload mail and `policy.reloaded` (pure).

Section 6: the trail answers "who could do what, since when", so the diff names users added,
removed or with other grants or admin flag; protection, modes, allowlist toggles and entry
counts; notifications toggled (and service accounts added or removed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.policy.snapshot import SURFACES, Snapshot


def _onoff(value: bool) -> str:
    return "on" if value else "off"


@dataclass(slots=True)
class PolicyDiff:
    changes: list[str] = field(default_factory=list)  # one sentence each, for people
    record: dict[str, Any] = field(default_factory=dict)  # the same, structured, for the audit

    @property
    def notifications_turned_off(self) -> bool:
        return self.record.get("notifications", {}).get("enabled") == [True, False]

    def _put(self, path: tuple[str, ...], value: Any) -> None:
        node = self.record
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value


def diff(old: Snapshot, new: Snapshot) -> PolicyDiff:
    d = PolicyDiff()
    if old.protection_enabled != new.protection_enabled:
        d.changes.append(f"Global protection turned {_onoff(new.protection_enabled).upper()}")
        d._put(("protection", "enabled"), [old.protection_enabled, new.protection_enabled])
    for name in SURFACES:
        a, b = old.surfaces[name], new.surfaces[name]
        if a.monitor != b.monitor:
            modes = ["monitor" if m else "enforce" for m in (a.monitor, b.monitor)]
            d.changes.append(f"The {name} surface switched from {modes[0]} to {modes[1]} mode")
            d._put(("modes", name), modes)
        if a.allowlist_enabled != b.allowlist_enabled:
            d.changes.append(f"The {name} allowlist turned {_onoff(b.allowlist_enabled).upper()}")
            d._put(("allowlists", name, "enabled"), [a.allowlist_enabled, b.allowlist_enabled])
        if len(a.entries) != len(b.entries) or set(a.entries) != set(b.entries):
            d.changes.append(
                f"The {name} allowlist now has {len(b.entries)} entries (was {len(a.entries)})"
            )
            d._put(("allowlists", name, "entries"), [len(a.entries), len(b.entries)])
    added = sorted(new.users.keys() - old.users.keys())
    removed = sorted(old.users.keys() - new.users.keys())
    for user in added:
        u = new.users[user]
        role = "gateway admin " if u.admin else ""
        grants = ", ".join(f"{app}: {r}" for app, r in sorted(u.grants.items())) or "no apps"
        d.changes.append(f"User {user} added (invited) as {role}with {grants}")
    for user in removed:
        d.changes.append(f"User {user} removed")
    if added:
        d._put(("users", "added"), added)
    if removed:
        d._put(("users", "removed"), removed)
    for user in sorted(old.users.keys() & new.users.keys()):
        a, b = old.users[user], new.users[user]
        if dict(a.grants) != dict(b.grants):
            before = ", ".join(f"{k}: {v}" for k, v in sorted(a.grants.items())) or "none"
            after = ", ".join(f"{k}: {v}" for k, v in sorted(b.grants.items())) or "none"
            d.changes.append(f"User {user} grants changed from {before} to {after}")
            d._put(("users", "grants", user), [dict(a.grants), dict(b.grants)])
        if a.admin != b.admin:
            verb = "is now a gateway admin" if b.admin else "is no longer a gateway admin"
            d.changes.append(f"User {user} {verb}")
            d._put(("users", "admin", user), [a.admin, b.admin])
    accounts_added = sorted(new.accounts.keys() - old.accounts.keys())
    accounts_removed = sorted(old.accounts.keys() - new.accounts.keys())
    for name in accounts_added:
        d.changes.append(f"Service account {name} added")
    for name in accounts_removed:
        d.changes.append(f"Service account {name} removed")
    if accounts_added or accounts_removed:
        d._put(("service_accounts",), {"added": accounts_added, "removed": accounts_removed})
    a_on, b_on = old.policy.notifications.enabled, new.policy.notifications.enabled
    if a_on != b_on:
        d.changes.append(
            "Notifications turned OFF: this is the last mail until they are turned on again"
            if not b_on
            else "Notifications turned ON"
        )
        d._put(("notifications", "enabled"), [a_on, b_on])
    return d
