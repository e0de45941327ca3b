"""Async tests run on the loop the processes run on, so that what they prove holds in production."""

from __future__ import annotations

import asyncio

import uvloop


async def test_the_running_loop_is_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
