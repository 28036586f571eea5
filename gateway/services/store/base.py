"""The state store: one narrow async protocol, the records it speaks, and its errors.

Everything the gateway keeps between requests and across worker processes (server-side
sessions, login failures and bans, audit chain heads, JWT signing keys, TOTP secrets and
recovery codes, passwords changed at run time, sign-in history, requests per user and hour,
security incidents, trusted login IPs, small settings) goes through `StateStore`.
Callers see only these records and errors: never SQL, rows or driver exceptions.

Rules every implementation follows:

- Times are float UNIX seconds chosen by the caller; the store never reads the clock to decide
  anything (only `schema_version.applied_at` records the wall clock), so tests control time.
- Single-use operations (`totp_claim_step`, `recovery_code_use`) are one conditional UPDATE, so
  they are atomic across coroutines, connections and processes.
- Operations that touch several rows run in one transaction.
- Driver errors are translated: `StoreConflict` for a duplicate key, `StoreUnavailable` when the
  database cannot be reached (closed, locked past the busy timeout, connection refused), and
  `StoreError` for anything else.
- The schema is created and migrated on open from the numbered files in
  `migrations/<dialect>/NNNN_name.sql`; concurrent opens by several workers apply each file once.

To add an implementation: write a class with every method of `StateStore` (structural typing,
no base class needed), add a `migrations/<dialect>/` folder with the same version numbers as the
others, teach `url.parse_store_url` and `open_store` its URL scheme, and add it to the `store`
fixture's parameters in `tests/services/conftest.py`: it is done when the conformance suite in
`tests/services/test_store.py` passes against it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class StoreError(Exception):
    """The state store failed; the message says what it was doing."""


class StoreUnavailable(StoreError):
    """The state store cannot be reached (closed, locked too long, connection refused)."""


class StoreConflict(StoreError):
    """A record with the same key already exists."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A server-side session; `sid_hash` is the hash of the cookie value, never the value."""

    sid_hash: str
    user: str | None
    data: dict[str, Any]
    created_at: float
    last_seen: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest recorded position of one worker's audit chain."""

    chain: str
    seq: int
    hash: str
    at: float


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A JWT signing key; the private part is sealed with the gateway's secret key."""

    kid: str
    algorithm: str
    sealed_private: bytes
    public_jwk: dict[str, Any]
    created_at: float
    retired_at: float | None = None


@dataclass(frozen=True, slots=True)
class TotpRecord:
    """A user's TOTP enrolment; `last_step` is the newest time step accepted (-1: none yet)."""

    user: str
    sealed_secret: bytes
    enrolled_at: float
    last_step: int


@dataclass(frozen=True, slots=True)
class RecoveryCodeRecord:
    """One recovery code, stored as a hash; `used_at` is None while it is still usable."""

    id: int
    code_hash: str
    used_at: float | None


@dataclass(frozen=True, slots=True)
class PasswordRecord:
    """A password state kept at run time, on top of the hash in users.yaml.

    `hash` is None when the user never changed their password at run time (the row then only
    carries `must_change`). `base_hash` is the users.yaml hash that was in force when the change
    was made, so a new hash written by an admin into users.yaml can win over it.
    """

    user: str
    hash: str | None
    base_hash: str | None
    changed_at: float | None
    must_change: bool


@dataclass(frozen=True, slots=True)
class AttemptLimit:
    """How many failed sign-in attempts `subject` ("user:alice", "ip:203.0.113.9") may make."""

    subject: str
    limit: int


@dataclass(frozen=True, slots=True)
class AttemptReservation:
    """The answer to `login_attempt_reserve`.

    Granted: `ids` are the failures recorded ahead of the check (one per subject), `remaining`
    how many more failures the tightest subject allows after this one. Refused: `refused_by`
    names the subject, `banned_until` is set when a ban refused it (else its allowance is used
    up by attempts still in flight).
    """

    ids: tuple[int, ...] = ()
    remaining: int = 0
    refused_by: str | None = None
    banned_until: float | None = None

    @property
    def granted(self) -> bool:
        return self.refused_by is None


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One notification in the outbox (section 7.2); `state` is pending, sent or failed.

    Rows sharing a `coalesce_key` that fall due together go out as one digest mail.
    """

    id: int
    kind: str
    coalesce_key: str | None
    dedupe_key: str | None
    recipients: list[str]
    payload: dict[str, Any]
    created_at: float
    not_before: float
    state: str
    attempts: int
    message_id: str | None
    last_error: str | None
    done_at: float | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What the console, `gateway outbox` and the metrics show about the outbox."""

    pending: int
    failed: int
    sent: int
    oldest_pending_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class SystemMessageRecord:
    """A condition an operator must act on (section 7.3), in force since `since`."""

    key: str
    text: str
    since: float


