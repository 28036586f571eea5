"""What would surprise a production deployment: warnings `gateway check` prints, each with its fix.

Pure: reads a compiled snapshot and the process environment (for the secret key), nothing else.
Warnings never make a policy invalid; `gateway check` exits 3 when there are any.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.policy.snapshot import Snapshot
from gateway.services.secret_key import ENV_VAR


def production_warnings(snapshot: Snapshot, environ: Mapping[str, str] = os.environ) -> list[str]:
    policy = snapshot.policy
    out: list[str] = []
    lists = policy.allowlists
    if snapshot.apps and not lists.dashboard.enabled and not lists.api.enabled:
        out.append(
            "both allowlists are disabled: any address on the internet can reach the sign-in "
            "page and try API keys; add your networks under allowlists.dashboard.entries and "
            "allowlists.api.entries and set enabled: true (try protection.mode: monitor first)"
        )
    if not policy.protection.enabled:
        out.append(
            "protection.enabled is false: allowlists are not applied (only audited); set it to "
            "true once your entries are in place"
        )
    if snapshot.apps and not snapshot.users and not snapshot.accounts:
        out.append(
            "no users and no service accounts: nobody can get through; add a user with "
            "`gateway hash-password` (users.<name>.password_hash) or a service account with "
            "`gateway apikey create NAME`"
        )
    elif snapshot.users and not any(u.admin for u in snapshot.users.values()):
        out.append(
            "no user has admin: true: nobody receives security notifications or may open the "
            "admin console; set admin: true on at least one user with an email"
        )
    key_file = snapshot.paths.secret_key_file
    if not environ.get(ENV_VAR) and (key_file is None or not key_file.exists()):
        where = f" at {key_file}" if key_file else ""
        out.append(
            f"no secret key yet: one will be generated at first start{where}; several "
            "instances would each generate their own (sessions, audit and 2FA would not be "
            "shared). Create one with `head -c 32 /dev/urandom | base64 | tr '+/' '-_'`, store "
            f"it in secret_key_file or the {ENV_VAR} environment variable, and back it up"
        )
    return out
