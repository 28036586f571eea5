"""Password hashing and the password policy."""

from __future__ import annotations

import threading

import pytest

from gateway.services import passwords
from gateway.services.passwords import PasswordRules, Violation

STRONG = "violet-lantern-orbit-kettle"
DAY = 86_400.0


@pytest.fixture(scope="module")
def strong_hash() -> str:
    return passwords.hash_password(STRONG)


def codes(violations: list[Violation]) -> list[str]:
    return [v.code for v in violations]


def check(new: str, rules: PasswordRules | None = None, **kw: object) -> list[Violation]:
    args: dict[str, object] = {
        "username": "bob",
        "email": None,
        "history_hashes": [],
        "current_hash": None,
    }
    args.update(kw)
    return passwords.check_new_password(rules or PasswordRules(), new, **args)  # type: ignore[arg-type]


class TestHashing:
    """argon2id hashes verify the right password and nothing else, and never raise."""

    def test_round_trip(self, strong_hash: str) -> None:
        """The hash is argon2id with the RFC 9106 low-memory parameters and verifies."""
        assert strong_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert passwords.verify_password(strong_hash, STRONG)
        assert not passwords.verify_password(strong_hash, STRONG + "x")
        assert not passwords.verify_password(strong_hash, "")

    def test_salted(self, strong_hash: str) -> None:
        """Hashing the same password twice gives different hashes."""
        assert passwords.hash_password(STRONG) != strong_hash

    def test_unicode_normalised(self) -> None:
        """'é' as one code point and as 'e' + combining accent are the same password."""
        composed, decomposed = "caf\u00e9-lantern-orbit", "cafe\u0301-lantern-orbit"
        assert passwords.verify_password(passwords.hash_password(composed), decomposed)

    def test_not_stripped(self, strong_hash: str) -> None:
        """Leading or trailing spaces are part of the password."""
        assert not passwords.verify_password(strong_hash, f" {STRONG}")
        assert not passwords.verify_password(strong_hash, f"{STRONG} ")

    @pytest.mark.parametrize(
        "bad_hash",
        [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=65536,t=3,p=4$AAAA$BBBB",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            "h\u00e9llo",
        ],
    )
    def test_invalid_hash_never_raises(self, bad_hash: str) -> None:
        """A damaged or foreign hash is a mismatch, for verify, the dummy path and rehash."""
        assert passwords.verify_password(bad_hash, STRONG) is False
        assert passwords.verify_password_or_dummy(bad_hash, STRONG) is False
        assert isinstance(passwords.needs_rehash(bad_hash), bool)

    def test_unencodable_password_never_raises(self, strong_hash: str) -> None:
        """A lone surrogate (no UTF-8 form) is a mismatch, not an exception."""
        assert passwords.verify_password(strong_hash, "\ud800abc") is False
        assert passwords.verify_password_or_dummy(None, "\ud800abc") is False

    def test_too_long_refused(self) -> None:
        """A password over the maximum length never verifies, even against its own hash."""
        long = "a" * (passwords.MAX_PASSWORD_LENGTH + 1)
        assert not passwords.verify_password(passwords.hash_password(long), long)

    def test_needs_rehash(self, strong_hash: str) -> None:
        """Current parameters need no rehash; weaker old ones do."""
        from argon2 import PasswordHasher

        old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(STRONG)
        assert passwords.needs_rehash(strong_hash) is False
        assert passwords.needs_rehash(old) is True
        assert passwords.verify_password(old, STRONG)


