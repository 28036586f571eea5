"""Sign-in regulation: who may try a credential now, and the bounded hashing work behind it.

Every check of a password, TOTP code or recovery code is one `Attempt`:

1. the store reserves the attempt atomically: it is counted as a failure before the check, and
   refused when the user's or the address's allowance is used up, by failures or by attempts
   still in flight. That is the cap on attempts in flight (per user name and per address, on
   every worker and instance together), and concurrent guesses get no more tries than a
   sequence would;
2. the check runs; a success releases the reservation, a failure keeps it and may ban.

Failures are counted per user name whether the user exists or not (a ban must not tell), and
per client address (IPv6: per /64, which one machine usually has whole).

Hashing (argon2, scrypt) runs on a small thread pool with at most one job per client address
at a time, so a burst from one address waits behind itself, not in front of everybody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.policy.schema import LoginRegulation
from gateway.services.store import AttemptLimit, AttemptReservation, StateStore

T = TypeVar("T")
R = TypeVar("R")

# argon2id here uses 64 MiB and several lanes per hash: more threads than cores only queue.
HASH_WORKERS = max(1, min(4, os.cpu_count() or 1))


def user_subject(name: str) -> str:
    """`alice` and `Alice` are one subject: user names are unique case-insensitively."""
    return "user:" + name.strip().casefold()


def ip_subject(client_ip: str) -> str:
    """An IPv4 address as is; an IPv6 address by its /64 (one host usually holds all of it)."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return "ip:" + client_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        return f"ip:{ipaddress.IPv6Network((int(address) >> 64 << 64, 64))}"
    return f"ip:{address}"


def ip_limit(rules: LoginRegulation) -> int:
    return rules.ip_max_failures or 4 * rules.max_failures


def attempt_limits(rules: LoginRegulation, username: str, client_ip: str | None) -> list:
    limits = [AttemptLimit(user_subject(username), rules.max_failures)]
    if client_ip:
        limits.append(AttemptLimit(ip_subject(client_ip), ip_limit(rules)))
    return limits


class Refused(Exception):
    """The attempt was not made: banned, or too many attempts in flight."""

    def __init__(self, banned_until: float | None) -> None:
        super().__init__("sign-in attempt refused")
        self.banned_until = banned_until


@dataclass
class Attempt:
    """One reserved attempt; settle it with `succeeded()` or `failed()` (else it counts)."""

    store: StateStore
    rules: LoginRegulation
    limits: list[AttemptLimit]
    reservation: AttemptReservation
    now: float
    banned: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        """Failures left after this one fails (0: this failure bans)."""
        return self.reservation.remaining

    async def succeeded(self) -> None:
        await self.store.login_attempt_release(self.reservation.ids)

    async def failed(self) -> list[str]:
        """Settle as a failure; returns the subjects it got banned ("user", "ip")."""
        banned = await self.store.login_attempt_failed(
            self.limits, self.now, self.now - self.rules.window, self.now + self.rules.ban
        )
        self.banned = [subject.split(":", 1)[0] for subject in banned]
        return self.banned


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _hash_executor() -> ThreadPoolExecutor:
    """One pool per process: the CPU bound is the machine's, whatever the number of apps."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="gateway-hash")
        return _executor


@dataclass
class _KeyQueue:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class SignInGuard:
    """The regulation of one serving process: reserved attempts and the fair hashing pool."""

    def __init__(self, hash_workers: int = HASH_WORKERS) -> None:
        self._slots = asyncio.Semaphore(hash_workers)
        self._queues: dict[str, _KeyQueue] = {}

    @contextlib.asynccontextmanager
    async def attempt(
        self,
        store: StateStore,
        rules: LoginRegulation,
        username: str,
        client_ip: str | None,
        now: float,
    ) -> AsyncIterator[Attempt]:
        """Reserve an attempt (raises `Refused`). Leaving without settling it counts it as a
        failure: a check cut short (an error, a dropped connection) is never a free try."""
        limits = attempt_limits(rules, username, client_ip)
        reservation = await store.login_attempt_reserve(limits, now, now - rules.window)
        if not reservation.granted:
            raise Refused(reservation.banned_until)
        yield Attempt(store, rules, limits, reservation, now)

    async def check(
        self,
        store: StateStore,
        rules: LoginRegulation,
        username: str,
        client_ip: str | None,
        now: float,
        verify: Callable[[], Awaitable[R]],
        ok: Callable[[R], bool] = bool,
    ) -> tuple[Attempt, R]:
        """One whole attempt: reserve (raises `Refused`), run `verify`, settle by `ok(result)`."""
        async with self.attempt(store, rules, username, client_ip, now) as attempt:
            result = await verify()
            if ok(result):
                await attempt.succeeded()
            else:
                await attempt.failed()
        return attempt, result

    async def hash_work(self, client_ip: str | None, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args)` on the hashing pool; one job per client address at a time."""
        key = ip_subject(client_ip) if client_ip else ""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _KeyQueue()
        queue.users += 1
        try:
            async with queue.lock, self._slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(_hash_executor(), functools.partial(fn, *args))
        finally:
            queue.users -= 1
            if not queue.users:
                del self._queues[key]
