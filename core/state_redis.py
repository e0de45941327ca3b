"""The shared state store in Redis (redis-py asyncio, hiredis), for edges in a cluster.

Every call is bounded by `timeout` (default 250 ms) and raises `StoreUnavailable` on any Redis
trouble, so the SIP path never waits on a slow or dead Redis: the edge decides what a new call gets
then (503) while calls in progress go on. Each operation is one round trip: compound updates are Lua
scripts run atomically on the server, timed by the server's clock so edges need not agree on time.

URLs: `redis://[:password@]host:port/db`, `rediss://...` (TLS), or
`sentinel://[:password@]host:port[,host:port...]/service-name[/db]` for a Sentinel-managed primary,
which the client follows when Sentinel promotes a replica. `RedisTarget` adds what should not be in a
URL on a command line: the password (from a file or the environment) and the CA that signed the TLS
server's certificate (`--redis-password-file`, `--redis-ca`; every component takes the same flags).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from trunkline.core.state import (
    CDR_STREAM_MAXLEN,
    ENDED_TTL,
    MAX_MINUTES,
    Admission,
    Binding,
    CallEnd,
    CallState,
    StoreUnavailable,
)

# Every script reads the server's clock, so edges need not agree on time.
_NOW = "local t = redis.call('TIME'); local now = t[1] + t[2] / 1e6\n"
# A trunk's channels: a sorted set, member call, score expiry. Token bucket for the call rate: a hash
# {tokens, at} holding at most one second's worth of calls (at least one).
_FUNCTIONS = """
local function take_slot(key, rate)
  if rate < 0 then return true end
  local burst = math.max(1, rate)
  local b = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(b[1]) or burst; local at = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + (now - at) * rate)
  local ok = tokens >= 1
  if ok then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
  return ok
end
local function acquire(key, call, limit, ttl)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if limit >= 0 and not redis.call('ZSCORE', key, call) and redis.call('ZCARD', key) >= limit then
    return false
  end
  redis.call('ZADD', key, now + ttl, call)
  redis.call('EXPIRE', key, math.ceil(ttl) + 1)
  return true
end
local function extend(key, call, ttl)
  redis.call('ZADD', key, 'XX', now + ttl, call)
  redis.call('EXPIRE', key, math.ceil(ttl) + 1, 'GT')
