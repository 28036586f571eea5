"""`SessionStore` on Redis, through the `redis` client's asyncio API and a connection pool.

Layout (every key starts with `sessions.key_prefix`, default `gateway:`):

- `{prefix}session:{sid_hash}`: a hash with fields `u` (user, "" for none), `d` (the data as
  JSON), `c` (created), `l` (last seen), `e` (absolute expiry). Its Redis TTL is the session's
  deadline, `min(e, l + idle_timeout)`, so Redis itself forgets idle and expired sessions.
- `{prefix}user:{user}`: a sorted set of that user's sid hashes scored by their deadline, for
  "end every session of this user". Each write of the user's sessions drops members past their
  deadline and sets the set's own TTL to its latest deadline (plus a second), so the index of
  a user whose sessions all expired disappears by itself: nothing leaks.

Every write is one Lua script, so it is atomic against every other instance: `update` only
changes a session that still exists (a revoked session is never revived) and `revoke_user`
deletes the index and every session in it in one step. The scripts build key names from the
prefix, so this needs a standalone Redis (or a Sentinel-managed primary), not Redis Cluster.

When Redis cannot be reached every call raises `StoreUnavailable` after one quick retry (a
pooled connection that died with a Redis restart is replaced by a fresh one); callers fail
closed and the pool reconnects by itself when Redis is back.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.services.store import SessionRecord, StoreError, StoreUnavailable
from gateway.services.store.url import redact

SOCKET_TIMEOUT = 2.0
POOL_WAIT = 2.0
MAX_CONNECTIONS = 64
INDEX_SLACK_MS = 1000

# Adds a session to its user's index, drops members past their deadline and lets the index
# itself expire a second after its latest member.
INDEX_ADD = f"""
local function index_add(index, sid, deadline, now)
    redis.call('ZADD', index, deadline, sid)
    redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. now)
    local top = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
    local ttl = math.ceil((tonumber(top[2]) - tonumber(now)) * 1000) + {INDEX_SLACK_MS}
    redis.call('PEXPIRE', index, ttl)
end
local function index_remove(prefix, user, sid)
    if user and user ~= '' then redis.call('ZREM', prefix .. 'user:' .. user, sid) end
end
"""

# KEYS: session. ARGV: prefix, sid, user, data, created, last_seen, expires, ttl_ms, deadline.
CREATE = (
    INDEX_ADD
    + """