class TestDummyVerification:
    """An unknown user costs one argon2 verification, like a known one, and never succeeds."""

    def test_known_user(self, strong_hash: str) -> None:
        """With a hash it behaves like verify_password."""
        assert passwords.verify_password_or_dummy(strong_hash, STRONG) is True
        assert passwords.verify_password_or_dummy(strong_hash, "wrong") is False

    def test_unknown_user(self) -> None:
        """Without a hash it is always False, whatever the password."""
        assert passwords.verify_password_or_dummy(None, STRONG) is False
        assert passwords.verify_password_or_dummy(None, "") is False

    def test_dummy_hash_is_real_argon2(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The unknown-user path really runs an argon2 verification with the same parameters."""
        calls: list[str] = []
        real = passwords._HASHER

        class Spy:
            def hash(self, password: str) -> str:
                return real.hash(password)

            def verify(self, hash_: str, password: str) -> bool:
                calls.append(hash_)
                return real.verify(hash_, password)

        monkeypatch.setattr(passwords, "_HASHER", Spy())
        assert passwords.verify_password_or_dummy(None, STRONG) is False
        assert passwords.verify_password_or_dummy("garbage", STRONG) is False
        dummy = passwords._dummy_hash()
        assert calls == [dummy, "garbage", dummy]  # an invalid stored hash costs the same
        assert calls[0].startswith("$argon2id$v=19$m=65536,t=3,p=4$")


class TestPasswordRules:
    """Rules are frozen values with the contract's defaults and checked bounds."""

    def test_defaults(self) -> None:
        """12 characters, strength 3, no expiry, 5 remembered."""
        assert PasswordRules() == PasswordRules(
            min_length=12, min_strength=3, max_age_days=0, history=5
        )

    def test_frozen(self) -> None:
        """Rules cannot be changed after they are built."""
        with pytest.raises(AttributeError):
            PasswordRules().min_length = 3  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"min_length": -1}, "min_length"),
            ({"min_strength": 5}, "min_strength"),
            ({"min_strength": -1}, "min_strength"),
            ({"max_age_days": -1}, "max_age_days"),
            ({"history": -1}, "history"),
        ],
    )
    def test_bounds(self, kwargs: dict[str, int], field: str) -> None:
        """Out-of-range values are refused with the field's name."""
        with pytest.raises(ValueError, match=field):
            PasswordRules(**kwargs)


class TestStrictest:
    """The effective policy of a user is the strictest of the global and app policies."""

    @pytest.mark.parametrize(
        ("rules", "expected"),
        [
            ([PasswordRules()], PasswordRules()),
            (
                [PasswordRules(max_age_days=45), PasswordRules(max_age_days=30)],
                PasswordRules(max_age_days=30),
            ),
            (
                [PasswordRules(max_age_days=0), PasswordRules(max_age_days=30)],
                PasswordRules(max_age_days=30),
            ),
            (
                [PasswordRules(max_age_days=90), PasswordRules(max_age_days=0)],
                PasswordRules(max_age_days=90),
            ),
            ([PasswordRules(max_age_days=0)] * 3, PasswordRules(max_age_days=0)),
            (
                [
                    PasswordRules(min_length=12, min_strength=3, max_age_days=45, history=5),
                    PasswordRules(min_length=16, min_strength=2, max_age_days=0, history=3),
                    PasswordRules(min_length=10, min_strength=4, max_age_days=60, history=10),
                ],
                PasswordRules(min_length=16, min_strength=4, max_age_days=45, history=10),
            ),
            (
                [PasswordRules(min_strength=0, history=0), PasswordRules(min_strength=1)],
                PasswordRules(min_strength=1, history=5),
            ),
        ],
    )
    def test_combinations(self, rules: list[PasswordRules], expected: PasswordRules) -> None:
        """Max of length/strength/history; smallest positive max_age_days, 0 only if all 0."""
        assert passwords.strictest(rules) == expected
        assert passwords.strictest(iter(rules)) == expected
        assert passwords.strictest(reversed(rules)) == expected

    def test_empty(self) -> None:
        """There is always a global policy, so no rules at all is a programming error."""
        with pytest.raises(ValueError, match="at least one"):
            passwords.strictest([])


