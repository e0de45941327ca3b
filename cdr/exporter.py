"""The CDR exporter: the store's CDR stream -> every configured sink, at least once.

One consumer group (`trunkline-cdr`) shares the stream between the exporter's replicas. Each loop
takes a batch: first entries another consumer left pending for longer than `claim_idle` (a killed
exporter's batch, XAUTOCLAIM), else new ones (XREADGROUP). The batch goes to every sink; its entries
are acknowledged (XACK) only after all sinks confirmed it. A sink that fails keeps the batch
unacknowledged and is retried with back-off; the sinks are idempotent by CDR id, so a redelivery
never duplicates a record. An entry that is not a valid CDR goes to `<stream>:invalid` and is acked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError
from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from trunkline.cdr.sinks import Sink
from trunkline.core.cdr import MAX_CDR_BYTES, Cdr
from trunkline.core.logs import event

log = logging.getLogger("trunkline.cdr")

Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass
class ExporterSettings:
    stream: str = "trunkline:cdr"
    group: str = "trunkline-cdr"
    consumer: str = "exporter"
    batch: int = 500
    claim_idle: float = 60.0  # seconds a pending entry waits before another consumer takes it
    block: float = 1.0  # seconds an XREADGROUP waits for new entries
    max_backoff: float = 30.0


class Exporter:
    """A Component (core/component.py): start() runs the loop, ready() for /readyz."""

    name = "cdr"

    def __init__(
        self,
        redis: aioredis.Redis,
        sinks: Sequence[Sink],
        settings: ExporterSettings,
        registry: CollectorRegistry,
    ):
        if not sinks:
            raise ValueError("the exporter needs at least one sink")
        self.redis = redis
        self.sinks = list(sinks)
        self.s = settings
        self.s.batch = max(1, min(self.s.batch, 10_000))
        self._task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._redis_ok = False
        self._group_ready = False
        self._inflight = 0
        self.pending = Gauge(
            "cdr_stream_pending", "CDR stream entries delivered to the group but not yet acknowledged",
            registry=registry,
        )  # fmt: skip
        self.lag = Gauge("cdr_stream_lag", "CDR stream entries not yet read by the group", registry=registry)
        self.exported = Counter("cdr_exported", "CDRs confirmed by a sink", ["sink"], registry=registry)
        self.sink_errors = Counter("cdr_sink_errors", "Failed batch writes", ["sink"], registry=registry)
        self.invalid = Counter("cdr_invalid", "Stream entries that were not a valid CDR", registry=registry)
        for sink in self.sinks:
            self.exported.labels(sink.name)
            self.sink_errors.labels(sink.name)

    # -- Component ---------------------------------------------------------------------------------
    async def start(self) -> None:
        for sink in self.sinks:
            await sink.open()
        self._task = asyncio.create_task(self._run(), name="cdr-exporter")
        self._stats_task = asyncio.create_task(self._stats(), name="cdr-exporter-stats")

    def ready(self) -> bool:
        return self._redis_ok and self._group_ready and all(sink.ready() for sink in self.sinks)

    def busy(self) -> int:
        return self._inflight

    async def drain(self) -> None:
        self._stopping = True  # finish the batch in hand (busy() > 0), take no new one

    async def stop(self) -> None:
        self._stopping = True
        tasks = [task for task in (self._task, self._stats_task) if task is not None]
        for task in tasks:
            task.cancel()
        # Both loops end on `_stopping` too: a cancellation that a client library turns into one of
        # its own errors (caught, retried) cannot keep them, and so the process, alive.
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for sink in self.sinks:
            await sink.close()

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                await self._ensure_group()
                entries = await self._claim()
                self._redis_ok = True  # Redis answered: ready without waiting out the blocking read
                entries = entries or await self._read()
                if entries:
                    await self._deliver(entries)
                backoff = 0.5
            except (RedisError, OSError, TimeoutError) as exc:
                self._redis_ok = False
                self._group_ready = False  # a Redis that lost its data lost the group too: make it again
                event(log, logging.WARNING, "redis unavailable", error=f"{exc.__class__.__name__}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(self.s.max_backoff, backoff * 2)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.s.stream, self.s.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _stats(self) -> None:
        """The group's backlog for /metrics, every second, also while a batch waits for a sink."""
        while not self._stopping:
            if self._group_ready:
                try:
                    await self._update_stats()
                except (RedisError, OSError, TimeoutError):
                    pass  # the main loop reports Redis trouble
            await asyncio.sleep(1.0)

    async def _update_stats(self) -> None:
        summary = await self.redis.xpending(self.s.stream, self.s.group)
        self.pending.set(int(summary["pending"]))
        for group in await self.redis.xinfo_groups(self.s.stream):
            if group["name"] in (self.s.group, self.s.group.encode()):
                self.lag.set(int(group.get("lag") or 0))

    async def _claim(self) -> list[Entry]:
        reply: Any = await self.redis.xautoclaim(
            self.s.stream, self.s.group, self.s.consumer, int(self.s.claim_idle * 1000), "0-0", self.s.batch
        )
        claimed: list[Any] = reply[1]
        # Entries trimmed from the stream while pending come back empty: nothing to deliver.
        return [(entry_id, fields) for entry_id, fields in claimed if fields]

    async def _read(self) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            self.s.group, self.s.consumer, {self.s.stream: ">"}, count=self.s.batch,
            block=int(self.s.block * 1000),
        )  # fmt: skip
        if not reply:
            return []
        return [(entry_id, fields) for entry_id, fields in reply[0][1]]

    async def _deliver(self, entries: list[Entry]) -> None:
        self._inflight = len(entries)
        try:
            cdrs: list[Cdr] = []
            invalid: list[tuple[bytes, bytes, str]] = []  # entry id, its bytes, why
            for entry_id, fields in entries:
                raw = fields.get(b"cdr", b"")
                try:
                    if len(raw) > MAX_CDR_BYTES:
                        raise ValueError(f"{len(raw)} bytes, over {MAX_CDR_BYTES}")
                    cdrs.append(Cdr.from_json(raw))
                except (ValidationError, ValueError) as exc:
                    invalid.append((entry_id, raw[:MAX_CDR_BYTES], str(exc).splitlines()[0][:300]))
            done: set[str] = set()
            backoff = 0.5
            while cdrs:
                for sink in self.sinks:
                    if sink.name in done:
                        continue
                    try:
                        await sink.write(cdrs)
                    except Exception as exc:
                        self.sink_errors.labels(sink.name).inc()
                        event(log, logging.WARNING, "sink failed", sink=sink.name, cdrs=len(cdrs),
                              error=str(exc)[:300])  # fmt: skip
                    else:
                        done.add(sink.name)
                        self.exported.labels(sink.name).inc(len(cdrs))
                if len(done) == len(self.sinks):
                    break
                if self._stopping:
                    return  # unacknowledged: another exporter (or our next start) claims the batch
                await asyncio.sleep(backoff)
                backoff = min(self.s.max_backoff, backoff * 2)
            for entry_id, raw, why in invalid:
                self.invalid.inc()
                event(log, logging.ERROR, "invalid CDR set aside", entry=entry_id.decode(), error=why)
                aside: dict[FieldT, EncodableT] = {"entry": entry_id, "error": why, "cdr": raw}
                await self.redis.xadd(f"{self.s.stream}:invalid", aside, maxlen=10_000, approximate=True)
            await self.redis.xack(self.s.stream, self.s.group, *(entry_id for entry_id, _ in entries))
        finally:
            self._inflight = 0
