"""This relay's sessions in Redis, so that a restarted relay brings them back on the same ports.

The schema is described in the `trunkline.media` package docstring. Redis is never on the packet path
nor in the way of a gRPC call: the service changes `live` (a dict) and marks the session dirty; one
task writes what is dirty, in one round trip, with bounded timeouts, and on Redis trouble logs once
and retries, while sessions go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from trunkline.media import rtp
from trunkline.media.engine import LegAllocation, LegConfig, LegState

log = logging.getLogger(__name__)

REPORT_INTERVAL = 5.0  # seconds between engine reports: record refreshes, latched addresses, totals
NO_TIMEOUT_TTL = 60.0  # record lifetime of a session without inactivity timeout (refreshed always)
RETRY_INTERVAL = 1.0  # seconds between attempts while Redis does not answer
LOAD_TIMEOUT = 3.0  # reading the stored sessions at start; then the relay serves without them
BATCH = 500  # sessions written per round trip
VERSION = 1

# Errors that mean "Redis is not answering": never fatal for the relay.
UNAVAILABLE = (RedisError, OSError, TimeoutError)

Address = tuple[str, int]
Latches = tuple[tuple[Address | None, Address | None], tuple[Address | None, Address | None]]


@dataclass(frozen=True)
class LegRecord:
    config: LegConfig  # the party as its SDP described it (the last Create/UpdateSession)
    rtp_port: int
    rtcp_port: int  # == rtp_port with rtcp-mux; the pair rtp_port, rtp_port + 1 is bound either way
    relay_key: bytes | None  # ours, given to the party in SDP
    rtp_latched: Address | None = None  # where the party really sends from (symmetric RTP)
    rtcp_latched: Address | None = None

    def state(self) -> LegState:
        return LegState(self.rtp_port, self.relay_key, self.rtp_latched, self.rtcp_latched)


@dataclass(frozen=True)
class SessionRecord:
    session_id: str  # the edge's call key
    timeout: float  # inactivity timeout; 0: never
    legs: tuple[LegRecord, LegRecord]

    @classmethod
    def created(
        cls,
        session_id: str,
        timeout: float,
        configs: tuple[LegConfig, LegConfig],
        allocations: tuple[LegAllocation, LegAllocation],
    ) -> SessionRecord:
        a, b = (
            LegRecord(config, alloc.rtp_port, alloc.rtcp_port, alloc.relay_key)
            for config, alloc in zip(configs, allocations, strict=True)
        )
        return cls(session_id, timeout, (a, b))

    def updated(
        self,
        configs: tuple[LegConfig | None, LegConfig | None],
        allocations: tuple[LegAllocation, LegAllocation],
    ) -> SessionRecord:
        legs = []
        for leg, config, alloc in zip(self.legs, configs, allocations, strict=True):
            if config is not None:
                # The engine keeps a lock while the SDP's address and the signalling host stay.
                old = leg.config
                same = (config.rtp_peer, config.signalling_host) == (old.rtp_peer, old.signalling_host)
                leg = LegRecord(
                    config, alloc.rtp_port, alloc.rtcp_port, alloc.relay_key,
                    leg.rtp_latched if same else None,
                    leg.rtcp_latched if same and config.rtcp_peer == leg.config.rtcp_peer else None,
                )  # fmt: skip
            legs.append(leg)
        return replace(self, legs=(legs[0], legs[1]))

    def latched(self, latches: Latches) -> SessionRecord:
        a, b = (replace(leg, rtp_latched=rtp_at, rtcp_latched=rtcp_at)
                for leg, (rtp_at, rtcp_at) in zip(self.legs, latches, strict=True))  # fmt: skip
        return replace(self, legs=(a, b))

    def ttl(self) -> float:
        """Outlives the session by at least one report: a session ends `timeout` after its last
        packet, and the first report after that packet extends the record."""
        return (self.timeout or NO_TIMEOUT_TTL) + 2 * REPORT_INTERVAL

    def to_json(self) -> str:
        return json.dumps({"v": VERSION, "session": self.session_id, "timeout": self.timeout,
                           "legs": [_leg_json(leg) for leg in self.legs]}, separators=(",", ":"))  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionRecord:
        """ValueError when `text` is not a record of this version."""
        try:
            data = json.loads(text)
            if data.get("v") != VERSION:
                raise ValueError(f"record version {data.get('v')!r}, not {VERSION}")
            a, b = (_leg_from(leg) for leg in data["legs"])
            return cls(str(data["session"]), float(data["timeout"]), (a, b))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed session record: {exc!r}") from None


def _address(value: Any) -> Address | None:
    return None if value is None else (str(value[0]), int(value[1]))


def _host(value: Any) -> str | None:
    return None if value is None else str(value)


def _key(value: str | None) -> bytes | None:
    return None if value is None else rtp.decode_key(value)


def _leg_json(leg: LegRecord) -> dict[str, Any]:
    config = leg.config
    return {
        "rtp_port": leg.rtp_port, "rtcp_port": leg.rtcp_port,
        "relay_key": rtp.encode_key(leg.relay_key) if leg.relay_key else None,
        "remote_rtp": config.rtp_peer, "remote_rtcp": config.rtcp_peer, "rtcp_mux": config.rtcp_mux,
        "party_key": rtp.encode_key(config.srtp_key) if config.srtp_key else None,
        "clock_rate": config.clock_rate, "want_srtp": config.want_srtp,
        "signalling_host": config.signalling_host,
        "latched_rtp": leg.rtp_latched, "latched_rtcp": leg.rtcp_latched,
    }  # fmt: skip


def _leg_from(data: dict[str, Any]) -> LegRecord:
    config = LegConfig(
        _address(data["remote_rtp"]), _address(data["remote_rtcp"]), bool(data["rtcp_mux"]),
        _key(data["party_key"]), int(data["clock_rate"]), bool(data["want_srtp"]),
        _host(data.get("signalling_host")),
    )  # fmt: skip
    return LegRecord(
        config, int(data["rtp_port"]), int(data["rtcp_port"]), _key(data["relay_key"]),
        _address(data["latched_rtp"]), _address(data["latched_rtcp"]),
    )  # fmt: skip


class SessionRecords:
    """The live sessions' records and their writer. `live` is what Redis should hold."""

    def __init__(self, client: aioredis.Redis, relay_id: str, prefix: str = "trunkline:") -> None:
        self.redis = client
        self.relay_id = relay_id
        self._keys = f"{prefix}relay:{relay_id}:"
        self.index = f"{self._keys}sessions"
        self.live: dict[str, SessionRecord] = {}
        self.loaded = False  # the previous run's records were read (and restored or dropped)
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._index_ttl = 0.0  # the longest record TTL written: the index lives as long

    def key(self, session_id: str) -> str:
        return f"{self._keys}session:{session_id}"

    @property
    def pending(self) -> int:
        """Sessions whose record Redis does not have yet (or should not have any more)."""
        return len(self._dirty)

    def put(self, record: SessionRecord) -> None:
        self.live[record.session_id] = record
        self._mark(record.session_id)

    def update(
        self,
        session_id: str,
        configs: tuple[LegConfig | None, LegConfig | None],
        allocations: tuple[LegAllocation, LegAllocation],
    ) -> None:
        record = self.live.get(session_id)
        if record is not None:
            self.put(record.updated(configs, allocations))

    def drop(self, session_id: str) -> None:
        self.live.pop(session_id, None)
        self._mark(session_id)

    def refresh(self, active: dict[str, Latches], sessions: Collection[str]) -> None:
        """After an engine report: extend the records of sessions with packets (writing where their
        parties are now) and of sessions that never time out; drop those no engine has any more."""
        for session_id, latches in active.items():
            record = self.live.get(session_id)
            if record is not None:
                self.put(record.latched(latches))
        for session_id, record in list(self.live.items()):
            if session_id not in sessions:  # its engine died
                self.drop(session_id)
            elif record.timeout == 0:
                self._mark(session_id)

    async def load(self) -> list[SessionRecord]:
        """The records the previous run of this relay left, not yet expired; unreadable ones are
        deleted. Raises one of UNAVAILABLE when Redis does not answer."""
        now = time.time()
        members = await self.redis.zrangebyscore(self.index, now, "+inf")
        ids = [member.decode() if isinstance(member, bytes) else str(member) for member in members]
        records, gone = [], []
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            for session_id, value in zip(
                chunk, await self.redis.mget([self.key(i) for i in chunk]), strict=True
            ):
                if value is None:
                    gone.append(session_id)
                    continue
                try:
                    records.append(SessionRecord.from_json(value))
                except ValueError as exc:
                    log.warning("session %s: unreadable record dropped (%s)", session_id, exc)
                    gone.append(session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.index, "-inf", now)
            for session_id in gone:
                pipe.delete(self.key(session_id))
                pipe.zrem(self.index, session_id)
            await pipe.execute()
        self._index_ttl = max([self._index_ttl, *(r.ttl() for r in records)])
        return records

    async def flush(self) -> None:
        """Write up to BATCH dirty sessions in one transaction; they stay dirty if it fails."""
        if not self._dirty:
            return
        batch = [self._dirty.pop() for _ in range(min(BATCH, len(self._dirty)))]
        now = time.time()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for session_id in batch:
                    record = self.live.get(session_id)
                    if record is None:
                        pipe.delete(self.key(session_id))
                        pipe.zrem(self.index, session_id)
                        continue
                    ttl = record.ttl()
                    self._index_ttl = max(self._index_ttl, ttl)
                    pipe.set(self.key(session_id), record.to_json(), px=round(ttl * 1000))
                    pipe.zadd(self.index, {session_id: now + ttl})
                pipe.zremrangebyscore(self.index, "-inf", now)
                if self._index_ttl:
                    pipe.pexpire(self.index, round(self._index_ttl * 1000))
                await pipe.execute()
        except BaseException:
            self._dirty.update(batch)
            raise

    async def flush_all(self, timeout: float) -> None:
        """At shutdown: write what is left, within `timeout`; Redis trouble is logged, not raised."""
        try:
            async with asyncio.timeout(timeout):
                while self._dirty:
                    await self.flush()
        except UNAVAILABLE as exc:
            log.warning("%d session record(s) not written to Redis at shutdown: %s", self.pending, exc)

    async def run(self, restore: Callable[[], Awaitable[None]]) -> None:
        """Write dirty records as they come (and each report's refreshes) until cancelled; until the
        previous run's records could be read, try `restore` first."""
        failing = False
        while True:
            try:
                if not self.loaded:
                    await restore()
                await self.flush()
            except UNAVAILABLE as exc:
                if not failing:
                    log.warning("Redis: %s; sessions go on, their records are written when it answers", exc)
                failing = True
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            if failing:
                log.info("Redis answers again")
                failing = False
            if not self._dirty:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), REPORT_INTERVAL)
                except TimeoutError:
                    pass

    async def close(self) -> None:
        await self.redis.aclose()

    def _mark(self, session_id: str) -> None:
        self._dirty.add(session_id)
        self._wake.set()
