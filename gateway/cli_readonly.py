"""What the read-only verbs (check, explain, audit verify/tail, incidents, logins) may open: only
what already exists. They never create the state database or a secret key (docs/cli.md); a
first run of `gateway check` on a fresh checkout must leave the folder as it found it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gateway.services.secret_key import ENV_VAR, SecretKey, load_secret_key
from gateway.services.store.url import SqliteTarget, parse_store_url

if TYPE_CHECKING:
    from gateway.policy.snapshot import Snapshot
    from gateway.services.store import StateStore


def secret_key_if_present(snapshot: Snapshot) -> SecretKey | None:
    """The gateway's secret key from the env or its file; None when neither exists yet."""
    path = snapshot.paths.secret_key_file
    if not os.environ.get(ENV_VAR) and (path is None or not path.exists()):
        return None
    return load_secret_key(path)


def state_store_exists(snapshot: Snapshot) -> bool:
    """False for a SQLite file not created yet (a server is assumed to exist)."""
    target = parse_store_url(snapshot.config.state, snapshot.paths.config_dir)
    if isinstance(target, SqliteTarget):
        return not target.in_memory and os.path.exists(target.path)
    return True


async def store_if_present(snapshot: Snapshot) -> StateStore | None:
    """The state store, opened only if it already exists; None otherwise."""
    from gateway.services.store import open_store

    if not state_store_exists(snapshot):
        return None
    return await open_store(snapshot.config.state, snapshot.paths.config_dir)
