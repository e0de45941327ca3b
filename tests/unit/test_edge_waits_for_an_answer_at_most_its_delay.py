"""`EdgeContext.wait_at_most`: the edge's wait for an answer (failover, ring and BYE timeouts)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from trunkline.edge.context import EdgeContext


def waiting_edge() -> EdgeContext:
    """Only the stack's timers are used: the loop's own clock stands in for the stack's."""
    stack = SimpleNamespace(call_later=lambda delay, cb: asyncio.get_running_loop().call_later(delay, cb))
    return SimpleNamespace(stack=stack)  # type: ignore[return-value]


async def test_an_answer_before_the_delay_ends_the_wait_and_leaves_nothing_on_the_future() -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.01, answer.set_result, 200)
    started = loop.time()
    assert await EdgeContext.wait_at_most(waiting_edge(), answer, 5.0)
    assert loop.time() - started < 1.0
    assert answer.result() == 200
    assert not answer._callbacks  # type: ignore[attr-defined]  # the wait's callback is gone


async def test_no_answer_within_the_delay_leaves_the_future_pending_and_clean() -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[int] = loop.create_future()
    assert not await EdgeContext.wait_at_most(waiting_edge(), answer, 0.02)
    assert not answer.done()  # not cancelled: the caller decides (CANCEL, a later 2xx)
    assert not answer._callbacks  # type: ignore[attr-defined]
    answer.set_result(200)  # a late answer wakes nobody and raises nothing


async def test_a_cancelled_waiter_leaves_the_future_pending_and_clean() -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[int] = loop.create_future()
    waiting = asyncio.ensure_future(EdgeContext.wait_at_most(waiting_edge(), answer, 5.0))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled() and not answer.done()
    assert not answer._callbacks  # type: ignore[attr-defined]
