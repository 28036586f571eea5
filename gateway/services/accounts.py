"""What happens to a person's account, on top of the state store: passwords in force, sign-in
regulation, TOTP enrollment and codes. Used by the sign-in views and by the CLI alike.

Password precedence (documented in README): a password changed at run time lives in the store
together with the users.yaml hash that was in force when it was changed (`base_hash`). It wins
while users.yaml still has that hash. When an admin writes a new hash into users.yaml (a reset),
the two differ and users.yaml wins again.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.policy.snapshot import User
from gateway.services import passwords, regulation, totp
from gateway.services.secret_key import Sealer, SealError
from gateway.services.session_store import SessionStore
from gateway.services.store import StateStore

# Runs CPU-heavy hashing off the event loop: asyncio.to_thread, or the sign-in guard's fair pool.
HashRunner = Callable[..., Awaitable[Any]]


async def unlock(store: StateStore, user: str) -> None:
    """Forget the user's failures and lift their ban (any address bans stay)."""
    await store.login_state_clear(regulation.user_subject(user))


async def unlock_ip(store: StateStore, client_ip: str) -> str:
    """Forget the address's failures and lift its ban; returns the subject lifted."""
    subject = regulation.ip_subject(client_ip)
    await store.login_state_clear(subject)
    return subject


# -- passwords ---------------------------------------------------------------------------------


async def password_hash_in_force(store: StateStore, user: User) -> str:
    record = await store.password_get(user.name)
    if record is not None and record.hash and record.base_hash == user.password_hash:
        return record.hash
    return user.password_hash


async def check_password(
    store: StateStore, user: User | None, password: str, hashing: HashRunner = asyncio.to_thread
) -> bool:
    """Unknown users cost an argon2 verification too, so both answers take about as long."""
    hash_ = await password_hash_in_force(store, user) if user is not None else None
    return await hashing(passwords.verify_password_or_dummy, hash_, password)


async def password_changed_at(store: StateStore, user: User, now: float) -> float:
    record = await store.password_get(user.name)
    if record is not None and record.hash and record.base_hash == user.password_hash:
        return record.changed_at
    return await store.password_first_seen(user.name, user.password_hash, now)


async def must_change_password(store: StateStore, user: User, now: float) -> str | None:
    """Why the password must be changed before anything else, or None."""
    record = await store.password_get(user.name)
    if record is not None and record.must_change:
        return "An administrator asked you to choose a new password."
    changed = await password_changed_at(store, user, now)
    if passwords.password_age_expired(user.password_rules, changed, now):
        days = user.password_rules.max_age_days
        return f"Your password is older than {days} days. Choose a new one to continue."
    return None


async def change_password(
    store: StateStore, user: User, new: str, now: float, hashing: HashRunner = asyncio.to_thread
) -> list[passwords.Violation]:
    """Check the new password against the user's effective rules; store it if it passes."""
    rules = user.password_rules
    history = await store.password_history(user.name, rules.history) if rules.history else []
    current = await password_hash_in_force(store, user)
    if current != user.password_hash and len(history) < rules.history:
        # The store's history holds only passwords set at run time; the users.yaml one was in
        # force before them and is one of the last N as well.
        history.append(user.password_hash)
    violations = await hashing(
        functools.partial(
            passwords.check_new_password,
            rules,
            new,
            username=user.name,
            email=user.email,
            history_hashes=history,
            current_hash=current,
        )
    )
    if violations:
        return violations
    new_hash = await hashing(passwords.hash_password, new)
    await store.password_set(user.name, new_hash, user.password_hash, now)
    return []


# -- TOTP --------------------------------------------------------------------------------------


def seal_secret(sealer: Sealer, user: str, secret: str) -> str:
    return base64.urlsafe_b64encode(sealer.seal(secret.encode(), user.encode())).decode()


def open_secret(sealer: Sealer, user: str, sealed: str | bytes) -> str | None:
    raw = base64.urlsafe_b64decode(sealed) if isinstance(sealed, str) else sealed
    try:
        return sealer.open(raw, user.encode()).decode()
    except SealError:
        return None


async def enrolled(store: StateStore, user: str) -> bool:
    return await store.totp_get(user) is not None


class AlreadyEnrolled(Exception):
    """The user enrolled an authenticator (in another session) while this one was pending."""


async def enroll(
    store: StateStore, sealer: Sealer, user: str, secret: str, code: str, now: float
) -> list[str] | None:
    """Confirm a pending secret with its first code; returns the new recovery codes (shown once)."""
    step = totp.matching_step(secret, code, now)
    if step is None:
        return None
    if not await store.totp_enroll(user, sealer.seal(secret.encode(), user.encode()), now):
        raise AlreadyEnrolled(user)  # another session enrolled first: never replace it
    await store.totp_claim_step(user, step)  # the confirming code cannot sign in again
    return await new_recovery_codes(store, user, now)


async def replace_authenticator(
    store: StateStore, sealer: Sealer, user: str, secret: str, code: str, now: float
) -> bool:
    """Move to a new phone: the new secret replaces the old one only once its code matches."""
    step = totp.matching_step(secret, code, now)
    if step is None:
        return False
    await store.totp_set(user, sealer.seal(secret.encode(), user.encode()), now)
    await store.totp_claim_step(user, step)  # the confirming code cannot sign in again
    return True


async def new_recovery_codes(store: StateStore, user: str, now: float) -> list[str]:
    codes = totp.new_recovery_codes()
    hashes = await asyncio.to_thread(lambda: [totp.hash_recovery_code(c) for c in codes])
    await store.recovery_codes_set(user, hashes, now)
    return codes


@dataclass(frozen=True, slots=True)
class SecondFactor:
    ok: bool
    method: str | None = None  # "totp" | "recovery_code"
    recovery_codes_left: int | None = None
    replayed: bool = False


async def verify_second_factor(
    store: StateStore,
    sealer: Sealer,
    user: str,
    code: str,
    now: float,
    hashing: HashRunner = asyncio.to_thread,
) -> SecondFactor:
    """A TOTP code (each accepted at most once, across processes) or an unused recovery code."""
    record = await store.totp_get(user)
    if record is None:
        return SecondFactor(False)
    if totp.normalise_code(code) is not None:
        secret = open_secret(sealer, user, record.sealed_secret)
        if secret is None:
            return SecondFactor(False)
        step = totp.matching_step(secret, code, now)
        if step is None:
            return SecondFactor(False)
        if not await store.totp_claim_step(user, step):
            return SecondFactor(False, replayed=True)
        return SecondFactor(True, "totp")
    if not totp.looks_like_recovery_code(code):
        return SecondFactor(False)
    unused = [r for r in await store.recovery_codes(user) if r.used_at is None]
    hashes = [r.code_hash for r in unused]
    index = await hashing(totp.matching_recovery_code, code, hashes)
    if index is None or not await store.recovery_code_use(user, unused[index].id, now):
        return SecondFactor(False)
    return SecondFactor(True, "recovery_code", len(unused) - 1)


async def reset_2fa(store: StateStore, sessions: SessionStore, user: str) -> int:
    """Remove the user's authenticator and recovery codes and end their sessions."""
    await store.totp_delete(user)
    return await sessions.revoke_user(user)
