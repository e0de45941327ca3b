"""The shared state store in Redis (redis-py asyncio, hiredis), for edges in a cluster.

Every call is bounded by `timeout` (default 250 ms) and raises `StoreUnavailable` on any Redis
trouble, so the SIP path never waits on a slow or dead Redis: the edge decides what a new call gets
then (503) while calls in progress go on. Each operation is one round trip: compound updates are Lua
scripts run atomically on the server, timed by the server's clock so edges need not agree on time.

URLs: `redis://[:password@]host:port/db`, `rediss://...` (TLS), or
`sentinel://[:password@]host:port[,host:port...]/service-name[/db]` for a Sentinel-managed primary,
which the client follows when Sentinel promotes a replica.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from trunkline.core.state import Binding

# KEYS[1] = channel set of a trunk (member: call, score: expiry). ARGV: call, limit (-1: none), ttl.
_ACQUIRE = """
local t = redis.call('TIME'); local now = t[1] + t[2] / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[2])
if limit >= 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""
# KEYS[1] = channel set. ARGV: call, ttl. Extends a live call's record only.
_REFRESH = """
local t = redis.call('TIME'); local now = t[1] + t[2] / 1e6
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""
_COUNT = """
local t = redis.call('TIME'); local now = t[1] + t[2] / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
# KEYS[1] = bucket hash {tokens, at}. ARGV: rate per second. Burst: one second's worth, at least 1.
_TAKE_SLOT = """
local t = redis.call('TIME'); local now = t[1] + t[2] / 1e6
local rate = tonumber(ARGV[1]); local burst = math.max(1, rate)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst; local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return ok
"""
# KEYS[1] = failure counter. ARGV: window seconds. The window starts at the first failure.
_NOTE_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class StoreUnavailable(Exception):
    """Redis did not answer in time or failed: the caller degrades (see the module docstring)."""


def connect(url: str, timeout: float = 0.25) -> aioredis.Redis:
    """A client for a redis:// or sentinel:// URL with bounded connect and command timeouts."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 5,
        "retry_on_timeout": False,
    }
    parts = urlsplit(url)
    if parts.scheme != "sentinel":
        return aioredis.Redis.from_url(url, **options)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host.strip("[]"), int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(f"{url!r}: a sentinel URL needs the service name: sentinel://host:port/NAME")
    password = unquote(parts.password) if parts.password else None
    db = int(path[1]) if len(path) > 1 else 0
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts, sentinel_kwargs={"socket_timeout": timeout}, password=password, db=db, **options
    )
    client: aioredis.Redis = sentinel.master_for(path[0])
    return client


class RedisStore:
    """StateStore over Redis. Keys are prefixed so one Redis can serve several installations."""

    def __init__(self, client: aioredis.Redis, prefix: str = "trunkline:"):
        self.redis = client
        self.p = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._count = client.register_script(_COUNT)
        self._take_slot = client.register_script(_TAKE_SLOT)
        self._note_failure = client.register_script(_NOTE_FAILURE)

    @classmethod
    def from_url(cls, url: str, timeout: float = 0.25, prefix: str = "trunkline:") -> RedisStore:
        return cls(connect(url, timeout), prefix)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    def now(self) -> float:
        return time.time()

    async def _run(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc

    # -- channels and call rate --------------------------------------------------------------------
    async def acquire_channel(self, trunk: str, call: str, limit: int | None, ttl: float) -> bool:
        key = f"{self.p}channels:{trunk}"
        return bool(
            await self._run(self._acquire(keys=[key], args=[call, -1 if limit is None else limit, ttl]))
        )

    async def refresh_channel(self, trunk: str, call: str, ttl: float) -> None:
        await self._run(self._refresh(keys=[f"{self.p}channels:{trunk}"], args=[call, ttl]))

    async def release_channel(self, trunk: str, call: str) -> None:
        await self._run(self.redis.zrem(f"{self.p}channels:{trunk}", call))

    async def channels_in_use(self, trunk: str) -> int:
        return int(await self._run(self._count(keys=[f"{self.p}channels:{trunk}"])))

    async def take_call_slot(self, trunk: str, per_second: float | None) -> bool:
        if per_second is None:
            return True
        return bool(await self._run(self._take_slot(keys=[f"{self.p}cps:{trunk}"], args=[per_second])))

    # -- auth --------------------------------------------------------------------------------------
    async def first_use(self, key: str, ttl: float) -> bool:
        return bool(await self._run(self.redis.set(f"{self.p}seen:{key}", 1, nx=True, px=int(ttl * 1000))))

    async def note_auth_failure(self, source: str, window: float) -> int:
        key = f"{self.p}authfail:{source}"
        return int(await self._run(self._note_failure(keys=[key], args=[max(1, int(window))])))

    async def auth_failures(self, source: str, window: float) -> int:
        value = await self._run(self.redis.get(f"{self.p}authfail:{source}"))
        return int(value or 0)

    async def clear_auth_failures(self, source: str) -> None:
        await self._run(self.redis.delete(f"{self.p}authfail:{source}"))

    # -- registrations -----------------------------------------------------------------------------
    async def put_binding(self, aor: str, binding: Binding) -> None:
        key = f"{self.p}reg:{aor}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, binding.contact, json.dumps(asdict(binding)))
            pipe.expireat(key, int(binding.expires_at) + 1, gt=True)
            pipe.expireat(key, int(binding.expires_at) + 1, nx=True)
            await self._run(pipe.execute())

    async def remove_binding(self, aor: str, contact: str) -> None:
        await self._run(self.redis.hdel(f"{self.p}reg:{aor}", contact))

    async def bindings(self, aor: str) -> list[Binding]:
        raw: dict[bytes, bytes] = await self._run(self.redis.hgetall(f"{self.p}reg:{aor}"))
        now = self.now()
        live = [Binding(**json.loads(v)) for v in raw.values()]
        return sorted((b for b in live if b.expires_at > now), key=lambda b: -b.expires_at)

    # -- dialogs -----------------------------------------------------------------------------------
    async def put_dialog(self, key: str, record: dict[str, Any], ttl: float) -> None:
        await self._run(self.redis.set(f"{self.p}dialog:{key}", json.dumps(record), px=int(ttl * 1000)))

    async def get_dialog(self, key: str) -> dict[str, Any] | None:
        raw = await self._run(self.redis.get(f"{self.p}dialog:{key}"))
        return json.loads(raw) if raw else None

    async def delete_dialog(self, key: str) -> None:
        await self._run(self.redis.delete(f"{self.p}dialog:{key}"))
