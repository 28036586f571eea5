"""Where sessions live: `open_session_store(config.sessions, state_store, config_dir)`.

See `base.py` for the protocol and its rules, `state.py` (the default: the state store) and
`redis_sessions.py` (Redis, for several instances that should not put every session check on
the database).
"""

from __future__ import annotations

from pathlib import Path

from gateway.policy.schema import Sessions
from gateway.services.store import StateStore

from .base import SessionStore
from .state import StateSessionStore

__all__ = ["SessionStore", "StateSessionStore", "open_session_store"]


def open_session_store(settings: Sessions, state: StateStore, config_dir: Path) -> SessionStore:
    """The session store `sessions.store` names; relative file paths resolve against
    `config_dir`. Raises `StoreError` when a file it needs cannot be read."""
    if settings.store == "state":
        return StateSessionStore(state)
    try:
        from .redis_sessions import RedisSessionStore
    except ModuleNotFoundError as exc:  # redis is the optional extra "redis"
        if exc.name != "redis":
            raise
        from gateway.services.store import StoreError

        raise StoreError(
            "sessions.store: redis:// needs the redis client: pip install 'access-gateway[redis]'"
        ) from exc

    def resolve(path: str | None) -> Path | None:
        return None if path is None else (config_dir / path).absolute()

    return RedisSessionStore.open(
        settings.store,
        prefix=settings.key_prefix,
        password_file=resolve(settings.password_file),
        ca_file=resolve(settings.ca_file),
    )