@dataclass(frozen=True, slots=True)
class SignInRecord:
    """One sign-in attempt that got past the password step (docs/incidents.md).

    `result` is "success" (every step done), "failure" (a wrong second factor) or "banned"
    (refused at the second step by a sign-in ban). `country` is an ISO 3166 alpha-2 code, None
    for addresses that are not globally routable or unknown; `geoip_source` names the database
    that judged it.
    """

    id: int
    user: str
    result: str
    ip: str | None
    country: str | None
    geoip_source: str | None
    user_agent: str
    at: float


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """A security incident: a user signed in from too many countries within the window.

    `state` is "open", "acknowledged" or "resolved"; at most one incident per user is not
    resolved. `countries` are the sorted ISO codes of its evidence.
    """

    id: int
    user: str
    state: str
    countries: tuple[str, ...]
    opened_at: float
    updated_at: float
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentUpdate:
    """What `incident_open_or_extend` did: `opened` a new incident, or added `added` sign-ins
    to the user's active one (`incident` is None when there was none and creating was off)."""

    incident: IncidentRecord | None
    opened: bool
    added: int


def merge_countries(current: Iterable[str], evidence: Iterable[SignInRecord]) -> str:
    """The stored form of an incident's countries: sorted ISO codes joined by commas."""
    return ",".join(sorted(set(current) | {e.country for e in evidence if e.country}))


@dataclass(frozen=True, slots=True)
class TrustedIpRecord:
    """An address or network marked safe at run time for one email domain (`scope`)."""

    id: int
    cidr: str
    scope: str
    description: str
    created_at: float
    created_by: str


