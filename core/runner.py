"""Run components in one process until SIGINT/SIGTERM, then drain them within a grace period."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from trunkline.core import heap
from trunkline.core.component import Component
from trunkline.core.http import OpsServer
from trunkline.core.logs import event

log = logging.getLogger("trunkline")


T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop (a dependency on Linux; stock asyncio spends about
    twice the CPU per datagram), else on asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


async def run_until_signalled(
    components: Sequence[Component],
    ops: OpsServer,
    grace: float,
    started: asyncio.Event | None = None,
    settle_heap: bool = False,
    unready_first: float = 0.0,
) -> int:
    """Start everything; on the first signal stop taking new work and wait up to `grace` seconds for
    live work to end; a second signal cuts the wait short. Returns the process exit code (0).
    `settle_heap`: freeze what start-up allocated and space out young collections (core/heap.py);
    for a process of its own, not one that hosts other work (tests).
    `unready_first`: seconds /readyz fails before new work stops (a Kubernetes Service stops sending
    here first; kube-proxy moves a UDP flow pinned here only once this endpoint is no longer ready)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hurry = asyncio.Event()

    def on_signal(signum: int) -> None:
        (hurry if stop.is_set() else stop).set()
        event(log, logging.INFO, "signal received", signal=signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    running: list[Component] = []
    try:
        for component in components:
            await component.start()
            running.append(component)
        await ops.start()
        if settle_heap:
            heap.settle()
        event(log, logging.INFO, "ready", components=",".join(c.name for c in components))
        if started:
            started.set()
        await stop.wait()
        ops.draining = True
        if unready_first > 0:
            event(log, logging.INFO, "unready, still taking new work", seconds=unready_first)
            try:
                await asyncio.wait_for(hurry.wait(), timeout=unready_first)
            except TimeoutError:
                pass
        for component in running:
            await component.drain()
        deadline = loop.time() + grace
        while (busy := sum(c.busy() for c in running)) and loop.time() < deadline and not hurry.is_set():
            event(log, logging.INFO, "draining", live=busy, seconds_left=round(deadline - loop.time()))
            try:
                await asyncio.wait_for(hurry.wait(), timeout=min(1.0, max(0.0, deadline - loop.time())))
            except TimeoutError:
                pass
        if busy:
            event(log, logging.WARNING, "grace period over, ending live work", live=busy)
    finally:
        await ops.stop()
        for component in reversed(running):
            await component.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    event(log, logging.INFO, "stopped")
    return 0
