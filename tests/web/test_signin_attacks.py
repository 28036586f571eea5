"""Sign-in under attack, over real HTTP: concurrent guesses get no more tries than a sequence,
a ban does not tell whether a user exists, and a burst of hashing from one address does not
hold up everybody else (docs/configuration.md, docs/security.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.factories import PASSWORD, client, gateway_files, password_hash, running_gateway
from tests.web.test_signin import (
    PREFIX,
    WRONG_LOGIN,
    Form,
    Reply,
    csrf_token,
    fetch,
    quick_users,
    sign_in,
    wait_for_audit,
)
from tests.web.test_two_factor import VERIFY, enroll, totp_code, wrong_code


def regulation(max_failures: int = 5, **more: Any) -> dict[str, Any]:
    return {
        "two_factor": {"enforce": "none"},
        "login_regulation": {"max_failures": max_failures, "window": "10m", "ban": "15m", **more},
    }


async def burst(
    http: aiohttp.ClientSession, url: str, forms: list[dict[str, str]]
) -> list[Reply | BaseException]:
    """POST every form at once (one connection each)."""
    return await asyncio.gather(
        *(fetch(http, "POST", url, data=form) for form in forms), return_exceptions=True
    )


def statuses(replies: list[Reply | BaseException]) -> list[int]:
    return [r.status for r in replies if isinstance(r, Reply)]


class TestConcurrentGuesses:
    """A burst of concurrent wrong credentials is counted as strictly as a sequence."""

    async def test_150_concurrent_wrong_passwords_then_the_right_one(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=regulation(5))
        async with running_gateway(files, watch_files=False) as gw, client("127.0.0.2") as http:
            token = await csrf_token(http, gw)
            wrong = {"username": "alice", "password": "bad-" + PASSWORD, "csrf_token": token}
            replies = await burst(http, f"{gw.url}{PREFIX}/login", [wrong] * 150)
            got = statuses(replies)
            # At most max_failures were checked; every other one was refused unchecked.
            assert got.count(401) <= 5, got
            assert set(got) <= {401, 429} and got.count(429) >= 100, got
            # And the right password now is refused too: the burst got alice banned.
            async with client("127.0.0.3") as other:
                reply = await sign_in(other, gw, "alice", PASSWORD)
            assert reply.status == 429, reply.status
            assert "Too many failed attempts" in Form(reply.text).error
            checked = await wait_for_audit(files, "login.failure", 5, principal="alice")
            assert len(checked) == got.count(401)

    async def test_60_concurrent_wrong_codes(self, tmp_path):
        files = gateway_files(
            tmp_path,
            users=quick_users(),
            security={**regulation(5), "two_factor": {"enforce": "all"}},
        )
        async with running_gateway(files, watch_files=False) as gw:
            async with client("127.0.0.2") as http:
                secret, _, _ = await enroll(http, gw)
            async with client("127.0.0.3") as http:
                reply = await sign_in(http, gw)
                assert (reply.status, reply.location) == (302, VERIFY)
                token = await csrf_token(http, gw)
                code = wrong_code(await totp_code(secret), await totp_code(secret, 1))
                form = {"code": code, "csrf_token": token}
                replies = await burst(http, f"{gw.url}{VERIFY}", [form] * 60)
            got = statuses(replies)
            assert got.count(401) <= 5, got
            evaluated = await wait_for_audit(files, "totp.failure", 5, principal="alice")
            assert 1 <= len(evaluated) <= 5
            async with client("127.0.0.4") as http:  # the burst banned alice
                assert (await sign_in(http, gw)).status == 429


class TestNoEnumeration:
    """Failures are counted per name whether it exists or not; a ban answers alike."""

    async def test_banned_known_and_unknown_names_answer_alike(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=regulation(3))
        async with running_gateway(files, watch_files=False) as gw:
            answers = {}
            for n, name in enumerate(("alice", "mallory")):
                async with client(f"127.0.0.{10 + n}") as http:
                    messages = []
                    for _ in range(3):
                        reply = await sign_in(http, gw, name, "bad-" + PASSWORD)
                        assert reply.status == 401
                        messages.append(Form(reply.text).error)
                    answers[name] = messages
                async with client(f"127.0.0.{20 + n}") as http:  # another address: the name
                    reply = await sign_in(http, gw, name, PASSWORD)
                answers[name].append((reply.status, Form(reply.text).error))
            assert answers["alice"] == answers["mallory"]
            assert answers["alice"][0] == (
                f"{WRONG_LOGIN} 2 attempts left before sign-in is paused."
            )
            assert answers["alice"][1] == f"{WRONG_LOGIN} 1 attempt left before sign-in is paused."
            assert answers["alice"][2] == (
                f"{WRONG_LOGIN} Too many failed attempts: sign-in is paused for 15 minutes."
            )
            assert answers["alice"][3] == (
                429,
                "Too many failed attempts. Try again in 15 minutes.",
            )

    async def test_typos_of_one_person_do_not_lock_out_the_office(self, tmp_path):
        # max_failures 2 and the default ip_max_failures (4 x 2): carol's typos ban carol,
        # not the address that the whole office shares.
        users = {**quick_users(), "carol": quick_users()["bob"]}
        files = gateway_files(tmp_path, users=users, security=regulation(2))
        async with running_gateway(files, watch_files=False) as gw, client("127.0.0.30") as http:
            for _ in range(2):
                assert (await sign_in(http, gw, "carol", "bad-" + PASSWORD)).status == 401
            assert (await sign_in(http, gw, "carol", PASSWORD)).status == 429
            assert (await sign_in(http, gw, "bob", PASSWORD)).status == 302


class TestFairHashing:
    """A burst of argon2 work from one address waits behind itself, not in front of others."""

    async def test_a_burst_does_not_hold_up_another_address(self, tmp_path):
        users = {"bob": {"password_hash": password_hash(), "grants": {"console": "viewer"}}}
        files = gateway_files(tmp_path, users=users, security=regulation(50))
        async with running_gateway(files, watch_files=False) as gw:
            finished: list[str] = []

            async def attacker(http: aiohttp.ClientSession, token: str, n: int) -> None:
                form = {"username": f"nobody{n}", "password": "guess", "csrf_token": token}
                await fetch(http, "POST", f"{gw.url}{PREFIX}/login", data=form)
                finished.append("attacker")

            async with client("127.0.0.40") as bad, client("127.0.0.41") as good:
                token = await csrf_token(bad, gw)
                good_token = await csrf_token(good, gw)
                flood = [asyncio.create_task(attacker(bad, token, n)) for n in range(8)]
                await asyncio.sleep(0.05)  # the burst is queued first
                form = {"username": "bob", "password": PASSWORD, "csrf_token": good_token}
                reply = await fetch(good, "POST", f"{gw.url}{PREFIX}/login", data=form)
                finished.append("bob")
                await asyncio.gather(*flood)
            assert reply.status == 302
            # Bob waited for at most the attacker's hash in progress and one more, not for the
            # eight hashes queued before him.
            assert finished.index("bob") <= 3, finished


class TestMetrics:
    """Refused (banned) attempts are counted; no `_created` series."""

    async def test_banned_attempts_in_logins_total(self, tmp_path):
        files = gateway_files(tmp_path, users=quick_users(), security=regulation(1))
        async with running_gateway(files, watch_files=False) as gw, client("127.0.0.50") as http:
            assert (await sign_in(http, gw, "alice", "bad")).status == 401
            assert (await sign_in(http, gw, "alice", PASSWORD)).status == 429
            assert (await sign_in(http, gw, "alice", PASSWORD)).status == 429
            text = (await fetch(http, "GET", f"{gw.url}{PREFIX}/metrics")).text
        assert 'gateway_logins_total{result="banned"} 2.0' in text
        assert 'gateway_logins_total{result="failure"} 1.0' in text
        assert "_created" not in text
