"""A server process freezes what start-up allocated and spaces out young collections (core/heap.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from trunkline.core import heap
from trunkline.core.http import OpsServer
from trunkline.core.runner import run_until_signalled


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Idle:
    name = "edge"

    async def start(self) -> None:
        pass

    def ready(self) -> bool:
        return True

    def busy(self) -> int:
        return 0

    async def drain(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def test_settle_freezes_the_heap_and_raises_the_young_threshold(restored_gc: None) -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(10)]
    heap.settle()
    assert gc.get_freeze_count() > len(survivor)
    assert gc.get_threshold()[0] == heap.GEN0_THRESHOLD
    assert not any(survivor is obj for obj in gc.get_objects())  # frozen: out of every generation


async def run_once(settle_heap: bool) -> tuple[int, int]:
    """(frozen objects, young threshold) once the runner says it is ready."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    component = Idle()
    started = asyncio.Event()
    runner = run_until_signalled(
        [component], OpsServer(sock, [component], CollectorRegistry()), 1.0, started, settle_heap=settle_heap
    )
    task = asyncio.create_task(runner)
    await asyncio.wait_for(started.wait(), timeout=30)
    seen = gc.get_freeze_count(), gc.get_threshold()[0]
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, timeout=30) == 0
    return seen


async def test_the_runner_settles_the_heap_only_when_asked(restored_gc: None) -> None:
    gc.unfreeze()
    default = gc.get_threshold()[0]
    assert await run_once(settle_heap=False) == (0, default)
    frozen, threshold = await run_once(settle_heap=True)
    assert frozen > 0 and threshold == heap.GEN0_THRESHOLD