class TestCheckNewPassword:
    """Every reason to refuse a new password, in words people understand."""

    def test_strong_passphrase_accepted(self, strong_hash: str) -> None:
        """A long passphrase of uncommon words passes every rule."""
        other = passwords.hash_password("some-older-password-1")
        assert check("marmalade-quarry-velvet-92", history_hashes=[other]) == []
        assert check(STRONG, current_hash=None, history_hashes=[]) == []

    def test_too_short(self) -> None:
        """The message names the minimum and the actual length."""
        assert check("Xq7#vTz9!", rules=PasswordRules(min_strength=0)) == [
            Violation("too_short", "Use at least 12 characters (this one has 9).")
        ]

    def test_length_counts_characters(self) -> None:
        """Length is in characters (after NFKC), not bytes."""
        assert "too_short" not in codes(check("ééééééééééé\u00e9", PasswordRules(min_strength=0)))
        assert "too_short" in codes(check("éééééééééé\u00e9", PasswordRules(min_strength=0)))

    def test_too_long(self) -> None:
        """Over 1024 characters is refused alone, before any hashing."""
        violations = check("a" * 1500, current_hash="$argon2id$would-be-slow")
        assert violations == [
            Violation("too_long", "Use at most 1024 characters (this one has 1500).")
        ]
        assert check("q" * 1024, rules=PasswordRules(min_strength=0)) == []

    def test_long_input_strength_is_bounded(self) -> None:
        """zxcvbn only sees the first 100 characters, so a 1000-character password is quick."""
        assert check("fjord-gravel-" * 70 + "x", rules=PasswordRules()) == []

    def test_weak(self) -> None:
        """A common password is too weak, with zxcvbn's warning and suggestion in the message."""
        violations = check("password123456")
        assert codes(violations) == ["too_weak"]
        assert violations[0].message == (
            "This password is too easy to guess. This is similar to a commonly used password. "
            "Add another word or two. Uncommon words are better."
        )

    def test_weak_respects_min_strength(self) -> None:
        """min_strength 0 switches the strength check off; 4 is stricter than 3."""
        assert check("password123456", rules=PasswordRules(min_strength=0)) == []
        assert "too_weak" in codes(check("alicewonderland1", rules=PasswordRules(min_strength=4)))

    def test_contains_username(self) -> None:
        """Strong on its own, weak with the username as a zxcvbn input, and named as such."""
        assert check("alicewonderland1", username="bob") == []
        violations = check("alicewonderland1", username="AliceWonderland")
        assert codes(violations) == ["contains_username", "too_weak"]
        assert violations[0].message == "Leave your username out of your password."

    def test_contains_email(self) -> None:
        """The email and its local part are zxcvbn inputs and the local part is refused too."""
        violations = check("alicewonderland1", username="awl", email="alicewonderland@example.com")
        assert codes(violations) == ["contains_email", "too_weak"]
        assert violations[0].message == "Leave your email address out of your password."

    def test_contains_email_local_part_even_if_strong(self) -> None:
        """zxcvbn alone would let 'Alice.Smith.2024!' through; the explicit check does not."""
        assert check("Alice.Smith.2024!") == []
        violations = check("Alice.Smith.2024!", email="alice.smith@example.com")
        assert codes(violations) == ["contains_email"]

    def test_short_usernames_not_searched(self) -> None:
        """A two-letter username would match too much; zxcvbn still considers it."""
        assert check("marmalade-quarry-velvet-92", username="ma") == []

    def test_same_as_current(self, strong_hash: str) -> None:
        """Choosing the current password again is named as such, not as reuse."""
        violations = check(STRONG, current_hash=strong_hash, history_hashes=[strong_hash])
        assert violations == [
            Violation("same_as_current", "This is your current password. Choose a new one.")
        ]

    def test_reused_from_history(self, strong_hash: str) -> None:
        """A password among the last N (real argon2 hashes, newest first) is refused."""
        current = passwords.hash_password("current-password-quartz-7")
        older = [passwords.hash_password(f"older-password-{i}-quartz") for i in range(2)]
        history = [*older, strong_hash]
        violations = check(STRONG, current_hash=current, history_hashes=history)
        assert violations == [
            Violation(
                "reused",
                "You used this password recently. "
                "Choose one you have not used in your last 5 passwords.",
            )
        ]

    def test_history_depth(self, strong_hash: str) -> None:
        """Only the first `history` hashes count; history 0 switches reuse checks off."""
        other = passwords.hash_password("older-password-x-quartz")
        history = [other, strong_hash]
        assert check(STRONG, rules=PasswordRules(history=1), history_hashes=history) == []
        assert check(STRONG, rules=PasswordRules(history=0), history_hashes=[strong_hash]) == []
        one = check(STRONG, rules=PasswordRules(history=1), history_hashes=[strong_hash])
        assert one[0].message.endswith("in your last password.")

    def test_invalid_history_hash_ignored(self) -> None:
        """A damaged hash in the history does not break the check."""
        assert check(STRONG, history_hashes=["garbage"], current_hash="garbage") == []

    def test_all_violations_at_once(self, strong_hash: str) -> None:
        """Short, containing the username, weak and current: all reported together."""
        short_hash = passwords.hash_password("bobby1")
        violations = check("bobby1", username="bobby", current_hash=short_hash)
        assert codes(violations) == [
            "too_short",
            "contains_username",
            "too_weak",
            "same_as_current",
        ]

    def test_unencodable(self) -> None:
        """Text that cannot be stored is refused alone."""
        assert codes(check("abc\ud800defghijklmn")) == ["invalid_characters"]

    def test_thread_safe_user_inputs(self) -> None:
        """Checks running in threads never see each other's user names (zxcvbn keeps a global).

        Without the lock around zxcvbn this fails within a few hundred rounds.
        """
        wrong: list[tuple[str, list[str]]] = []
        expected = {"alicewonderland": ["contains_username", "too_weak"], "carol": []}

        def run(username: str) -> None:
            for _ in range(300):
                found = codes(check("alicewonderland1", username=username))
                if found != expected[username]:
                    wrong.append((username, found))

        threads = [threading.Thread(target=run, args=(name,)) for name in expected]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wrong == []