end
"""
# KEYS[1] = channel set. ARGV: call, limit (-1: none), ttl.
_ACQUIRE = _NOW + _FUNCTIONS + "return acquire(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])) and 1"
# KEYS[1] = channel set. ARGV: call, ttl. Extends a live call's record only.
_REFRESH = _NOW + _FUNCTIONS + "extend(KEYS[1], ARGV[1], tonumber(ARGV[2])) return 1"
# Reads only, so that it runs on a replica too.
_COUNT = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')"
# KEYS[1] = bucket. ARGV: rate per second.
_TAKE_SLOT = _NOW + _FUNCTIONS + "return take_slot(KEYS[1], tonumber(ARGV[1])) and 1 or 0"

# Calls. `call:<call>` hash {data: JSON record, owner}; `dialog:<key>` -> call; `owned:<owner>` set of
# calls; `owners` sorted set, member owner, score: lives until. Keys derived inside the scripts from
# ARGV's prefix: these scripts need one Redis (or a Sentinel-managed primary), not Redis Cluster.
# KEYS: bucket, channels, call hash, owned set. ARGV: call, limit, rate (-1: none), ttl, data, owner.
_ADMIT = (
    _NOW
    + _FUNCTIONS
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return 3 end
if not take_slot(KEYS[1], tonumber(ARGV[3])) then return 1 end
if not acquire(KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])) then return 2 end
redis.call('HSET', KEYS[3], 'data', ARGV[5], 'owner', ARGV[6])
redis.call('PEXPIRE', KEYS[3], math.ceil(tonumber(ARGV[4]) * 1000))
redis.call('SADD', KEYS[4], ARGV[1])
return 0
"""
)
# KEYS: channels, call hash, owned set, ended marker, dialog keys... ARGV: call, data, owner, ttl,
# epoch, prefix. Fenced: a holder whose epoch is stale (another edge took the call over) or whose call
# has ended writes nothing and gets 0.
_SAVE = (
    _NOW
    + _FUNCTIONS
    + """
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local held = redis.call('HMGET', KEYS[2], 'epoch', 'owner')
if (tonumber(held[1]) or 0) > tonumber(ARGV[5]) then return 0 end
if held[2] and held[2] ~= ARGV[3] then redis.call('SREM', ARGV[6] .. 'owned:' .. held[2], ARGV[1]) end
local ttl = tonumber(ARGV[4]); local ms = math.ceil(ttl * 1000)
redis.call('HSET', KEYS[2], 'data', ARGV[2], 'owner', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ms)
redis.call('SADD', KEYS[3], ARGV[1])
for i = 5, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ms) end
extend(KEYS[1], ARGV[1], ttl)
return 1
"""
)
# KEYS: dialog key. ARGV: prefix, owner. An explicit handover: the call is `owner`'s from now on with
# a new epoch, so that its previous holder's next fenced write or end finds it lost. Returns
# {data, epoch}.
_ADOPT = """
local call = redis.call('GET', KEYS[1])
if not call then return false end
local key = ARGV[1] .. 'call:' .. call
local found = redis.call('HMGET', key, 'data', 'owner')
if not found[1] then return false end
if found[2] ~= ARGV[2] then
  if found[2] then redis.call('SREM', ARGV[1] .. 'owned:' .. found[2], call) end
  redis.call('HSET', key, 'owner', ARGV[2])
  redis.call('SADD', ARGV[1] .. 'owned:' .. ARGV[2], call)
end
return {found[1], redis.call('HINCRBY', key, 'epoch', 1)}
"""
# KEYS: owners, the time of the latest keep-alive of any edge. ARGV: prefix, owner, ttl, predecessors
# ("" or a name prefix: those owners, other than this one, lapse now). Hands the calls of at most 10
# lapsed owners per call, each with a new epoch: {data, epoch, data, epoch...}.
# An owner lapses only while the store answers: when no keep-alive at all got through for over half
# a TTL (edges keep alive every third of one), the store was stalled or unreachable, and every
# owner's deadline moves on by that gap instead of every owner counting as dead.
_KEEP_ALIVE = (
    _NOW
    + """
local ttl = tonumber(ARGV[3])
local last = tonumber(redis.call('GET', KEYS[2]))
redis.call('SET', KEYS[2], tostring(now))
if last and now - last > ttl / 2 then
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do redis.call('ZADD', KEYS[1], tonumber(all[i + 1]) + (now - last), all[i]) end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
local pre = ARGV[4]
if pre ~= '' then
  for _, o in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if o ~= ARGV[2] and string.sub(o, 1, #pre) == pre then redis.call('ZADD', KEYS[1], 0, o) end
  end
end
local mine = ARGV[1] .. 'owned:' .. ARGV[2]
local adopted = {}
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 10)) do
  redis.call('ZREM', KEYS[1], dead)
  local theirs = ARGV[1] .. 'owned:' .. dead
  for _, call in ipairs(redis.call('SMEMBERS', theirs)) do
    local key = ARGV[1] .. 'call:' .. call
    local data = redis.call('HGET', key, 'data')
    if data then
      redis.call('HSET', key, 'owner', ARGV[2])
      redis.call('SADD', mine, call)
      table.insert(adopted, data)
      table.insert(adopted, redis.call('HINCRBY', key, 'epoch', 1))
    end
  end
  redis.call('DEL', theirs)
end
return adopted
"""
)
# The call hash's `epoch` field fences owners. KEYS: call hash. Bumps only a live record (HINCRBY
# on a missing key would make a hash without a TTL).
_BUMP_EPOCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('HINCRBY', KEYS[1], 'epoch', 1)
"""
# KEYS: call hash, ended marker, CDR stream, channels, dialog keys... ARGV: call, epoch, CDR JSON,
# ended-marker ms, stream MAXLEN, prefix, free the channel (1/0). Returns 0 ended, 1 lost, 2 already.
# Marker, stream entry and the call's removal are one script: an edge killed after it loses nothing.
_END_WITH_CDR = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local found = redis.call('HMGET', KEYS[1], 'epoch', 'owner')
if (tonumber(found[1]) or 0) > tonumber(ARGV[2]) then return 1 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'cdr', ARGV[3])
redis.call('DEL', KEYS[1])
if found[2] then redis.call('SREM', ARGV[6] .. 'owned:' .. found[2], ARGV[1]) end
if ARGV[7] == '1' then redis.call('ZREM', KEYS[4], ARGV[1]) end
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
return 0
"""
# KEYS[1] = failure counter. ARGV: window seconds. The window starts at the first failure.
_NOTE_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# KEYS[1] = lease. ARGV: owner, ttl ms. Take a free lease or renew our own; 0 when another holds it.
_HOLD_LEASE = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS[1] = lease. ARGV: owner. Only its holder deletes it.
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS[1] = failure counts (hash: gateway -> calls failed in a row). ARGV: gateway, failed (1/0), ttl ms.
_COUNT_CALL_FAILURE = """
local n = 0
if ARGV[2] == '1' then n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
else redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
"""