local old = redis.call('HGET', KEYS[1], 'u')
if old ~= ARGV[3] then index_remove(ARGV[1], old, ARGV[2]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'u', ARGV[3], 'd', ARGV[4], 'c', ARGV[5], 'l', ARGV[6], 'e', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
if ARGV[3] ~= '' then index_add(ARGV[1] .. 'user:' .. ARGV[3], ARGV[2], ARGV[9], ARGV[6]) end
return 1
"""
)

# KEYS: session. ARGV: prefix, sid, user, data, now, idle_timeout.
# Returns 1 when the session was changed, 0 when it was gone (or past its deadline): an update
# never creates a session.
UPDATE = (
    INDEX_ADD
    + """
local fields = redis.call('HMGET', KEYS[1], 'u', 'e')
if not fields[2] then return 0 end
local now = tonumber(ARGV[5])
local deadline = math.min(tonumber(fields[2]), now + tonumber(ARGV[6]))
if deadline <= now then
    redis.call('DEL', KEYS[1])
    index_remove(ARGV[1], fields[1], ARGV[2])
    return 0
end
redis.call('HSET', KEYS[1], 'u', ARGV[3], 'd', ARGV[4], 'l', ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil((deadline - now) * 1000))
if fields[1] ~= ARGV[3] then index_remove(ARGV[1], fields[1], ARGV[2]) end
if ARGV[3] ~= '' then index_add(ARGV[1] .. 'user:' .. ARGV[3], ARGV[2], deadline, ARGV[5]) end
return 1
"""
)

# KEYS: session. ARGV: prefix, sid.
DELETE = (
    INDEX_ADD
    + """
local user = redis.call('HGET', KEYS[1], 'u')
redis.call('DEL', KEYS[1])
index_remove(ARGV[1], user, ARGV[2])
return 1
"""
)

# KEYS: user index. ARGV: prefix. Returns how many sessions were still there.
REVOKE_USER = """
local ended = 0
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    ended = ended + redis.call('DEL', ARGV[1] .. 'session:' .. sid)
end
redis.call('DEL', KEYS[1])
return ended
"""


def _num(value: float) -> str:
    return repr(float(value))


class RedisSessionStore:
    """Sessions in Redis, shared by every instance that names the same server and prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str, where: str) -> None:
        self._client = client
        self._prefix = prefix
        self._where = where
        self._create = client.register_script(CREATE)
        self._update = client.register_script(UPDATE)
        self._delete = client.register_script(DELETE)
        self._revoke = client.register_script(REVOKE_USER)

    def __repr__(self) -> str:
        return f"RedisSessionStore({self._where!r}, prefix={self._prefix!r})"

    @classmethod
    def open(
        cls,
        url: str,
        *,
        prefix: str = "gateway:",
        password_file: Path | None = None,
        ca_file: Path | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> RedisSessionStore:
        """A store on `url` (redis:// or rediss://). Connects lazily: an unreachable Redis
        at start-up makes the gateway not ready (readyz), not dead."""
        options: dict[str, Any] = {}
        if password_file is not None:
            try:
                options["password"] = password_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise StoreError(f"sessions.password_file {password_file}: {exc.strerror}") from exc
        if url.lower().startswith("rediss://") and ca_file is not None:
            options["ssl_ca_certs"] = str(ca_file)
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=POOL_WAIT,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            # One quick retry: after a Redis restart the first command on each pooled
            # connection fails; the retry runs on a fresh connection.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            decode_responses=True,
            **options,
        )
        return cls(aioredis.Redis(connection_pool=pool), prefix, redact(url))

    # -- plumbing ---------------------------------------------------------------------------

    def _session_key(self, sid_hash: str) -> str:
        return f"{self._prefix}session:{sid_hash}"

    def _user_key(self, user: str) -> str:
        return f"{self._prefix}user:{user}"

    @contextlib.asynccontextmanager
    async def _call(self, doing: str) -> AsyncIterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis {self._where}: {doing}: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"redis {self._where}: {doing}: {exc}") from exc

    # -- SessionStore -----------------------------------------------------------------------

    async def get(self, sid_hash: str, now: float, idle_timeout: float) -> SessionRecord | None:
        async with self._call("get"):
            fields = await self._client.hgetall(self._session_key(sid_hash))
        if not fields or "e" not in fields:
            return None
        record = SessionRecord(
            sid_hash,
            fields["u"] or None,
            orjson.loads(fields["d"]),
            float(fields["c"]),
            float(fields["l"]),
            float(fields["e"]),
        )
        # Redis's TTL already dropped it in most cases; the clocks of Redis and this host
        # may differ a little, and the idle timeout may have been shortened by a reload.
        if now >= record.expires_at or now - record.last_seen > idle_timeout:
            return None
        return record

    async def create(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        created_at: float,
        expires_at: float,
        *,
        now: float,
        idle_timeout: float,
    ) -> None:
        deadline = min(expires_at, now + idle_timeout)
        ttl_ms = math.ceil((deadline - now) * 1000)
        if ttl_ms <= 0:
            return  # born expired: nothing to keep
        async with self._call("create"):
            await self._create(
                keys=[self._session_key(sid_hash)],
                args=[
                    self._prefix,
                    sid_hash,
                    user or "",
                    orjson.dumps(data).decode(),
                    _num(created_at),
                    _num(now),
                    _num(expires_at),
                    ttl_ms,
                    _num(deadline),
                ],
            )

    async def update(
        self,
        sid_hash: str,
        user: str | None,
        data: dict[str, Any],
        *,
        now: float,
        idle_timeout: float,
    ) -> bool:
        async with self._call("update"):
            changed = await self._update(
                keys=[self._session_key(sid_hash)],
                args=[
                    self._prefix,
                    sid_hash,
                    user or "",
                    orjson.dumps(data).decode(),
                    _num(now),
                    _num(idle_timeout),
                ],
            )
        return changed == 1

    async def delete(self, sid_hash: str) -> None:
        async with self._call("delete"):
            await self._delete(keys=[self._session_key(sid_hash)], args=[self._prefix, sid_hash])

    async def revoke_user(self, user: str) -> int:
        async with self._call("revoke_user"):
            return int(await self._revoke(keys=[self._user_key(user)], args=[self._prefix]))

    async def purge_expired(self, now: float) -> int:
        return 0  # Redis expires sessions and user indexes by their TTL

    async def ping(self) -> None:
        async with self._call("ping"):
            await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()
        await self._client.connection_pool.disconnect()
