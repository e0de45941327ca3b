"""The in-memory store: channels with TTL, call rate, replay keys, auth failures, bindings, dialogs."""

from __future__ import annotations

from trunkline.core.state import Binding, MemoryStore


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_channels_cap_release_and_expire() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    assert await store.acquire_channel("acme", "c1", 2, ttl=30)
    assert await store.acquire_channel("acme", "c2", 2, ttl=30)
    assert not await store.acquire_channel("acme", "c3", 2, ttl=30)
    assert await store.acquire_channel("acme", "c1", 2, ttl=30)  # the same call again is not a new channel
    await store.release_channel("acme", "c1")
    assert await store.acquire_channel("acme", "c3", 2, ttl=30)
    clock.t += 20
    await store.refresh_channel("acme", "c3", ttl=30)
    clock.t += 15  # c2's record lapsed (its owner vanished); c3 was refreshed
    assert await store.channels_in_use("acme") == 1
    assert await store.acquire_channel("other", "x", None, ttl=30)  # unlimited


async def test_expired_channels_never_count_and_are_purged_as_they_pile_up() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    for i in range(1000):  # channels whose edge vanished: never released, they expire
        assert await store.acquire_channel("acme", f"lost-{i}", None, ttl=30)
    clock.t += 31
    assert await store.acquire_channel("acme", "new", 1, ttl=30)  # the expired ones do not count
    assert not await store.acquire_channel("acme", "newer", 1, ttl=30)
    await store.refresh_channel("acme", "lost-1", ttl=30)  # an expired channel is not brought back
    assert await store.channels_in_use("acme") == 1
    for i in range(10_000):  # without a limit, lapsed channels are purged as they double, not kept
        await store.acquire_channel("busy", f"c{i}", None, ttl=30)
        if i % 2:
            await store.release_channel("busy", f"c{i - 1}")
        clock.t += 0.01
    assert len(store._channels["busy"]) < 2 * await store.channels_in_use("busy") + 64


async def test_call_rate() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    admitted = [await store.take_call_slot("acme", 5) for _ in range(8)]
    assert admitted == [True] * 5 + [False] * 3
    clock.t += 0.2  # one more token
    assert await store.take_call_slot("acme", 5) and not await store.take_call_slot("acme", 5)
    assert all([await store.take_call_slot("free", None) for _ in range(100)])


async def test_replay_keys_expire_without_a_full_scan() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    for i in range(30_000):  # more live keys than any fixed purge threshold
        assert await store.first_use(f"nonce:{i}", ttl=300)
    assert len(store._seen) == 30_000 and not await store.first_use("nonce:29999", ttl=300)
    clock.t += 301  # all lapsed: the next use drops them, and a key is usable again
    assert await store.first_use("nonce:0", ttl=300)
    assert len(store._seen) == 1 and len(store._seen_expiry) == 1


async def test_replay_keys_auth_failures_bindings_dialogs() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    assert await store.first_use("nonce:1", ttl=10) and not await store.first_use("nonce:1", ttl=10)
    clock.t += 11
    assert await store.first_use("nonce:1", ttl=10)

    assert [await store.note_auth_failure("1.2.3.4", window=60) for _ in range(3)] == [1, 2, 3]
    clock.t += 61
    assert await store.auth_failures("1.2.3.4", window=60) == 0
    assert await store.note_auth_failure("1.2.3.4", window=60) == 1
    await store.clear_auth_failures("1.2.3.4")
    assert await store.auth_failures("1.2.3.4", window=60) == 0

    await store.put_binding("sip:acme@edge", Binding("sip:acme@127.0.0.2:5060", expires_at=clock.t + 60))
    await store.put_binding("sip:acme@edge", Binding("sip:acme@127.0.0.2:5062", expires_at=clock.t + 10))
    assert [b.contact for b in await store.bindings("sip:acme@edge")] == [
        "sip:acme@127.0.0.2:5060", "sip:acme@127.0.0.2:5062"]  # fmt: skip
    clock.t += 11
    assert [b.contact for b in await store.bindings("sip:acme@edge")] == ["sip:acme@127.0.0.2:5060"]
    await store.remove_binding("sip:acme@edge", "sip:acme@127.0.0.2:5060")
    assert await store.bindings("sip:acme@edge") == []

    await store.save_call("acme", "c9", "edge-a", {"n": 1}, ["c9|x|y"], ttl=5)
    assert await store.adopt_call("c9|x|y", "edge-b") == {"n": 1, "epoch": 1}  # handed over
    clock.t += 6
    assert await store.adopt_call("c9|x|y", "edge-b") is None
