"""Password hashing (argon2id) and the password policy.

Pure functions: callers pass stored hashes in and store what they get back. argon2 is slow on
purpose (~0.1 s), so web handlers call these functions in a thread (``asyncio.to_thread``).

Passwords are NFKC-normalised before they are hashed, verified or measured (NIST SP 800-63B
5.1.1.2), so "é" typed as one code point (Windows, Linux) or as "e" + accent (macOS) is the same
password. Passwords are never stripped.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from zxcvbn import zxcvbn

# RFC 9106 "second recommended option" (low memory): argon2id, t=3, m=64 MiB, p=4. These are
# argon2-cffi's defaults; stating them keeps hashes stable across library upgrades, and
# needs_rehash() reports hashes made with other parameters.
_HASHER = PasswordHasher(
    time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16
)

MAX_PASSWORD_LENGTH = 1024  # bounds the work per attempt; longer passwords are never accepted
ZXCVBN_MAX_CHARS = 100  # zxcvbn is slow on long inputs; beyond this a password is strong anyway
SECONDS_PER_DAY = 86_400

# zxcvbn keeps the user inputs of the current call in a module-level dictionary, so two calls
# running at the same time in different threads would see each other's user names.
_ZXCVBN_LOCK = threading.Lock()


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string ``$argon2id$v=19$m=65536,t=3,p=4$...``) of the password."""
    return _HASHER.hash(_normalise(password))


def verify_password(password_hash: str, password: str) -> bool:
    """True if the password matches; False on a mismatch or an invalid hash, never an exception.

    Passwords longer than MAX_PASSWORD_LENGTH are refused without hashing: none can have been set.
    """
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _HASHER.verify(password_hash, _normalise(password))
    except (VerificationError, ValueError):  # ValueError: invalid hash, or unencodable text
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with other parameters; rehash after a successful sign-in.

    An invalid hash gives False: it never verifies, so there is never a moment to rehash it.
    """
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except ValueError:
        return False


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password nobody knows, made with the same parameters as real ones."""
    return _HASHER.hash(secrets.token_urlsafe(32))


def verify_password_or_dummy(password_hash: str | None, password: str) -> bool:
    """Like verify_password, but just as slow when there is no user (``None``) or no valid hash.

    A sign-in for an unknown user verifies against a dummy hash and returns False, so the time a
    login takes does not tell whether the user exists.
    """
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    if password_hash is not None:
        try:
            return _HASHER.verify(password_hash, _normalise(password))
        except VerificationError:
            return False
        except ValueError:
            pass  # an invalid stored hash: spend the same time as for a valid one
    with contextlib.suppress(VerificationError, ValueError):
        _HASHER.verify(_dummy_hash(), _normalise(password))
    return False


@dataclass(frozen=True, slots=True)
class PasswordRules:
    """One password policy: the global ``password_policy`` or one app's override."""

    min_length: int = 12
    min_strength: int = 3  # zxcvbn score 0..4
    max_age_days: int = 0  # 0 = passwords never expire
    history: int = 5  # the last N passwords cannot be reused

    def __post_init__(self) -> None:
        if not 0 <= self.min_length <= MAX_PASSWORD_LENGTH:
            raise ValueError(f"min_length must be 0..{MAX_PASSWORD_LENGTH} (got {self.min_length})")
        if not 0 <= self.min_strength <= 4:
            raise ValueError(f"min_strength must be 0..4 (got {self.min_strength})")
        if self.max_age_days < 0:
            raise ValueError(f"max_age_days must be 0 or more (got {self.max_age_days})")
        if self.history < 0:
            raise ValueError(f"history must be 0 or more (got {self.history})")