# Figures per minute: KEYS[1] = the name; the minute's hash is `<name>:<minute>` (server clock).
# ARGV: ttl seconds, then field, increment pairs.
_COUNT_PER_MINUTE = (
    _NOW
    + """
local key = KEYS[1] .. ':' .. string.format('%d', math.floor(now / 60))
for i = 2, #ARGV, 2 do redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', key, ARGV[1])
return 1
"""
)
# KEYS[1] = the name. ARGV: minutes. Reads only (a replica can answer): the buckets, newest first.
_COUNTS_PER_MINUTE = (
    _NOW
    + """
local minute = math.floor(now / 60)
local found = {}
for ago = 0, tonumber(ARGV[1]) - 1 do
  found[ago + 1] = redis.call('HGETALL', KEYS[1] .. ':' .. string.format('%d', minute - ago))
end
return found
"""
)


def _counts(flat: Sequence[bytes]) -> dict[str, int]:
    """An HGETALL reply as counts; a field that is not a number (not ours) is left out."""
    counts = {}
    for i in range(0, len(flat) - 1, 2):
        try:
            counts[flat[i].decode(errors="replace")] = int(flat[i + 1])
        except ValueError:
            continue
    return counts


def _with_epoch(data: bytes | str, epoch: int) -> CallState:
    """A record as the store hands it to its new holder: with the epoch that holder fences with."""
    state: CallState = json.loads(data)
    state["epoch"] = int(epoch)
    return state


def with_password(url: str, password: str | None) -> str:
    """`url` with `password` in it (the chart keeps the password in a Secret, never in the URL)."""
    if not password:
        return url
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{hosts}"))


def url_from_env(env: Mapping[str, str]) -> str | None:
    """The store every component of an installation shares, as the chart and the operator's pod specs
    give it: TRUNKLINE_REDIS_URL, or TRUNKLINE_REDIS_SENTINELS (host:port,...) with
    TRUNKLINE_REDIS_SENTINEL_MASTER; TRUNKLINE_REDIS_PASSWORD goes into the URL. None: no store."""
    url = env.get("TRUNKLINE_REDIS_URL")
    if not url and env.get("TRUNKLINE_REDIS_SENTINELS"):
        master = env.get("TRUNKLINE_REDIS_SENTINEL_MASTER") or "mymaster"
        url = f"sentinel://{env['TRUNKLINE_REDIS_SENTINELS']}/{master}"
    return with_password(url, env.get("TRUNKLINE_REDIS_PASSWORD")) if url else None


