"""Conformance suite for the notification outbox and system messages (both store backends).

Times are plain floats chosen here: the store never reads the clock.
"""

from __future__ import annotations

import asyncio

from gateway.services.store import StateStore
from tests.services.conftest import StoreBackend

ADMINS = ["alice@example.com", "bob@example.com"]


class TestOutboxAdd:
    """Rows are queued once, due at once unless a coalescing window holds them."""

    async def test_a_new_row_is_pending_and_due_at_once(self, store: StateStore) -> None:
        new_id = await store.outbox_add("policy.changed", ADMINS, {"changes": ["x"]}, 100.0)
        assert new_id is not None
        [row] = await store.outbox_list("pending", 10)
        assert (row.id, row.kind, row.recipients, row.payload) == (
            new_id,
            "policy.changed",
            ADMINS,
            {"changes": ["x"]},
        )
        assert (row.not_before, row.state, row.attempts) == (100.0, "pending", 0)

    async def test_a_dedupe_key_is_queued_once(self, store: StateStore) -> None:
        first = await store.outbox_add("policy.changed", ADMINS, {}, 1.0, dedupe_key="fp:abc")
        second = await store.outbox_add("policy.changed", ADMINS, {}, 2.0, dedupe_key="fp:abc")
        assert first is not None and second is None
        assert len(await store.outbox_list("pending", 10)) == 1

    async def test_rows_without_a_dedupe_key_never_collide(self, store: StateStore) -> None:
        for at in (1.0, 2.0, 3.0):
            assert await store.outbox_add("test", ADMINS, {}, at) is not None
        assert len(await store.outbox_list("pending", 10)) == 3

    async def test_coalescing_first_at_once_then_one_batch_per_window(
        self, store: StateStore
    ) -> None:
        key, window = "login.failure:bob", 600.0
        for at in (1000.0, 1010.0, 1500.0, 1601.0, 1700.0, 3000.0):
            await store.outbox_add(
                "login.failure", ADMINS, {}, at, coalesce_key=key, coalesce_window=window
            )
        due = [r.not_before for r in await store.outbox_list("pending", 10)]
        # first at once; the rest of its window at its end (1600); 1601 and 1700 arrive after
        # that batch fell due: the next window's end (2200); 3000 is quiet again: at once.
        assert due == [1000.0, 1600.0, 1600.0, 2200.0, 2200.0, 3000.0]

    async def test_concurrent_writers_agree_on_the_windows(
        self, store_backend: StoreBackend
    ) -> None:
        stores = [await store_backend.open() for _ in range(3)]

        async def add(store: StateStore, at: float) -> None:
            await store.outbox_add(
                "login.failure", ADMINS, {}, at, coalesce_key="k", coalesce_window=600.0
            )

        await asyncio.gather(*(add(stores[i % 3], 50.0 + i * 0.001) for i in range(30)))
        due = sorted(r.not_before for r in await stores[0].outbox_list("pending", 100))
        # whichever writer came first is due at once (a row stamped a moment earlier that
        # commits after it joins it); everyone else joined one digest at the window's end
        assert due[0] < 50.1 and set(due) == {due[0], due[0] + 600.0}