def strictest(rules: Iterable[PasswordRules]) -> PasswordRules:
    """The combination of several policies that satisfies all of them.

    This is a user's effective policy: the global ``password_policy`` together with the
    ``apps_policy`` of every app they are granted. The largest length, strength and history win;
    for the maximum age the shortest positive value wins (0, never expire, only if all are 0).
    """
    every = list(rules)
    if not every:
        raise ValueError("strictest() needs at least one PasswordRules")
    ages = [r.max_age_days for r in every if r.max_age_days > 0]
    return PasswordRules(
        min_length=max(r.min_length for r in every),
        min_strength=max(r.min_strength for r in every),
        max_age_days=min(ages, default=0),
        history=max(r.history for r in every),
    )


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason a new password is refused: a stable code and a sentence for the user."""

    code: str
    message: str


def check_new_password(
    rules: PasswordRules,
    new: str,
    *,
    username: str,
    email: str | None,
    history_hashes: Sequence[str],
    current_hash: str | None,
) -> list[Violation]:
    """Every reason to refuse ``new`` as the user's next password; an empty list means accepted.

    All violations are reported at once, so the user fixes everything in one go. Codes:
    ``too_long``, ``invalid_characters``, ``too_short``, ``contains_username``,
    ``contains_email``, ``too_weak``, ``same_as_current``, ``reused``. A password that is too long
    or cannot be encoded is reported alone, without hashing.

    ``history_hashes`` are the hashes of earlier passwords, newest first; the first
    ``rules.history`` of them are checked, one argon2 verification each, so call this in a thread.
    """
    new = _normalise(new)
    if len(new) > MAX_PASSWORD_LENGTH:
        return [
            Violation(
                "too_long",
                f"Use at most {MAX_PASSWORD_LENGTH} characters (this one has {len(new)}).",
            )
        ]
    if not _encodable(new):
        return [
            Violation(
                "invalid_characters",
                "This password has characters that cannot be stored. Use letters, digits, "
                "spaces and symbols.",
            )
        ]
    violations: list[Violation] = []
    if len(new) < rules.min_length:
        violations.append(
            Violation(
                "too_short",
                f"Use at least {rules.min_length} characters (this one has {len(new)}).",
            )
        )

    folded = new.casefold()
    local_part = email.partition("@")[0] if email else ""
    if len(username) >= 3 and username.casefold() in folded:
        violations.append(
            Violation("contains_username", "Leave your username out of your password.")
        )
    if len(local_part) >= 3 and local_part.casefold() in folded:
        violations.append(
            Violation("contains_email", "Leave your email address out of your password.")
        )

    if rules.min_strength > 0:
        user_inputs = [username, *([email, local_part] if email else [])]
        score, feedback = _strength(new, user_inputs)
        if score < rules.min_strength:
            violations.append(Violation("too_weak", _weak_message(feedback)))

    if current_hash is not None and verify_password(current_hash, new):
        violations.append(
            Violation("same_as_current", "This is your current password. Choose a new one.")
        )
    elif rules.history > 0 and any(
        verify_password(h, new) for h in history_hashes[: rules.history]
    ):
        last = "password" if rules.history == 1 else f"{rules.history} passwords"
        violations.append(
            Violation(
                "reused",
                "You used this password recently. "
                f"Choose one you have not used in your last {last}.",
            )
        )
    return violations


def _encodable(text: str) -> bool:
    """False for text with lone surrogates, which cannot be hashed (no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _strength(password: str, user_inputs: list[str]) -> tuple[int, dict[str, object]]:
    """zxcvbn's score (0..4) and feedback, on at most ZXCVBN_MAX_CHARS characters."""
    capped_inputs = [text[:ZXCVBN_MAX_CHARS] for text in user_inputs if text]
    with _ZXCVBN_LOCK:
        result = zxcvbn(
            password[:ZXCVBN_MAX_CHARS], user_inputs=capped_inputs, max_length=ZXCVBN_MAX_CHARS
        )
    return int(result["score"]), result["feedback"]


def _weak_message(feedback: dict[str, object]) -> str:
    parts = ["This password is too easy to guess."]
    warning = feedback.get("warning")
    if isinstance(warning, str) and warning:
        parts.append(_sentence(warning))
    suggestions = feedback.get("suggestions")
    if isinstance(suggestions, list) and suggestions:
        parts.extend(_sentence(str(s)) for s in suggestions if s)
    else:
        parts.append("Add another word or two. Uncommon words are better.")
    return " ".join(parts)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def password_age_expired(rules: PasswordRules, changed_at: float, now: float) -> bool:
    """True once ``max_age_days`` have passed since ``changed_at`` (epoch seconds); never if 0."""
    if rules.max_age_days == 0:
        return False
    return now - changed_at >= rules.max_age_days * SECONDS_PER_DAY


def expires_in_days(rules: PasswordRules, changed_at: float, now: float) -> int | None:
    """Whole days left before the password must be changed, rounded up; 0 once expired.

    None when passwords never expire. "1" means it expires within the next 24 hours.
    """
    if rules.max_age_days == 0:
        return None
    remaining = changed_at + rules.max_age_days * SECONDS_PER_DAY - now
    return max(0, math.ceil(remaining / SECONDS_PER_DAY))
