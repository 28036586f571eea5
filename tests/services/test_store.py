"""The StateStore conformance suite: every test runs against every implementation.

The `store` and `store_backend` fixtures (tests/services/conftest.py) are parametrized over
SQLite (a file in tmp_path) and PostgreSQL (a fresh schema). A new implementation is done when
this file passes against it unchanged. Times are plain floats chosen here: the store never reads
the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from gateway.services.store import (
    AuditHead,
    PasswordRecord,
    RecoveryCodeRecord,
    SessionRecord,
    SigningKeyRecord,
    StateStore,
    StoreConflict,
    StoreError,
    StoreUnavailable,
    TotpRecord,
    open_store,
    parse_store_url,
)
from gateway.services.store.postgres import PostgresStore
from gateway.services.store.schema import (
    Migration,
    load_migrations,
    pending_migrations,
    split_sqlite_script,
)
from gateway.services.store.sqlite import SqliteStore
from gateway.services.store.url import PostgresTarget, SqliteTarget, redact

from .conftest import StoreBackend

T0 = 1_700_000_000.0
REPO_ROOT = Path(__file__).resolve().parents[2]
NEWEST_VERSION = load_migrations("sqlite")[-1].version


class TestMigrationFiles:
    """The migration files of every dialect are numbered alike and split cleanly."""

    def test_dialects_have_the_same_versions(self) -> None:
        sqlite = [m.version for m in load_migrations("sqlite")]
        postgres = [m.version for m in load_migrations("postgres")]
        assert sqlite == postgres == sorted(set(sqlite))

    def test_versions_may_have_gaps_and_a_late_lower_number_is_still_applied(self) -> None:
        first, third = Migration(1, "0001_a.sql", ""), Migration(3, "0003_c.sql", "")
        both = (first, third)
        assert pending_migrations(both, set(), "db") == [first, third]
        assert pending_migrations(both, {1}, "db") == [third]
        assert pending_migrations(both, {3}, "db") == [first]  # 0001 merged after 0003 ran
        assert pending_migrations(both, {1, 3}, "db") == []
        with pytest.raises(StoreError, match="schema version 7, newer than this gateway knows"):
            pending_migrations(both, {1, 3, 7}, "db")

    def test_sqlite_script_splits_into_statements(self) -> None:
        script = "-- heading\nCREATE TABLE a (x TEXT);\n\nCREATE TABLE b (\n  y TEXT\n);\n-- tail\n"
        assert split_sqlite_script(script) == [
            "-- heading\nCREATE TABLE a (x TEXT);",
            "CREATE TABLE b (\n  y TEXT\n);",
        ]

    def test_sqlite_script_with_an_unfinished_statement_is_refused(self) -> None:
        with pytest.raises(RuntimeError, match="incomplete SQL statement"):
            split_sqlite_script("CREATE TABLE a (x TEXT);\nCREATE TABLE b (y TEXT)\n")


class TestOpen:
    """Opening creates the schema once; re-opening and concurrent opens change nothing."""

    async def test_fresh_store_is_at_the_newest_version(self, store: StateStore) -> None:
        assert await store.schema_version() == NEWEST_VERSION
        await store.ping()

    async def test_reopen_is_idempotent_and_keeps_data(self, store_backend: StoreBackend) -> None:
        first = await store_backend.open()
        await first.meta_put("k", "v")
        await first.close()
        second = await store_backend.open()
        assert await second.schema_version() == NEWEST_VERSION
        assert await second.meta_get("k") == "v"

    async def test_concurrent_opens_on_a_fresh_database_migrate_once(
        self, store_backend: StoreBackend
    ) -> None:
        stores = await asyncio.gather(*(store_backend.open() for _ in range(4)))
        assert [await s.schema_version() for s in stores] == [NEWEST_VERSION] * 4
        await stores[0].meta_put("seen", "by all")
        assert [await s.meta_get("seen") for s in stores] == ["by all"] * 4

    async def test_implements_the_whole_protocol(self, store: StateStore) -> None:
        assert isinstance(store, StateStore)

    async def test_close_twice_then_ping_raises_unavailable(self, store: StateStore) -> None:
        await store.close()
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.meta_get("k")


class TestSessions:
    """Server-side sessions: upsert, read, delete, revoke per user, purge by expiry."""

    async def test_put_then_get_round_trips_every_field(self, store: StateStore) -> None:
        data = {"csrf": "abc", "step": "totp", "n": 3, "nested": {"ok": True}, "ü": "ß"}
        await store.session_put("s1", "alice", data, T0, T0 + 1, T0 + 3600)
        assert await store.session_get("s1") == SessionRecord(
            "s1", "alice", data, T0, T0 + 1, T0 + 3600
        )

    async def test_unknown_session_is_none(self, store: StateStore) -> None:
        assert await store.session_get("nope") is None

    async def test_put_replaces_and_allows_anonymous(self, store: StateStore) -> None:
        await store.session_put("s1", None, {"csrf": "x"}, T0, T0, T0 + 60)
        await store.session_put("s1", "alice", {}, T0, T0 + 30, T0 + 90)
        assert await store.session_get("s1") == SessionRecord(
            "s1", "alice", {}, T0, T0 + 30, T0 + 90
        )

    async def test_expired_session_is_still_returned_until_purged(self, store: StateStore) -> None:
        await store.session_put("old", "alice", {}, T0, T0, T0 + 10)
        record = await store.session_get("old")
        assert record is not None and record.expires_at < T0 + 100

    async def test_update_changes_only_existing_sessions(self, store: StateStore) -> None:
        await store.session_put("s1", "alice", {"a": 1}, T0, T0, T0 + 60)
        assert await store.session_update("s1", "alice", {"a": 2}, T0 + 5)
        assert await store.session_get("s1") == SessionRecord(
            "s1", "alice", {"a": 2}, T0, T0 + 5, T0 + 60
        )
        await store.session_delete("s1")
        assert not await store.session_update("s1", "alice", {"a": 3}, T0 + 9)
        assert await store.session_get("s1") is None  # a revoked session stays revoked

    async def test_delete(self, store: StateStore) -> None:
        await store.session_put("s1", "alice", {}, T0, T0, T0 + 60)
        await store.session_delete("s1")
        await store.session_delete("s1")  # unknown ids are ignored
        assert await store.session_get("s1") is None

    async def test_revoke_user_deletes_only_their_sessions(self, store: StateStore) -> None:
        for sid, user in [("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("n1", None)]:
            await store.session_put(sid, user, {}, T0, T0, T0 + 60)
        assert await store.sessions_revoke_user("alice") == 2
        assert await store.sessions_revoke_user("alice") == 0
        assert await store.session_get("a1") is None
        assert await store.session_get("a2") is None
        assert await store.session_get("b1") is not None
        assert await store.session_get("n1") is not None

    async def test_purge_expired_removes_sessions_at_or_before_now(self, store: StateStore) -> None:
        await store.session_put("gone", "alice", {}, T0, T0, T0 + 10)
        await store.session_put("edge", "alice", {}, T0, T0, T0 + 20)
        await store.session_put("kept", "alice", {}, T0, T0, T0 + 21)
        assert await store.sessions_purge_expired(T0 + 20) == 2
        assert await store.session_get("gone") is None
        assert await store.session_get("edge") is None
        assert await store.session_get("kept") is not None


class TestLoginRegulation:
    """Failures counted per subject in a window, bans, clearing and purging."""

    async def test_failures_are_counted_per_subject_since_a_time(self, store: StateStore) -> None:
        for at in (T0, T0 + 10, T0 + 20):
            await store.login_failure_add("user:alice", at)
        await store.login_failure_add("ip:203.0.113.9", T0 + 20)
        assert await store.login_failures_since("user:alice", T0) == 3
        assert await store.login_failures_since("user:alice", T0 + 10) == 2
        assert await store.login_failures_since("user:alice", T0 + 21) == 0
        assert await store.login_failures_since("ip:203.0.113.9", T0) == 1
        assert await store.login_failures_since("user:bob", T0) == 0

    async def test_ban_set_get_replace(self, store: StateStore) -> None:
        assert await store.ban_get("ip:203.0.113.9") is None
        await store.ban_set("ip:203.0.113.9", T0 + 900)
        assert await store.ban_get("ip:203.0.113.9") == T0 + 900
        await store.ban_set("ip:203.0.113.9", T0 + 60)
        assert await store.ban_get("ip:203.0.113.9") == T0 + 60

    async def test_whole_second_times_come_back_as_floats(self, store: StateStore) -> None:
        await store.ban_set("user:alice", 1_700_000_900)
        until = await store.ban_get("user:alice")
        assert until == 1_700_000_900.0 and isinstance(until, float)

    async def test_clear_forgets_failures_and_ban_of_that_subject_only(
        self, store: StateStore
    ) -> None:
        for subject in ("user:alice", "user:bob"):
            await store.login_failure_add(subject, T0)
            await store.ban_set(subject, T0 + 900)
        await store.login_state_clear("user:alice")
        assert await store.login_failures_since("user:alice", 0) == 0
        assert await store.ban_get("user:alice") is None
        assert await store.login_failures_since("user:bob", 0) == 1
        assert await store.ban_get("user:bob") == T0 + 900

    async def test_purge_removes_old_failures_and_ended_bans(self, store: StateStore) -> None:
        await store.login_failure_add("user:alice", T0)
        await store.login_failure_add("user:alice", T0 + 5)
        await store.login_failure_add("user:alice", T0 + 100)
        await store.ban_set("user:alice", T0 + 50)
        await store.ban_set("user:bob", T0 + 500)
        assert await store.login_failures_purge(T0 + 100) == 3
        assert await store.login_failures_since("user:alice", 0) == 1
        assert await store.ban_get("user:alice") is None
        assert await store.ban_get("user:bob") == T0 + 500


class TestAuditHeads:
    """Chain heads: one per chain, the highest sequence number wins."""

    async def test_highest_seq_is_kept_per_chain(self, store: StateStore) -> None:
        assert await store.audit_heads() == []
        await store.audit_head_put("w2", 5, "h5", T0)
        await store.audit_head_put("w1", 10, "h10", T0)
        await store.audit_head_put("w1", 12, "h12", T0 + 1)
        await store.audit_head_put("w1", 11, "h11", T0 + 2)  # late writer: ignored
        await store.audit_head_put("w1", 12, "other", T0 + 3)  # same seq: ignored
        assert await store.audit_heads() == [
            AuditHead("w1", 12, "h12", T0 + 1),
            AuditHead("w2", 5, "h5", T0),
        ]

    async def test_large_sequence_numbers(self, store: StateStore) -> None:
        await store.audit_head_put("w1", 2**40, "h", T0)
        assert (await store.audit_heads())[0].seq == 2**40


def _key(kid: str, created_at: float, retired_at: float | None = None) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=kid,
        algorithm="EdDSA",
        sealed_private=b"\x00sealed\xff" + kid.encode(),
        public_jwk={"kty": "OKP", "crv": "Ed25519", "x": "abc", "kid": kid},
        created_at=created_at,
        retired_at=retired_at,
    )


class TestSigningKeys:
    """JWT signing keys: add, list oldest first, retire once, delete."""

    async def test_add_and_list_oldest_first(self, store: StateStore) -> None:
        assert await store.signing_keys() == []
        await store.signing_key_add(_key("k2", T0 + 10))
        await store.signing_key_add(_key("k1", T0, retired_at=T0 + 5))
        assert await store.signing_keys() == [_key("k1", T0, T0 + 5), _key("k2", T0 + 10)]

    async def test_duplicate_kid_is_a_conflict(self, store: StateStore) -> None:
        await store.signing_key_add(_key("k1", T0))
        with pytest.raises(StoreConflict):
            await store.signing_key_add(_key("k1", T0 + 1))
        assert await store.signing_keys() == [_key("k1", T0)]

    async def test_retire_keeps_the_first_retirement_time(self, store: StateStore) -> None:
        await store.signing_key_add(_key("k1", T0))
        await store.signing_key_retire("k1", T0 + 100)
        await store.signing_key_retire("k1", T0 + 200)
        await store.signing_key_retire("unknown", T0)
        assert await store.signing_keys() == [_key("k1", T0, T0 + 100)]

    async def test_delete(self, store: StateStore) -> None:
        await store.signing_key_add(_key("k1", T0))
        await store.signing_key_add(_key("k2", T0 + 1))
        await store.signing_key_delete("k1")
        await store.signing_key_delete("unknown")
        assert [k.kid for k in await store.signing_keys()] == ["k2"]


class TestTotp:
    """TOTP enrolment and the compare-and-set of the last accepted time step."""

    async def test_set_get_and_replace_resets_last_step(self, store: StateStore) -> None:
        assert await store.totp_get("alice") is None
        await store.totp_set("alice", b"\x01sealed", T0)
        assert await store.totp_get("alice") == TotpRecord("alice", b"\x01sealed", T0, -1)
        assert await store.totp_claim_step("alice", 100)
        await store.totp_set("alice", b"\x02new", T0 + 5)
        assert await store.totp_get("alice") == TotpRecord("alice", b"\x02new", T0 + 5, -1)

    async def test_enroll_is_insert_only(self, store: StateStore) -> None:
        assert await store.totp_enroll("alice", b"first", T0)
        assert not await store.totp_enroll("alice", b"second", T0 + 1)
        assert await store.totp_get("alice") == TotpRecord("alice", b"first", T0, -1)
        await store.totp_delete("alice")
        assert await store.totp_enroll("alice", b"third", T0 + 2)

    async def test_claim_step_accepts_only_newer_steps(self, store: StateStore) -> None:
        await store.totp_set("alice", b"s", T0)
        assert await store.totp_claim_step("alice", 0)
        assert not await store.totp_claim_step("alice", 0)
        assert await store.totp_claim_step("alice", 56_666_667)
        assert not await store.totp_claim_step("alice", 56_666_666)
        assert not await store.totp_claim_step("alice", 56_666_667)
        assert await store.totp_claim_step("alice", 56_666_668)
        record = await store.totp_get("alice")
        assert record is not None and record.last_step == 56_666_668

    async def test_claim_step_of_unenrolled_user_is_false(self, store: StateStore) -> None:
        assert not await store.totp_claim_step("nobody", 1)

    async def test_concurrent_claims_of_one_step_have_one_winner(self, store: StateStore) -> None:
        await store.totp_set("alice", b"s", T0)
        results = await asyncio.gather(*(store.totp_claim_step("alice", 7) for _ in range(20)))
        assert results.count(True) == 1

    async def test_delete_removes_enrolment_and_recovery_codes(self, store: StateStore) -> None:
        await store.totp_set("alice", b"s", T0)
        await store.recovery_codes_set("alice", ["h1", "h2"], T0)
        await store.totp_set("bob", b"s", T0)
        await store.recovery_codes_set("bob", ["h3"], T0)
        await store.totp_delete("alice")
        assert await store.totp_get("alice") is None
        assert await store.recovery_codes("alice") == []
        assert await store.totp_get("bob") is not None
        assert [c.code_hash for c in await store.recovery_codes("bob")] == ["h3"]


class TestRecoveryCodes:
    """Recovery codes: replaced as a set, listed in order, each usable once."""

    async def test_set_lists_codes_in_order_unused(self, store: StateStore) -> None:
        await store.recovery_codes_set("alice", ["h1", "h2", "h3"], T0)
        codes = await store.recovery_codes("alice")
        assert [(c.code_hash, c.used_at) for c in codes] == [
            ("h1", None),
            ("h2", None),
            ("h3", None),
        ]
        assert len({c.id for c in codes}) == 3
        assert all(isinstance(c, RecoveryCodeRecord) and isinstance(c.id, int) for c in codes)

    async def test_set_replaces_all_codes(self, store: StateStore) -> None:
        await store.recovery_codes_set("alice", ["h1", "h2"], T0)
        await store.recovery_codes_set("alice", ["h9"], T0 + 1)
        assert [c.code_hash for c in await store.recovery_codes("alice")] == ["h9"]
        await store.recovery_codes_set("alice", [], T0 + 2)
        assert await store.recovery_codes("alice") == []

    async def test_a_code_is_used_once(self, store: StateStore) -> None:
        await store.recovery_codes_set("alice", ["h1", "h2"], T0)
        first, second = await store.recovery_codes("alice")
        assert await store.recovery_code_use("alice", first.id, T0 + 10)
        assert not await store.recovery_code_use("alice", first.id, T0 + 20)
        assert await store.recovery_codes("alice") == [
            RecoveryCodeRecord(first.id, "h1", T0 + 10),
            RecoveryCodeRecord(second.id, "h2", None),
        ]

    async def test_a_code_of_another_user_cannot_be_used(self, store: StateStore) -> None:
        await store.recovery_codes_set("alice", ["h1"], T0)
        (code,) = await store.recovery_codes("alice")
        assert not await store.recovery_code_use("mallory", code.id, T0)
        assert not await store.recovery_code_use("alice", code.id + 1000, T0)
        assert (await store.recovery_codes("alice"))[0].used_at is None

    async def test_concurrent_uses_of_one_code_have_one_winner(self, store: StateStore) -> None:
        await store.recovery_codes_set("alice", ["h1"], T0)
        (code,) = await store.recovery_codes("alice")
        results = await asyncio.gather(
            *(store.recovery_code_use("alice", code.id, T0 + i) for i in range(20))
        )
        assert results.count(True) == 1


class TestPasswords:
    """Run-time passwords: set with history, forced expiry, first sighting of YAML hashes."""

    async def test_set_and_get(self, store: StateStore) -> None:
        assert await store.password_get("alice") is None
        await store.password_set("alice", "$argon2id$new", "$argon2id$yaml", T0)
        assert await store.password_get("alice") == PasswordRecord(
            "alice", "$argon2id$new", "$argon2id$yaml", T0, False
        )

    async def test_history_is_newest_first_and_limited(self, store: StateStore) -> None:
        for i in range(4):
            await store.password_set("alice", f"h{i}", "base", T0 + i)
        await store.password_set("bob", "bob-h", "base", T0)
        assert await store.password_history("alice", 10) == ["h3", "h2", "h1", "h0"]
        assert await store.password_history("alice", 2) == ["h3", "h2"]
        assert await store.password_history("alice", 0) == []
        assert await store.password_history("carol", 5) == []

    async def test_history_orders_equal_times_by_insertion(self, store: StateStore) -> None:
        await store.password_set("alice", "first", None, T0)
        await store.password_set("alice", "second", None, T0)
        assert await store.password_history("alice", 5) == ["second", "first"]

    async def test_expire_creates_a_row_without_a_hash(self, store: StateStore) -> None:
        await store.password_expire("alice")
        assert await store.password_get("alice") == PasswordRecord("alice", None, None, None, True)

    async def test_expire_keeps_the_hash_and_set_clears_must_change(
        self, store: StateStore
    ) -> None:
        await store.password_set("alice", "h1", "base", T0)
        await store.password_expire("alice")
        assert await store.password_get("alice") == PasswordRecord("alice", "h1", "base", T0, True)
        await store.password_set("alice", "h2", "base", T0 + 1)
        assert await store.password_get("alice") == PasswordRecord(
            "alice", "h2", "base", T0 + 1, False
        )

    async def test_first_seen_records_the_first_time_only(self, store: StateStore) -> None:
        assert await store.password_first_seen("alice", "yaml-1", T0) == T0
        assert await store.password_first_seen("alice", "yaml-1", T0 + 50) == T0
        assert await store.password_first_seen("alice", "yaml-2", T0 + 60) == T0 + 60
        assert await store.password_first_seen("bob", "yaml-1", T0 + 70) == T0 + 70


class TestMeta:
    """Small settings: get, put, replace."""

    async def test_get_put_replace(self, store: StateStore) -> None:
        assert await store.meta_get("notifications.last_state") is None
        await store.meta_put("notifications.last_state", "on")
        await store.meta_put("notifications.last_state", "off")
        await store.meta_put("other", "")
        assert await store.meta_get("notifications.last_state") == "off"
        assert await store.meta_get("other") == ""


class TestCancellation:
    """A cancelled operation leaves the store usable and its transaction all-or-nothing."""

    async def test_cancelled_password_set_is_all_or_nothing(self, store: StateStore) -> None:
        for i in range(12):
            task = asyncio.create_task(store.password_set("alice", f"h{i}", "base", T0 + i))
            for _ in range(i):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # The password row and the history row are written together or not at all.
            record = await store.password_get("alice")
            newest = await store.password_history("alice", 1)
            assert (record is None and newest == []) or [record.hash] == newest
        await store.password_set("alice", "final", "base", T0 + 100)
        assert await store.password_history("alice", 1) == ["final"]


class TestSqliteSpecifics:
    """What only the SQLite implementation promises: WAL on disk, refusal of a newer schema."""

    async def test_file_is_in_wal_mode(self, tmp_path: Path) -> None:
        path = tmp_path / "g.db"
        store = await SqliteStore.open(path)
        await store.close()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            versions = conn.execute("SELECT version, name FROM schema_version").fetchall()
        assert versions == [(m.version, m.name) for m in load_migrations("sqlite")]

    async def test_a_writer_waits_then_reports_a_lock_held_too_long(self, tmp_path: Path) -> None:
        path = tmp_path / "g.db"
        store = await SqliteStore.open(path, busy_timeout=0.2)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(StoreUnavailable, match="database is locked"):
                await store.meta_put("k", "v")
            assert await store.meta_get("k") is None  # readers are not blocked (WAL)
            other.execute("COMMIT")
            await store.meta_put("k", "v")
            with pytest.raises(StoreUnavailable):  # the same inside a transaction
                other.execute("BEGIN IMMEDIATE")
                await store.password_set("alice", "h", None, T0)
            other.execute("COMMIT")
            await store.password_set("alice", "h", None, T0)
            assert await store.password_history("alice", 5) == ["h"]
        finally:
            other.close()
            await store.close()

    async def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "g.db"
        await (await SqliteStore.open(path)).close()
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("INSERT INTO schema_version VALUES (999, '0999_future.sql', 0)")
        with pytest.raises(StoreError, match="schema version 999, newer than this gateway"):
            await SqliteStore.open(path)


CHILD = r"""
import asyncio, json, sys
from pathlib import Path
from gateway.services.store import open_store