class TestOutboxClaim:
    """A due group is leased to one owner; a lease that runs out makes it due again."""

    async def test_claim_takes_the_due_group_of_one_key(self, store: StateStore) -> None:
        for at in (10.0, 20.0, 30.0):
            await store.outbox_add(
                "login.failure", ADMINS, {"n": at}, at, coalesce_key="u:bob", coalesce_window=100.0
            )
        await store.outbox_add("policy.changed", ADMINS, {}, 15.0)
        [first] = await store.outbox_claim("w1", 10.0, 60.0)
        assert first.payload == {"n": 10.0}
        await store.outbox_finish([first.id], "w1", "sent", 11.0, "<1@x>")
        [policy] = await store.outbox_claim("w1", 15.0, 60.0)
        assert policy.kind == "policy.changed"
        await store.outbox_finish([policy.id], "w1", "sent", 16.0, "<2@x>")
        assert await store.outbox_claim("w1", 50.0, 60.0) == []  # the digest is due at 110
        digest = await store.outbox_claim("w1", 110.0, 60.0)
        assert [r.payload["n"] for r in digest] == [20.0, 30.0]

    async def test_a_leased_row_is_not_claimed_twice(self, store: StateStore) -> None:
        await store.outbox_add("test", ADMINS, {}, 1.0)
        assert len(await store.outbox_claim("w1", 2.0, 60.0)) == 1
        assert await store.outbox_claim("w2", 3.0, 60.0) == []
        # the owner died: after the lease, another owner gets it
        [again] = await store.outbox_claim("w2", 62.0, 60.0)
        assert again.state == "pending"
        # the dead owner's late finish no longer counts
        assert await store.outbox_finish([again.id], "w1", "sent", 63.0, "<m@x>") == 0
        assert await store.outbox_finish([again.id], "w2", "sent", 63.0, "<m@x>") == 1
        [sent] = await store.outbox_list("sent", 10)
        assert (sent.message_id, sent.done_at, sent.attempts) == ("<m@x>", 63.0, 1)

    async def test_concurrent_claimers_get_each_row_once(self, store_backend: StoreBackend) -> None:
        stores = [await store_backend.open() for _ in range(4)]
        for i in range(40):
            await stores[0].outbox_add("test", ADMINS, {"i": i}, float(i))

        async def drain(store: StateStore, owner: str) -> list[int]:
            got: list[int] = []
            while rows := await store.outbox_claim(owner, 100.0, 60.0):
                got += [r.id for r in rows]
            return got

        results = await asyncio.gather(*(drain(s, f"w{i}") for i, s in enumerate(stores)))
        claimed = [i for r in results for i in r]
        assert len(claimed) == 40 and len(set(claimed)) == 40

    async def test_retry_delays_counts_and_narrows(self, store: StateStore) -> None:
        await store.outbox_add("test", ADMINS, {}, 1.0)
        [row] = await store.outbox_claim("w1", 1.0, 60.0)
        await store.outbox_retry([row.id], "w1", 31.0, "451 try later", ["bob@example.com"])
        assert await store.outbox_claim("w1", 30.0, 60.0) == []
        [again] = await store.outbox_claim("w1", 31.0, 60.0)
        assert (again.attempts, again.last_error, again.recipients) == (
            1,
            "451 try later",
            ["bob@example.com"],
        )
        stats = await store.outbox_stats()
        assert (stats.pending, stats.oldest_pending_at, stats.last_error) == (
            1,
            1.0,
            "451 try later",
        )

    async def test_failed_rows_are_listed_and_purged(self, store: StateStore) -> None:
        await store.outbox_add("test", ADMINS, {}, 1.0)
        await store.outbox_add("test", ADMINS, {}, 2.0)
        first, second = (await store.outbox_claim("w", 5.0, 60.0))[0], None
        await store.outbox_finish([first.id], "w", "failed", 6.0, "<a@x>", "550 no such user")
        [second] = await store.outbox_claim("w", 7.0, 60.0)
        await store.outbox_finish([second.id], "w", "sent", 100.0, "<b@x>")
        stats = await store.outbox_stats()
        assert (stats.pending, stats.failed, stats.sent) == (0, 1, 1)
        [failed] = await store.outbox_list("failed", 10)
        assert failed.last_error == "550 no such user"
        assert await store.outbox_purge(50.0) == 1
        assert [r.id for r in await store.outbox_list("sent", 10)] == [second.id]


class TestSystemMessages:
    """A condition is raised once (one mail), cleared, and raised again when it comes back."""

    async def test_raise_clear_raise(self, store: StateStore) -> None:
        assert await store.system_message_raise("tls", "expires in 3 days", 10.0) is True
        assert await store.system_message_raise("tls", "expires in 2 days", 20.0) is False
        [msg] = await store.system_messages()
        assert (msg.key, msg.text, msg.since) == ("tls", "expires in 2 days", 10.0)
        assert await store.system_message_clear("tls") is True
        assert await store.system_message_clear("tls") is False
        assert await store.system_message_raise("tls", "expires in 1 day", 30.0) is True

    async def test_one_winner_among_processes(self, store_backend: StoreBackend) -> None:
        stores = [await store_backend.open() for _ in range(4)]
        won = await asyncio.gather(*(s.system_message_raise("k", "t", 1.0) for s in stores))
        assert sorted(won) == [False, False, False, True]