@runtime_checkable
class StateStore(Protocol):
    """What the gateway keeps between requests and shares between worker processes."""

    # -- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Release connections; safe to call twice."""

    async def ping(self) -> None:
        """Return if the store answers a trivial query, else raise `StoreUnavailable`."""

    async def schema_version(self) -> int:
        """The newest migration applied to the database."""

    # -- sessions (ids are hashed by the caller) --------------------------------------------

    async def session_get(self, sid_hash: str) -> SessionRecord | None:
        """The session, expired or not (the caller compares `expires_at` with its clock)."""

    async def session_put(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        created_at: float,
        last_seen: float,
        expires_at: float,
    ) -> None:
        """Create or replace the session; `data` must be JSON-serialisable."""

    async def session_update(
        self, sid_hash: str, user: str | None, data: dict[str, Any], last_seen: float
    ) -> bool:
        """Change an existing session only; False when it is gone (revoked, logged out).

        Never recreates a row: a request still in flight when the session was revoked must
        not bring it back.
        """

    async def session_delete(self, sid_hash: str) -> None:
        """Forget the session; unknown ids are ignored."""

    async def sessions_revoke_user(self, user: str) -> int:
        """Delete every session of `user`; returns how many there were."""

    async def sessions_purge_expired(self, now: float) -> int:
        """Delete sessions with `expires_at <= now`; returns how many."""

    # -- login regulation, per subject such as "user:alice" or "ip:203.0.113.9" ----------------

    async def login_failure_add(self, subject: str, at: float) -> None:
        """Record one failed attempt (wrong password, TOTP or recovery code)."""

    async def login_failures_since(self, subject: str, since: float) -> int:
        """How many failures of `subject` happened at or after `since`."""

    async def ban_set(self, subject: str, until: float) -> None:
        """Ban `subject` until the given time (replaces an earlier ban)."""

    async def ban_get(self, subject: str) -> float | None:
        """When the ban of `subject` ends (possibly in the past), or None."""

    async def login_state_clear(self, subject: str) -> None:
        """Forget the failures and the ban of `subject` (successful login, admin unlock)."""

    async def login_failures_purge(self, before: float) -> int:
        """Delete failures before `before` and bans that ended before it; returns rows deleted."""

    async def login_attempt_reserve(
        self, limits: list[AttemptLimit], at: float, since: float
    ) -> AttemptReservation:
        """Reserve one attempt before the credential is checked: atomic across processes.

        Refused when a subject is banned at `at`, or when its failures at or after `since` (and
        after its last ban ended), counting the reserved attempts still in flight, already reach
        its limit. Otherwise one failure per subject is recorded at `at`, ahead of the check, so
        a burst of concurrent guesses gets no more tries than a sequence would.
        """

    async def login_attempt_release(self, ids: tuple[int, ...]) -> None:
        """The reserved attempt succeeded: forget the failures recorded for it."""

    async def login_attempt_failed(
        self, limits: list[AttemptLimit], at: float, since: float, ban_until: float
    ) -> list[str]:
        """The reserved attempt failed (its failures stay). Bans, until `ban_until`, every
        subject not banned yet whose failures (counted as for the reservation) reached its
        limit; returns those subjects."""

    async def login_bans_active(self, now: float) -> dict[str, float]:
        """Every subject banned at `now`, with the end of its ban."""

    # -- audit chain heads -------------------------------------------------------------------

    async def audit_head_put(self, chain: str, seq: int, hash: str, at: float) -> None:
        """Record a chain head; a lower or equal `seq` than the stored one is ignored."""

    async def audit_heads(self) -> list[AuditHead]:
        """Every chain's head, ordered by chain id."""

    # -- JWT signing keys --------------------------------------------------------------------

    async def signing_keys(self) -> list[SigningKeyRecord]:
        """All keys, retired ones included, oldest first."""

    async def signing_key_add(self, record: SigningKeyRecord) -> None:
        """Store a new key; raises `StoreConflict` if the kid exists."""

    async def signing_key_retire(self, kid: str, at: float) -> None:
        """Mark the key retired at `at`; a key already retired keeps its first time."""

    async def signing_key_delete(self, kid: str) -> None:
        """Forget the key; unknown kids are ignored."""

    # -- TOTP --------------------------------------------------------------------------------

    async def totp_get(self, user: str) -> TotpRecord | None:
        """The user's enrolment, or None."""

    async def totp_set(self, user: str, sealed_secret: bytes, enrolled_at: float) -> None:
        """Enrol (or re-enrol) the user; resets `last_step` to -1."""

    async def totp_enroll(self, user: str, sealed_secret: bytes, enrolled_at: float) -> bool:
        """Enrol only if the user has no enrolment; False when one exists (a concurrent
        enrollment won). `last_step` starts at -1."""

    async def totp_delete(self, user: str) -> None:
        """Remove the enrolment and the user's recovery codes."""

    async def totp_claim_step(self, user: str, step: int) -> bool:
        """Accept time step `step` only if it is newer than every step accepted before.

        Atomic across processes: of several callers claiming the same step, exactly one gets
        True. False also when the user is not enrolled.
        """

    # -- recovery codes ----------------------------------------------------------------------

    async def recovery_codes_set(self, user: str, hashes: list[str], at: float) -> None:
        """Replace all of the user's recovery codes with these hashes."""

    async def recovery_codes(self, user: str) -> list[RecoveryCodeRecord]:
        """The user's codes, used ones included, in the order they were set."""

    async def recovery_code_use(self, user: str, id: int, at: float) -> bool:
        """Mark code `id` of `user` used; True only for the one caller that found it unused."""

    # -- passwords changed at run time -------------------------------------------------------

    async def password_get(self, user: str) -> PasswordRecord | None:
        """The run-time password state of the user, or None."""

    async def password_set(
        self, user: str, hash: str, base_hash: str | None, changed_at: float
    ) -> None:
        """Store a new password hash, append it to the history and clear `must_change`."""

    async def password_history(self, user: str, limit: int) -> list[str]:
        """The last `limit` hashes set with `password_set`, newest first."""

    async def password_expire(self, user: str) -> None:
        """Force a change at next login (creates a row with hash None if there is none)."""

    async def password_first_seen(self, user: str, base_hash: str, at: float) -> float:
        """When this users.yaml hash was first seen for the user; records `at` the first time."""

    # -- small settings ----------------------------------------------------------------------

    async def meta_get(self, key: str) -> str | None:
        """A small setting, or None."""

    async def meta_put(self, key: str, value: str) -> None:
        """Create or replace a small setting."""

    # -- notification outbox (section 7.2) ---------------------------------------------------

    async def outbox_add(
        self,
        kind: str,
        recipients: list[str],
        payload: dict[str, Any],
        at: float,
        *,
        coalesce_key: str | None = None,
        coalesce_window: float = 0.0,
        dedupe_key: str | None = None,
    ) -> int | None:
        """Queue a notification; returns its id, or None when `dedupe_key` is already queued.

        With a `coalesce_key`, the first row of a window is due at once and the rows that
        follow within `coalesce_window` of it are due together at the window's end (one
        digest); atomic across processes, so concurrent writers agree on the windows.
        """

    async def outbox_claim(self, owner: str, now: float, lease: float) -> list[OutboxRecord]:
        """Lease the oldest due pending row and every due row sharing its coalesce key to
        `owner` until `now + lease`; [] when nothing is due. Rows whose lease ran out are
        due again. Atomic across processes: a row is leased to one owner at a time."""

    async def outbox_retry(
        self,
        ids: list[int],
        owner: str,
        not_before: float,
        error: str,
        recipients: list[str] | None = None,
    ) -> None:
        """Give leased rows back for another attempt at `not_before` (attempts + 1), optionally
        narrowed to the `recipients` still to reach. Rows leased to another owner stay as
        they are."""

    async def outbox_finish(
        self,
        ids: list[int],
        owner: str,
        state: str,
        at: float,
        message_id: str,
        error: str | None = None,
    ) -> int:
        """Mark leased rows `sent` or `failed` (given up); returns how many were still leased
        to `owner`."""

    async def outbox_list(self, state: str, limit: int) -> list[OutboxRecord]:
        """Rows in `state` (pending: oldest first; sent and failed: newest first)."""

    async def outbox_stats(self) -> OutboxStats:
        """Counts by state, the oldest pending row's time and the newest error of a pending row."""

    async def outbox_purge(self, before: float) -> int:
        """Delete sent and failed rows finished before `before`; returns how many."""

    # -- system messages in force (section 7.3) ----------------------------------------------

    async def system_message_raise(self, key: str, text: str, at: float) -> bool:
        """Record the condition as in force; True only for the caller that found it absent
        (that one mails it), also across processes. An existing row keeps its `since` and
        takes the new text."""

    async def system_message_clear(self, key: str) -> bool:
        """Forget the condition; True if it was in force."""

    async def system_messages(self) -> list[SystemMessageRecord]:
        """Every condition in force, oldest first."""

    # -- sign-in history (docs/incidents.md) ----------------------------------------------

    async def sign_in_add(
        self,
        user: str,
        result: str,
        ip: str | None,
        country: str | None,
        geoip_source: str | None,
        user_agent: str,
        at: float,
    ) -> SignInRecord:
        """Record one sign-in attempt that got past the password step."""

    async def sign_ins(
        self,
        user: str,
        *,
        since: float | None = None,
        result: str | None = None,
        limit: int = 50,
    ) -> list[SignInRecord]:
        """The user's sign-ins, newest first: at or after `since`, of one `result` if given."""

    async def sign_ins_purge(self, before: float) -> int:
        """Delete sign-ins older than `before` (retention); returns how many."""

    # -- requests per user and hour ----------------------------------------------------------

    async def request_counts_add(self, counts: dict[tuple[str, int], int]) -> None:
        """Add counts keyed by (user, hour) (hour = UNIX time // 3600) in one transaction;
        several processes adding to the same row add up."""

    async def request_count(self, user: str, since_hour: int) -> int:
        """The user's requests in the hours from `since_hour` on."""

    async def request_counts_purge(self, before_hour: int) -> int:
        """Delete the rows of hours before `before_hour`; returns how many."""

    # -- security incidents ------------------------------------------------------------------

    async def incident_open_or_extend(
        self, user: str, at: float, evidence: list[SignInRecord], *, create: bool = True
    ) -> IncidentUpdate:
        """Open an incident for `user` with this evidence, or add it to the user's incident
        that is not resolved yet (its countries grow with the evidence's).

        Atomic across processes: of concurrent callers for one user exactly one opens (a
        unique partial index, not a read-then-write). With `create=False` only an existing
        incident is extended. Evidence already attached is not counted twice.
        """

    async def incident_get(self, id: int) -> IncidentRecord | None:
        """The incident, or None."""

    async def incidents(
        self, *, state: str | None = None, user: str | None = None, limit: int = 100
    ) -> list[IncidentRecord]:
        """Incidents newest first, optionally of one state and/or one user."""

    async def incident_sign_ins(self, id: int) -> list[SignInRecord]:
        """The sign-ins attached to the incident as evidence, oldest first."""

    async def incident_counts(self) -> dict[str, int]:
        """How many incidents there are in each state (states with none are absent)."""

    async def incident_acknowledge(self, id: int, by: str, at: float) -> bool:
        """open -> acknowledged; False when the incident is not open."""

    async def incident_resolve(self, id: int, by: str, at: float, note: str) -> bool:
        """open or acknowledged -> resolved with a note; False when it is not active."""

    async def incidents_purge(self, resolved_before: float) -> int:
        """Delete incidents resolved before the given time, with their evidence."""

    # -- trusted login IPs (run-time entries; policy entries live in the snapshot) ------------

    async def trusted_ip_add(
        self, cidr: str, scope: str, description: str, by: str, at: float
    ) -> TrustedIpRecord:
        """Store an entry (validated by the caller); `StoreConflict` if the scope has it."""

    async def trusted_ips(self, scope: str | None = None) -> list[TrustedIpRecord]:
        """Entries of one scope (or all), ordered by scope, then id."""

    async def trusted_ip_get(self, id: int) -> TrustedIpRecord | None:
        """The entry, or None."""

    async def trusted_ip_remove(self, id: int) -> TrustedIpRecord | None:
        """Delete the entry; returns what was deleted, None if there was none."""
