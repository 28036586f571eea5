"""Conformance of sign-in regulation in the store: attempts are reserved atomically, on every
implementation, across coroutines and across processes (docs/security.md)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from gateway.services.store import AttemptLimit, StateStore

from .conftest import StoreBackend

T0 = 1_700_000_000.0
WINDOW = 600.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def limits(user_limit: int = 5, ip_limit: int = 20, ip: str = "ip:203.0.113.9") -> list:
    return [AttemptLimit("user:alice", user_limit), AttemptLimit(ip, ip_limit)]


class TestReservation:
    """One attempt: reserved (counted as a failure) before the check, released on success."""

    async def test_a_reservation_counts_until_released(self, store: StateStore) -> None:
        first = await store.login_attempt_reserve(limits(), T0, T0 - WINDOW)
        assert first.granted and len(first.ids) == 2 and first.remaining == 4
        assert await store.login_failures_since("user:alice", 0) == 1
        await store.login_attempt_release(first.ids)
        assert await store.login_failures_since("user:alice", 0) == 0
        assert await store.login_failures_since("ip:203.0.113.9", 0) == 0

    async def test_the_limit_refuses_further_attempts_and_a_failure_bans(
        self, store: StateStore
    ) -> None:
        for n in range(3):
            granted = await store.login_attempt_reserve(limits(3), T0 + n, T0 - WINDOW)
            assert granted.granted and granted.remaining == 2 - n
        refused = await store.login_attempt_reserve(limits(3), T0 + 3, T0 - WINDOW)
        assert refused.refused_by == "user:alice" and refused.banned_until is None
        # The third failure settles: the user is banned, the address (limit 20) is not.
        banned = await store.login_attempt_failed(limits(3), T0 + 4, T0 - WINDOW, T0 + 900)
        assert banned == ["user:alice"]
        assert await store.login_bans_active(T0 + 5) == {"user:alice": T0 + 900}
        again = await store.login_attempt_reserve(limits(3), T0 + 6, T0 - WINDOW)
        assert again.refused_by == "user:alice" and again.banned_until == T0 + 900
        # A second settle does not extend the ban.
        assert await store.login_attempt_failed(limits(3), T0 + 7, T0 - WINDOW, T0 + 999) == []

    async def test_after_the_ban_the_count_starts_again(self, store: StateStore) -> None:
        for n in range(2):
            await store.login_attempt_reserve(limits(2), T0 + n, T0 - WINDOW)
        await store.login_attempt_failed(limits(2), T0 + 2, T0 - WINDOW, T0 + 60)
        # The ban (60 s) is shorter than the window: its failures no longer count after it.
        later = await store.login_attempt_reserve(limits(2), T0 + 61, T0 + 61 - WINDOW)
        assert later.granted and later.remaining == 1
        assert await store.login_bans_active(T0 + 61) == {}

    async def test_the_address_limit_refuses_other_users(self, store: StateStore) -> None:
        for n in range(3):
            name = f"user:u{n}"
            await store.login_attempt_reserve(
                [AttemptLimit(name, 5), AttemptLimit("ip:198.51.100.1", 3)], T0, T0 - WINDOW
            )
        refused = await store.login_attempt_reserve(
            [AttemptLimit("user:u9", 5), AttemptLimit("ip:198.51.100.1", 3)], T0, T0 - WINDOW
        )
        assert refused.refused_by == "ip:198.51.100.1"
        # Nothing was recorded for the refused attempt.
        assert await store.login_failures_since("user:u9", 0) == 0

    async def test_clearing_a_subject_lifts_its_ban(self, store: StateStore) -> None:
        await store.login_attempt_reserve(limits(1), T0, T0 - WINDOW)
        await store.login_attempt_failed(limits(1), T0, T0 - WINDOW, T0 + 900)
        await store.login_state_clear("user:alice")
        assert await store.login_bans_active(T0 + 1) == {}
        assert (await store.login_attempt_reserve(limits(1), T0 + 1, T0 - WINDOW)).granted


class TestConcurrentReservations:
    """A burst of concurrent attempts gets no more tries than a sequence would."""

    async def test_concurrent_tasks(self, store_backend: StoreBackend) -> None:
        stores = [await store_backend.open() for _ in range(3)]
        results = await asyncio.gather(
            *(stores[i % 3].login_attempt_reserve(limits(5), T0, T0 - WINDOW) for i in range(60))
        )
        assert sum(r.granted for r in results) == 5
        assert sorted(r.remaining for r in results if r.granted) == [0, 1, 2, 3, 4]

    async def test_two_processes(self, store_backend: StoreBackend) -> None:
        await (await store_backend.open()).ping()  # migrated before the race on reservations
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CHILD,
                store_backend.url,
                str(store_backend.base_dir),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=REPO_ROOT,
                env=env,
            )
            for _ in range(2)
        ]
        try:
            outputs = await asyncio.wait_for(
                asyncio.gather(*(w.communicate() for w in workers)), 120
            )
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
        granted = []
        for worker, (out, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, err.decode()
            granted.append(json.loads(out)["granted"])
        # 2 x 40 concurrent attempts against a limit of 5: exactly 5 were let through.
        assert sum(granted) == 5
        store = await store_backend.open()
        assert await store.login_failures_since("user:alice", 0) == 5


CHILD = r"""
import asyncio, json, sys
from pathlib import Path
from gateway.services.store import AttemptLimit, open_store

async def main():
    store = await open_store(sys.argv[1], Path(sys.argv[2]))
    try:
        limits = [AttemptLimit("user:alice", 5), AttemptLimit("ip:203.0.113.9", 20)]
        results = await asyncio.gather(
            *(store.login_attempt_reserve(limits, 1.7e9, 1.7e9 - 600) for _ in range(40))
        )
        print(json.dumps({"granted": sum(r.granted for r in results)}), flush=True)
    finally:
        await store.close()

asyncio.run(main())
"""


class TestSqliteFilePermissions:
    """The SQLite state file and its -wal and -shm companions are private to their owner."""

    async def test_created_0600(self, tmp_path: Path) -> None:
        from gateway.services.store.sqlite import SqliteStore

        path = tmp_path / "state" / "gateway.db"
        old_umask = os.umask(0o022)
        try:
            store = await SqliteStore.open(path)
            await store.meta_put("k", "v")  # the WAL exists once something was written
            modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir() if p.is_file()}
            await store.close()
        finally:
            os.umask(old_umask)
        assert modes == {"gateway.db": 0o600, "gateway.db-wal": 0o600, "gateway.db-shm": 0o600}
