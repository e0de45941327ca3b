"""The relay's engines, seen from the asyncio side (the gRPC server).

The port range is cut into one slice per engine; each engine runs in its own process (one per core;
`workers=0` runs a single engine in a thread, for tests and the all-in-one `trunkline up`). Requests
go over a pipe and are answered in order; the pipe is watched with `loop.add_reader`, so the event
loop never blocks on an engine.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from trunkline.media.engine import (
    EngineReport,
    LatchPolicy,
    LegAllocation,
    LegConfig,
    LegState,
    SessionCounters,
    run_worker,
)
from trunkline.media.errors import (
    ERROR_CODES,
    PortInUse,
    PortsExhausted,
    RemoteError,
    SessionExists,
    SessionNotFound,
)

log = logging.getLogger(__name__)

# An engine's event: ("timeout", session id, its last counters).
EventHandler = Callable[[str, str, SessionCounters], None]


def split_ports(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    """Cut [low, high] into `parts` slices of whole even/odd pairs."""
    first = low + (low % 2)
    pairs = (high + 1 - first) // 2
    if parts < 1 or pairs < 2 * parts:
        raise ValueError(f"media ports {low}-{high} are too few for {parts} worker(s) (2 pairs per call)")
    size, extra = divmod(pairs, parts)
    slices, start = [], first
    for index in range(parts):
        count = size + (index < extra)
        slices.append((start, start + 2 * count - 1))
        start += 2 * count
    return slices


@dataclass
class Worker:
    """One engine: its pipe, its thread or process, its port slice and our count of its sessions."""

    conn: Connection
    runner: multiprocessing.process.BaseProcess | threading.Thread
    capacity: int
    sessions: int = 0
    alive: bool = True
    # Requests made in this loop turn, sent as one pipe message when it ends (the Sessions stream
    # brings several commands at once: one pickle and one write for them, and one reply).
    outbox: list[tuple[int, str, tuple[Any, ...]]] = field(default_factory=list)


class EnginePool:
    def __init__(
        self, host: str, low: int, high: int, workers: int = 1, policy: LatchPolicy | None = None
    ) -> None:
        self.host = host
        self._slices = split_ports(low, high, max(workers, 1))
        self._threaded = workers == 0
        self._policy = policy or LatchPolicy()
        self._workers: list[Worker] = []
        self._where: dict[str, Worker] = {}  # session id -> its engine
        self._pending: dict[int, tuple[Worker, asyncio.Future[Any]]] = {}
        self._ids = itertools.count(1)
        self.on_event: EventHandler | None = None

    @property
    def capacity(self) -> int:
        return sum(w.capacity for w in self._workers if w.alive)

    @property
    def active(self) -> int:
        return len(self._where)

    def sessions(self) -> list[str]:
        return list(self._where)

    def engine_pids(self) -> list[int]:
        """Process ids of the engines (none when threaded): to pin or watch the packet path."""
        processes = [
            w.runner for w in self._workers if isinstance(w.runner, multiprocessing.process.BaseProcess)
        ]
        return [p.pid for p in processes if p.pid is not None]

    def running(self) -> bool:
        """Every engine is up (for readiness: a dead engine's share of the range is lost)."""
        return bool(self._workers) and all(w.alive and w.runner.is_alive() for w in self._workers)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")  # fork would copy gRPC's threads: unsafe
        for low, high in self._slices:
            ours, theirs = multiprocessing.Pipe()
            args = (theirs, self.host, low, high, self._policy)
            runner: multiprocessing.process.BaseProcess | threading.Thread
            if self._threaded:
                runner = threading.Thread(target=run_worker, args=args, name=f"media-{low}", daemon=True)
            else:
                runner = context.Process(target=run_worker, args=args, name=f"media-{low}", daemon=True)
            runner.start()
            worker = Worker(ours, runner, capacity=(high + 1 - low) // 4)
            loop.add_reader(ours.fileno(), self._readable, worker)
            self._workers.append(worker)

    async def create(
        self, session_id: str, configs: tuple[LegConfig, LegConfig], timeout: float
    ) -> tuple[LegAllocation, LegAllocation]:
        if session_id in self._where:
            raise SessionExists(f"session {session_id!r} exists")
        candidates = [w for w in self._workers if w.alive and w.sessions < w.capacity]
        if not candidates:
            raise PortsExhausted("no free media ports")
        worker = min(candidates, key=lambda w: w.sessions / w.capacity)
        self._where[session_id] = worker  # reserved now: a concurrent create of the same id fails
        worker.sessions += 1
        try:
            result: tuple[LegAllocation, LegAllocation] = await self._call(
                worker, "create", session_id, configs, timeout
            )
        except BaseException:
            self._forget(session_id)
            raise
        return result

    async def restore(
        self,
        session_id: str,
        configs: tuple[LegConfig, LegConfig],
        timeout: float,
        states: tuple[LegState, LegState],
    ) -> tuple[LegAllocation, LegAllocation]:
        """Re-create a session of a previous run of this relay on its old ports (by the engine whose
        slice holds them); PortInUse when they cannot be bound."""
        if session_id in self._where:
            raise SessionExists(f"session {session_id!r} exists")
        ports = [state.rtp_port for state in states]
        owners = {self._slice_of(port) for port in ports}
        index = owners.pop() if len(owners) == 1 else None
        if index is None:  # the range or --workers changed since
            raise PortInUse(f"ports {ports} are not in one engine's slice of this relay's range")
        worker = self._workers[index]
        if not worker.alive:
            raise RemoteError(f"media engine {worker.runner.name} is gone")
        self._where[session_id] = worker
        worker.sessions += 1
        try:
            result: tuple[LegAllocation, LegAllocation] = await self._call(
                worker, "create", session_id, configs, timeout, states
            )
        except BaseException:
            self._forget(session_id)
            raise
        return result

    async def report(self) -> EngineReport:
        """The engines' reports, merged."""
        merged = EngineReport({}, 0, 0)
        for worker in self._workers:
            if worker.alive:
                try:
                    part: EngineReport = await self._call(worker, "report")
                except RemoteError:
                    continue
                merged.add(part)
        return merged

    async def update(
        self, session_id: str, configs: tuple[LegConfig | None, LegConfig | None]
    ) -> tuple[LegAllocation, LegAllocation]:
        result: tuple[LegAllocation, LegAllocation] = await self._call(
            self._owner(session_id), "update", session_id, configs
        )
        return result

    async def delete(self, session_id: str) -> SessionCounters:
        worker = self._owner(session_id)
        try:
            counters: SessionCounters = await self._call(worker, "delete", session_id)
        finally:
            self._forget(session_id)
        return counters

    async def stats(self, session_id: str) -> SessionCounters:
        counters: SessionCounters = await self._call(self._owner(session_id), "stats", session_id)
        return counters

    async def stop(self) -> dict[str, SessionCounters]:
        """Stop every engine; returns the sessions that were still running, now ended."""
        ended: dict[str, SessionCounters] = {}
        for worker in self._workers:
            if worker.alive:
                try:
                    ended.update(await asyncio.wait_for(self._call(worker, "stop"), 5))
                except (RemoteError, TimeoutError):
                    log.warning("media engine %s did not stop cleanly", worker.runner.name)
            self._close(worker)
            await asyncio.to_thread(worker.runner.join, 5)
        self._where.clear()
        return ended

    def _slice_of(self, port: int) -> int | None:
        return next((i for i, (low, high) in enumerate(self._slices) if low <= port <= high), None)

    def _owner(self, session_id: str) -> Worker:
        try:
            return self._where[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id!r}") from None

    def _forget(self, session_id: str) -> None:
        worker = self._where.pop(session_id, None)
        if worker is not None:
            worker.sessions -= 1

    async def _call(self, worker: Worker, op: str, *args: Any) -> Any:
        if not worker.alive:
            raise RemoteError(f"media engine {worker.runner.name} is gone")
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[request_id] = (worker, future)
        if not worker.outbox:
            loop.call_soon(self._flush, worker)
        worker.outbox.append((request_id, op, args))
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def _flush(self, worker: Worker) -> None:
        batch, worker.outbox = worker.outbox, []
        try:
            worker.conn.send(batch)
        except OSError as exc:
            failed = RemoteError(f"media engine {worker.runner.name}: {exc}")
            for request_id, _, _ in batch:
                _, future = self._pending.get(request_id, (None, None))
                if future is not None and not future.done():
                    future.set_exception(failed)

    def _readable(self, worker: Worker) -> None:
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                for reply in message if isinstance(message, list) else (message,):
                    self._dispatch(reply)
        except (EOFError, OSError):
            log.error("media engine %s died; its %d session(s) are lost", worker.runner.name, worker.sessions)
            self._close(worker)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        request_id, status, result = message
        if request_id is None:  # an event (status is its kind): the engine ended the session itself
            session_id, counters = result
            self._forget(session_id)
            if self.on_event is not None:
                self.on_event(status, session_id, counters)
            return
        _, future = self._pending.get(request_id, (None, None))
        if future is None or future.done():
            return
        if status:
            future.set_result(result)
        else:
            code, text = result
            future.set_exception(ERROR_CODES[code](text))

    def _close(self, worker: Worker) -> None:
        if not worker.alive:
            return
        worker.alive = False
        asyncio.get_running_loop().remove_reader(worker.conn.fileno())
        worker.conn.close()
        for session_id in [s for s, owner in self._where.items() if owner is worker]:
            self._forget(session_id)
        for owner, future in self._pending.values():
            if owner is worker and not future.done():
                future.set_exception(RemoteError(f"media engine {worker.runner.name} is gone"))