async def main():
    url, base_dir, user = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    store = await open_store(url, base_dir)
    try:
        print("ready", flush=True)
        command = json.loads(await asyncio.to_thread(sys.stdin.readline))
        steps = [s for s in command["steps"] if await store.totp_claim_step(user, s)]
        codes = [c for c in command["codes"] if await store.recovery_code_use(user, c, 1.0)]
        print(json.dumps({"steps": steps, "codes": codes}), flush=True)
    finally:
        await store.close()

asyncio.run(main())
"""


class TestAcrossProcesses:
    """Two worker processes on one database: migration and single-use claims never race."""

    async def _start(self, backend: StoreBackend) -> asyncio.subprocess.Process:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            backend.url,
            str(backend.base_dir),
            "alice",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env,
        )

    async def _race(self, backend: StoreBackend, command: dict) -> list[dict]:
        # Both children open the still empty database at once: they race the migration too.
        workers = [await self._start(backend) for _ in range(2)]
        try:
            for worker in workers:
                assert worker.stdout is not None
                line = await asyncio.wait_for(worker.stdout.readline(), 60)
                if line != b"ready\n":
                    _, err = await worker.communicate()
                    pytest.fail(f"worker did not start: {line!r} {err.decode()}")
            ready = await backend.open()
            await ready.totp_set("alice", b"s", 0.0)
            await ready.recovery_codes_set("alice", [f"h{i}" for i in range(50)], 0.0)
            command["codes"] = [c.id for c in await ready.recovery_codes("alice")]
            payload = json.dumps(command).encode() + b"\n"
            outputs = await asyncio.wait_for(
                asyncio.gather(*(w.communicate(payload) for w in workers)), 120
            )
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
        results = []
        for worker, (out, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, err.decode()
            results.append(json.loads(out))
        return results

    async def test_two_processes_claiming_the_same_steps(self, store_backend: StoreBackend) -> None:
        steps = list(range(1000, 1300))
        first, second = await self._race(store_backend, {"steps": steps})
        # Step 1000 is both workers' first claim: exactly one of them gets it.
        assert (1000 in first["steps"]) != (1000 in second["steps"])
        # No step is ever accepted twice, and the stored step is the newest accepted one.
        assert not set(first["steps"]) & set(second["steps"])
        store = await store_backend.open()
        record = await store.totp_get("alice")
        assert record is not None
        assert record.last_step == max(first["steps"] + second["steps"])
        # Each recovery code was used by exactly one worker.
        codes = [c.id for c in await store.recovery_codes("alice")]
        assert not set(first["codes"]) & set(second["codes"])
        assert sorted(first["codes"] + second["codes"]) == sorted(codes)
        assert await store.schema_version() == NEWEST_VERSION


class TestStoreUrl:
    """The `state:` URL forms of docs/configuration.md, and a helpful error for everything else."""

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("sqlite:///state/gateway.db", SqliteTarget(Path("/etc/gw/state/gateway.db"))),
            ("sqlite:///gateway.db", SqliteTarget(Path("/etc/gw/gateway.db"))),
            ("sqlite:///../state/g.db", SqliteTarget(Path("/etc/gw/../state/g.db"))),
            ("sqlite:////var/lib/gw/gateway.db", SqliteTarget(Path("/var/lib/gw/gateway.db"))),
            ("sqlite:///:memory:", SqliteTarget(":memory:")),
            ("SQLite:///g.db", SqliteTarget(Path("/etc/gw/g.db"))),
            (
                "postgresql://gw:secret@db.internal:5432/gateway",
                PostgresTarget("postgresql://gw:secret@db.internal:5432/gateway"),
            ),
            ("postgres://db/gateway", PostgresTarget("postgres://db/gateway")),
        ],
    )
    def test_accepted_forms(self, url: str, expected: object) -> None:
        assert parse_store_url(url, Path("/etc/gw")) == expected

    def test_relative_base_dir_gives_an_absolute_path(self) -> None:
        target = parse_store_url("sqlite:///state/g.db", Path("config"))
        assert isinstance(target, SqliteTarget)
        assert target.path == Path.cwd() / "config" / "state" / "g.db"

    @pytest.mark.parametrize(
        ("url", "why"),
        [
            ("state/gateway.db", "not a URL"),
            ("mysql://db/gateway", "unknown scheme 'mysql'"),
            ("sqlite://state/gateway.db", "a sqlite URL has no host"),
            ("sqlite:///", "no database file name"),
            ("sqlite:////var/lib/", "no database file name"),
            ("sqlite:///g.db?mode=ro", "takes no query"),
            ("postgresql://db:notaport/gateway", "Port could not be cast"),
        ],
    )
    def test_bad_urls_name_the_url_and_the_accepted_forms(self, url: str, why: str) -> None:
        with pytest.raises(ValueError, match="accepted forms: sqlite:///relative") as caught:
            parse_store_url(url, Path("/etc/gw"))
        assert f"state store URL {url!r}" in str(caught.value)
        assert why in str(caught.value)

    def test_the_password_never_appears_in_errors(self) -> None:
        with pytest.raises(ValueError) as caught:
            parse_store_url("mysql://gw:hunter2@db/gateway", Path("/etc/gw"))
        assert "hunter2" not in str(caught.value)
        assert "mysql://gw:***@db/gateway" in str(caught.value)

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            # urlsplit refuses it: nothing but the scheme can be shown safely
            ("postgresql://gw:hunter2@[::1/gateway", "postgresql://(not shown"),
            # libpq takes the password as a query parameter too
            ("postgresql://gw@db/gateway?sslmode=require&password=hunter2", "sslmode=require"),
        ],
    )
    def test_no_password_in_a_redacted_url(self, url: str, shown: str) -> None:
        assert "hunter2" not in redact(url)
        assert shown in redact(url)


class TestOpenStore:
    """`open_store` picks the implementation from the URL and prepares the database."""

    async def test_relative_sqlite_creates_the_folder(self, tmp_path: Path) -> None:
        store = await open_store("sqlite:///state/deep/gateway.db", tmp_path)
        try:
            assert isinstance(store, SqliteStore)
            assert (tmp_path / "state" / "deep" / "gateway.db").is_file()
            await store.ping()
        finally:
            await store.close()

    async def test_absolute_sqlite(self, tmp_path: Path) -> None:
        path = tmp_path / "abs" / "g.db"
        store = await open_store(f"sqlite:///{path}", Path("/nonexistent"))
        try:
            await store.meta_put("k", "v")
            assert path.is_file()
        finally:
            await store.close()

    async def test_memory_stores_are_private(self, tmp_path: Path) -> None:
        one = await open_store("sqlite:///:memory:", tmp_path)
        two = await open_store("sqlite:///:memory:", tmp_path)
        try:
            await one.meta_put("k", "v")
            assert await two.meta_get("k") is None
            assert list(tmp_path.iterdir()) == []
        finally:
            await one.close()
            await two.close()

    async def test_postgres_url(self, postgres_backend: StoreBackend) -> None:
        store = await open_store(postgres_backend.url, Path("/nonexistent"))
        try:
            assert isinstance(store, PostgresStore)
            assert await store.schema_version() == NEWEST_VERSION
        finally:
            await store.close()

    async def test_unreachable_postgres_is_unavailable(self) -> None:
        with pytest.raises(StoreUnavailable, match=r"postgres postgresql://gw:\*\*\*@127.0.0.1:1/"):
            await open_store("postgresql://gw:hunter2@127.0.0.1:1/x", Path("."))

    async def test_bad_url_is_a_value_error(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="accepted forms"):
            await open_store("redis://localhost/0", tmp_path)
