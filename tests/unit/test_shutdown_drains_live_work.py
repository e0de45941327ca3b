"""SIGTERM: readiness goes 503 at once, new work stops, live work may finish within the grace period."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import aiohttp
from prometheus_client import CollectorRegistry

from trunkline.core.http import OpsServer
from trunkline.core.runner import run_until_signalled


class Calls:
    """A component with live calls that end `hold` seconds after drain() is called."""

    name = "edge"

    def __init__(self, live: int, hold: float) -> None:
        self.live, self.hold = live, hold
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")

    def ready(self) -> bool:
        return True

    def busy(self) -> int:
        return self.live

    async def drain(self) -> None:
        self.events.append("drain")
        asyncio.get_running_loop().call_later(self.hold, self._hang_up)

    def _hang_up(self) -> None:
        self.live = 0
        self.events.append("calls ended")

    async def stop(self) -> None:
        self.events.append("stop")


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    return sock


async def run_and_signal(component: Calls, grace: float, second_signal: bool = False) -> tuple[float, int]:
    sock = listening_socket()
    port = sock.getsockname()[1]
    ops = OpsServer(sock, [component], CollectorRegistry())
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(run_until_signalled([component], ops, grace, started))
    await started.wait()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 200
        began = loop.time()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 503
            assert "draining" in await resp.text()
        if second_signal:
            os.kill(os.getpid(), signal.SIGINT)
    code = await task
    return loop.time() - began, code


async def test_waits_for_live_calls_then_exits_0() -> None:
    calls = Calls(live=3, hold=0.4)
    elapsed, code = await run_and_signal(calls, grace=10)
    assert code == 0
    assert 0.4 <= elapsed < 2.5
    assert calls.events == ["start", "drain", "calls ended", "stop"]


async def test_grace_period_bounds_the_wait() -> None:
    calls = Calls(live=1, hold=60)
    elapsed, code = await run_and_signal(calls, grace=0.5)
    assert code == 0
    assert 0.5 <= elapsed < 2.5
    assert calls.events == ["start", "drain", "stop"]


async def test_second_signal_cuts_the_wait_short() -> None:
    calls = Calls(live=1, hold=60)
    elapsed, code = await run_and_signal(calls, grace=30, second_signal=True)
    assert code == 0 and elapsed < 2.5


async def test_readiness_fails_first_and_new_work_is_taken_until_unready_first_is_over() -> None:
    calls = Calls(live=0, hold=0)
    sock = listening_socket()
    port = sock.getsockname()[1]
    ops = OpsServer(sock, [calls], CollectorRegistry())
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(run_until_signalled([calls], ops, 10, started, unready_first=3.0))
    await started.wait()
    began = loop.time()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as resp:
        assert resp.status == 503
    assert "drain" not in calls.events  # unready, yet still taking new work
    assert await task == 0
    assert loop.time() - began >= 3.0
    assert calls.events[:2] == ["start", "drain"] and calls.events[-1] == "stop"
