"""The edge's own lockout counters and used nonces (edge/local_auth.py): counted within the window,
bounded in keys and per key, a nonce used once within its lifetime."""

from __future__ import annotations

import asyncio

from trunkline.edge.local_auth import MAX_FAILURES_PER_KEY, LocalAuthState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_are_counted_within_the_window_and_cleared() -> None:
    clock = Clock()
    state = LocalAuthState(clock)

    async def run() -> None:
        for expected in range(1, 4):
            assert await state.note_auth_failure("pair", 60) == expected
        clock.now += 61
        assert await state.auth_failures("pair", 60) == 0
        assert await state.note_auth_failure("pair", 60) == 1
        await state.clear_auth_failures("pair")
        assert await state.auth_failures("pair", 60) == 0

    asyncio.run(run())


def test_memory_is_bounded_in_keys_and_per_key() -> None:
    state = LocalAuthState(Clock(), max_failure_keys=3, max_nonces=2)

    async def run() -> None:
        for _ in range(MAX_FAILURES_PER_KEY * 2):
            await state.note_auth_failure("busy", 60)
        assert await state.auth_failures("busy", 60) == MAX_FAILURES_PER_KEY
        for key in ("a", "b", "c"):
            await state.note_auth_failure(key, 60)
        assert await state.auth_failures("busy", 60) == 0  # the oldest key went first
        for nonce in ("n1", "n2", "n3"):
            assert await state.first_use(nonce, 600)
        assert len(state) == 3 + 2

    asyncio.run(run())


def test_a_nonce_is_used_once_within_its_lifetime() -> None:
    clock = Clock()
    state = LocalAuthState(clock)

    async def run() -> None:
        assert await state.first_use("nonce:00000001", 600)
        assert not await state.first_use("nonce:00000001", 600)
        assert await state.first_use("nonce:00000002", 600)
        clock.now += 601
        assert await state.first_use("nonce:00000001", 600)

    asyncio.run(run())