def connect(
    url: str, timeout: float = 0.25, password: str | None = None, ca: str | None = None
) -> aioredis.Redis:
    """A client for a redis://, rediss:// or sentinel:// URL with bounded connect and command timeouts.
    `password` (AUTH) wins over one in the URL; `ca`: verify the server's TLS certificate with this CA
    (rediss://, or a Sentinel whose primary and sentinels speak TLS)."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 5,
        "retry_on_timeout": False,
    }
    parts = urlsplit(url)
    if password and parts.scheme != "sentinel":
        url = with_password(url, password)  # redis-py lets the URL's options win over keywords
    if ca and parts.scheme == "redis":
        raise ValueError(f"{url!r}: a CA (--redis-ca) is for TLS: use a rediss:// URL")
    if ca:
        options["ssl_ca_certs"] = ca
    if parts.scheme != "sentinel":
        return aioredis.Redis.from_url(url, **options)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host.strip("[]"), int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(f"{url!r}: a sentinel URL needs the service name: sentinel://host:port/NAME")
    password = password or (unquote(parts.password) if parts.password else None)
    db = int(path[1]) if len(path) > 1 else 0
    sentinel_options: dict[str, Any] = {"socket_timeout": timeout}
    if ca:  # TLS to the sentinels and to the primary they name
        options["ssl"] = sentinel_options["ssl"] = True
        sentinel_options["ssl_ca_certs"] = ca
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # untyped before redis 8
        hosts, sentinel_kwargs=sentinel_options, password=password, db=db, **options
    )
    client: aioredis.Redis = sentinel.master_for(path[0])
    return client


@dataclass(frozen=True)
class RedisTarget:
    """Where the shared Redis is and how to reach it: URL, AUTH password, CA for TLS."""

    url: str
    password: str | None = None
    ca: str | None = None

    def connect(self, timeout: float = 0.25) -> aioredis.Redis:
        return connect(self.url, timeout, self.password, self.ca)


def add_redis_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    """--redis URL, --redis-password-file, --redis-ca; defaults from the environment (as the chart and
    the operator's pod specs set it): TRUNKLINE_REDIS_URL (or _SENTINELS), TRUNKLINE_REDIS_PASSWORD or
    TRUNKLINE_REDIS_PASSWORD_FILE, TRUNKLINE_REDIS_CA."""
    parser.add_argument("--redis", default=url_from_env(os.environ), metavar="URL", help=help)
    parser.add_argument(
        "--redis-password-file",
        metavar="PATH",
        default=os.environ.get("TRUNKLINE_REDIS_PASSWORD_FILE") or None,
        help="Redis AUTH password, read from this file (default: $TRUNKLINE_REDIS_PASSWORD_FILE)",
    )
    parser.add_argument(
        "--redis-ca",
        metavar="PEM",
        default=os.environ.get("TRUNKLINE_REDIS_CA") or None,
        help="CA of the Redis server's TLS certificate, for rediss:// (default: $TRUNKLINE_REDIS_CA)",
    )


def redis_target(args: argparse.Namespace) -> RedisTarget | None:
    """The RedisTarget the parsed flags name; None without --redis. The password: the file's, else
    $TRUNKLINE_REDIS_PASSWORD, else the URL's. ValueError naming the flag when the password file cannot
    be read or the URL does not fit."""
    if not args.redis:
        if args.redis_password_file or args.redis_ca:
            raise ValueError("--redis-password-file and --redis-ca need --redis (or $TRUNKLINE_REDIS_URL)")
        return None
    scheme = urlsplit(args.redis).scheme
    if scheme not in ("redis", "rediss", "sentinel", "unix"):
        raise ValueError(f"--redis: {args.redis!r} is not a redis://, rediss:// or sentinel:// URL")
    if args.redis_ca and scheme in ("redis", "unix"):
        raise ValueError("--redis-ca is for TLS: give a rediss:// (or sentinel://) URL")
    password = os.environ.get("TRUNKLINE_REDIS_PASSWORD") or None
    if path := args.redis_password_file:
        try:
            with Path(path).open("rb") as file:
                raw = file.read(4097)
        except OSError as exc:
            raise ValueError(f"--redis-password-file {path}: {exc.strerror or exc}") from None
        if len(raw) > 4096:
            raise ValueError(f"--redis-password-file {path}: longer than 4096 bytes")
        password = raw.decode("utf-8", "replace").rstrip("\r\n") or None
    if args.redis_ca and not Path(args.redis_ca).is_file():
        raise ValueError(f"--redis-ca {args.redis_ca}: no such file")
    return RedisTarget(args.redis, password, args.redis_ca)


class RedisStore:
    """StateStore over Redis. Keys are prefixed so one Redis can serve several installations."""

    def __init__(self, client: aioredis.Redis, prefix: str = "trunkline:", cdr_stream: str | None = None):
        self.redis = client
        self.p = prefix
        # The CDR stream the exporter reads (CdrSettings.stream): `<prefix>cdr` unless named.
        self.cdr_stream = cdr_stream or f"{prefix}cdr"
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._count = client.register_script(_COUNT)
        self._take_slot = client.register_script(_TAKE_SLOT)
        self._note_failure = client.register_script(_NOTE_FAILURE)
        self._admit = client.register_script(_ADMIT)
        self._save = client.register_script(_SAVE)
        self._adopt = client.register_script(_ADOPT)
        self._keep_alive = client.register_script(_KEEP_ALIVE)
        self._bump_epoch = client.register_script(_BUMP_EPOCH)
        self._end_with_cdr = client.register_script(_END_WITH_CDR)
        self._hold_lease = client.register_script(_HOLD_LEASE)
        self._release_lease = client.register_script(_RELEASE_LEASE)
        self._count_call_failure = client.register_script(_COUNT_CALL_FAILURE)
        self._count_per_minute = client.register_script(_COUNT_PER_MINUTE)
        self._counts_per_minute = client.register_script(_COUNTS_PER_MINUTE)

    @classmethod
    def from_url(
        cls, url: str, timeout: float = 0.25, prefix: str = "trunkline:", cdr_stream: str | None = None
    ) -> RedisStore:
        return cls(connect(url, timeout), prefix, cdr_stream)

    @classmethod
    def from_target(
        cls,
        target: RedisTarget,
        timeout: float = 0.25,
        prefix: str = "trunkline:",
        cdr_stream: str | None = None,
    ) -> RedisStore:
        return cls(target.connect(timeout), prefix, cdr_stream)

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

    async def auth_failures_of(self, sources: Sequence[str], window: float) -> list[int]:
        if not sources:
            return []
        values = await self._run(self.redis.mget([f"{self.p}authfail:{source}" for source in sources]))
        return [int(value or 0) for value in values]

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

    async def registered_contacts(self, aor: str) -> int:
        # The hash outlives its earliest bindings (it expires with the last): count the live ones.
        raw: list[bytes] = await self._run(self.redis.hvals(f"{self.p}reg:{aor}"))
        now = self.now()
        return sum(1 for value in raw if json.loads(value)["expires_at"] > now)

    # -- calls -----------------------------------------------------------------------------------
    async def admit(
        self, trunk: str, call: str, channels: int | None, per_second: float | None,
        owner: str, record: CallState, ttl: float,
    ) -> Admission:  # fmt: skip
        keys = [f"{self.p}cps:{trunk}", f"{self.p}channels:{trunk}", f"{self.p}call:{call}",
                f"{self.p}owned:{owner}"]  # fmt: skip
        limit = -1 if channels is None else channels
        rate = -1 if per_second is None else per_second
        args: list[str | float] = [call, limit, rate, ttl, json.dumps(record), owner]
        verdict = int(await self._run(self._admit(keys=keys, args=args)))
        return (Admission.ADMITTED, Admission.OVER_RATE, Admission.NO_CHANNEL, Admission.DUPLICATE)[verdict]

    async def save_call(
        self, trunk: str, call: str, owner: str, record: CallState, dialogs: list[str], ttl: float,
        epoch: int = 0,
    ) -> bool:  # fmt: skip
        keys = [f"{self.p}channels:{trunk}", f"{self.p}call:{call}", f"{self.p}owned:{owner}",
                f"{self.p}ended:{call}", *(f"{self.p}dialog:{d}" for d in dialogs)]  # fmt: skip
        args: list[str | float] = [call, json.dumps(record), owner, ttl, epoch, self.p]
        return bool(await self._run(self._save(keys=keys, args=args)))

    async def adopt_call(self, dialog: str, owner: str) -> CallState | None:
        found = await self._run(self._adopt(keys=[f"{self.p}dialog:{dialog}"], args=[self.p, owner]))
        return _with_epoch(found[0], found[1]) if found else None

    async def end_call(self, trunk: str, call: str, owner: str, dialogs: list[str]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(f"{self.p}channels:{trunk}", call)
            pipe.delete(f"{self.p}call:{call}", *(f"{self.p}dialog:{d}" for d in dialogs))
            pipe.srem(f"{self.p}owned:{owner}", call)
            await self._run(pipe.execute())

    async def keep_alive(self, owner: str, ttl: float, predecessors: str = "") -> list[CallState]:
        keys = [f"{self.p}owners", f"{self.p}owners-seen"]
        adopted = await self._run(self._keep_alive(keys=keys, args=[self.p, owner, ttl, predecessors]))
        return [_with_epoch(adopted[i], adopted[i + 1]) for i in range(0, len(adopted), 2)]

    # -- fencing and the end of a call -------------------------------------------------------------
    async def bump_epoch(self, call: str) -> int | None:
        epoch = await self._run(self._bump_epoch(keys=[f"{self.p}call:{call}"]))
        return None if epoch is None else int(epoch)

    async def call_epoch(self, call: str) -> int | None:
        # One read: every record has an owner, so a missing owner is a missing record.
        epoch, owner = await self._run(self.redis.hmget(f"{self.p}call:{call}", ["epoch", "owner"]))
        return None if owner is None else int(epoch or 0)

    async def end_call_with_cdr(
        self, call: str, epoch: int, cdr_json: str, *, trunk: str = "", dialogs: Sequence[str] = ()
    ) -> CallEnd:
        keys = [f"{self.p}call:{call}", f"{self.p}ended:{call}", self.cdr_stream,
                f"{self.p}channels:{trunk}", *(f"{self.p}dialog:{d}" for d in dialogs)]  # fmt: skip
        args: list[str | int] = [call, epoch, cdr_json, int(ENDED_TTL * 1000), CDR_STREAM_MAXLEN, self.p,
                                 1 if trunk else 0]  # fmt: skip
        verdict = int(await self._run(self._end_with_cdr(keys=keys, args=args)))
        return (CallEnd.ENDED, CallEnd.LOST, CallEnd.ALREADY_ENDED)[verdict]

    # -- upkeep ------------------------------------------------------------------------------------
    async def hold_lease(self, name: str, owner: str, ttl: float) -> bool:
        ms = max(1, int(ttl * 1000))
        return bool(await self._run(self._hold_lease(keys=[f"{self.p}lease:{name}"], args=[owner, ms])))

    async def release_lease(self, name: str, owner: str) -> None:
        await self._run(self._release_lease(keys=[f"{self.p}lease:{name}"], args=[owner]))

    async def put_upkeep(self, name: str, state: dict[str, Any], ttl: float) -> None:
        await self._run(self.redis.set(f"{self.p}{name}", json.dumps(state), px=max(1, int(ttl * 1000))))

    async def upkeep(self, name: str) -> dict[str, Any] | None:
        raw = await self._run(self.redis.get(f"{self.p}{name}"))
        if raw is None:
            return None
        try:
            found = json.loads(raw)
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    async def count_call_failure(self, name: str, gateway: str, failed: bool, ttl: float) -> int:
        args = [gateway, 1 if failed else 0, max(1, int(ttl * 1000))]
        return int(await self._run(self._count_call_failure(keys=[f"{self.p}{name}"], args=args)))

    async def call_failures(self, name: str) -> dict[str, int]:
        raw: dict[bytes, bytes] = await self._run(self.redis.hgetall(f"{self.p}{name}"))
        return {k.decode(errors="replace"): int(v) for k, v in raw.items() if v.isdigit()}

    # -- figures per minute ------------------------------------------------------------------------
    async def count_per_minute(self, name: str, counts: Mapping[str, int], ttl: float) -> None:
        args: list[str | int] = [max(1, int(ttl))]
        for key, increment in counts.items():
            args += [key, int(increment)]
        await self._run(self._count_per_minute(keys=[f"{self.p}{name}"], args=args))

    async def counts_per_minute(self, name: str, minutes: int) -> list[dict[str, int]]:
        minutes = max(0, min(minutes, MAX_MINUTES))
        if not minutes:
            return []
        found = await self._run(self._counts_per_minute(keys=[f"{self.p}{name}"], args=[minutes]))
        return [_counts(flat) for flat in found]