class TestPasswordAge:
    """A password expires max_age_days after it was changed; 0 means never."""

    RULES = PasswordRules(max_age_days=45)
    CHANGED = 1_700_000_000.0

    @pytest.mark.parametrize(
        ("elapsed", "expired", "days_left"),
        [
            (0.0, False, 45),
            (1.0, False, 45),
            (DAY, False, 44),
            (44 * DAY, False, 1),
            (45 * DAY - 1, False, 1),
            (45 * DAY, True, 0),
            (45 * DAY + 1, True, 0),
            (400 * DAY, True, 0),
        ],
    )
    def test_edges(self, elapsed: float, expired: bool, days_left: int) -> None:
        """Expired exactly at max_age_days; days left are rounded up, 0 once expired."""
        now = self.CHANGED + elapsed
        assert passwords.password_age_expired(self.RULES, self.CHANGED, now) is expired
        assert passwords.expires_in_days(self.RULES, self.CHANGED, now) == days_left

    def test_never(self) -> None:
        """max_age_days 0: never expired, no expiry date."""
        rules = PasswordRules(max_age_days=0)
        far = self.CHANGED + 10_000 * DAY
        assert passwords.password_age_expired(rules, self.CHANGED, far) is False
        assert passwords.expires_in_days(rules, self.CHANGED, far) is None

    def test_clock_behind(self) -> None:
        """A change time in the future (clock skew) is not expired."""
        now = self.CHANGED - DAY
        assert passwords.password_age_expired(self.RULES, self.CHANGED, now) is False
        assert passwords.expires_in_days(self.RULES, self.CHANGED, now) == 46
