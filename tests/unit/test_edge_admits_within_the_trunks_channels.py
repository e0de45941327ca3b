"""Admission: a trunk's channels and call rate bound its concurrent calls and new calls per second;
a call over either is answered 503 with Retry-After, and a channel comes back when a call ends."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world
from trunkline.core.trunk_defaults import TrunkDefaults
from trunkline.edge.context import EdgeOptions


async def test_a_call_beyond_the_channels_gets_503_until_one_is_free(tmp_path: Path) -> None:
    h = world.build(tmp_path, channels=1)
    first = await world.answered_call(h)
    await h.stack.deliver(world.invite(call_id="second"), world.PBX)
    refused = h.stack.responses[-1]
    assert (refused.status, refused.get("Retry-After"), refused.call_id) == (503, "5", "second")
    assert len(h.stack.requests("INVITE")) == 1  # the second call went nowhere
    await h.stack.deliver(world.in_dialog("BYE", first.call_id, first.a_tag, 2), world.PBX)
    assert h.edge.active_calls == 0
    await h.stack.deliver(world.invite(call_id="third"), world.PBX)
    assert len(h.stack.requests("INVITE")) == 2  # the channel is free again


async def test_calls_beyond_the_rate_get_503_retry_after_1(tmp_path: Path) -> None:
    h = world.build(tmp_path, callsPerSecond=1)
    await h.stack.deliver(world.invite(call_id="one"), world.PBX)
    await h.stack.deliver(world.invite(call_id="two"), world.PBX)
    refused = h.stack.responses[-1]
    assert (refused.status, refused.get("Retry-After"), refused.call_id) == (503, "1", "two")
    await h.stack.advance(2.0)  # the bucket refills on the store's clock
    await h.stack.deliver(world.invite(call_id="three"), world.PBX)
    assert [tx.request.get("Max-Forwards") for tx in h.stack.requests("INVITE")] == ["69", "69"]


async def test_a_store_that_fails_refuses_new_calls(tmp_path: Path) -> None:
    h = world.build(tmp_path)

    async def broken(*args: object, **kwargs: object) -> object:
        raise ConnectionError("store down")

    h.store.admit = broken  # type: ignore[method-assign]
    await h.stack.deliver(world.invite(), world.PBX)
    assert h.stack.responses[-1].status == 503 and h.edge.active_calls == 0


async def test_a_second_invite_with_a_known_call_id_and_another_from_tag_is_482(tmp_path: Path) -> None:
    """A call is its Call-ID: a new From-tag (and branch) does not make a second call past the channel
    cap (RFC 3261 8.2.2.2), at this edge or at another one sharing the store."""
    h = world.build(tmp_path, channels=5)
    await h.stack.deliver(world.invite(call_id="same"), world.PBX)
    again = world.invite(call_id="same").replace(";tag=caller", ";tag=another")
    await h.stack.deliver(again, world.PBX)
    assert (h.stack.responses[-1].status, h.stack.responses[-1].from_.tag) == (482, "another")
    other_edge = world.build(tmp_path, store=h.store, owner="edge-2", channels=5)
    await other_edge.stack.deliver(
        world.invite(call_id="same").replace(";tag=caller", ";tag=third"), world.PBX
    )
    assert other_edge.stack.responses[-1].status == 482
    assert len(h.stack.requests("INVITE")) == 1 and other_edge.stack.requests("INVITE") == []
    assert await h.store.channels_in_use(h.edge.ctx.calls.get("same").counters) == 1  # type: ignore[union-attr]


async def test_a_trunk_without_caps_is_held_to_the_default_rate_and_channels(tmp_path: Path) -> None:
    """No `channels`, no `callsPerSecond`: 5 calls/s and 30 channels (TrunkDefaults), not unlimited."""
    h = world.build(tmp_path)
    for _ in range(5):  # the bucket holds one second of the default rate
        await world.answered_call(h)
    await h.stack.deliver(world.invite(call_id="sixth"), world.PBX)
    assert (h.stack.responses[-1].status, h.stack.responses[-1].get("Retry-After")) == (503, "1")
    while h.edge.active_calls < 30:
        await h.stack.advance(0.25)  # a token comes every fifth of a second
        await world.answered_call(h)
    await h.stack.advance(2.0)
    await h.stack.deliver(world.invite(call_id="thirty-first"), world.PBX)
    refused = h.stack.responses[-1]
    assert (refused.status, refused.get("Retry-After"), refused.call_id) == (503, "5", "thirty-first")


async def test_zero_written_down_is_unlimited_and_the_platform_default_applies(tmp_path: Path) -> None:
    h = world.build(tmp_path, channels=0, callsPerSecond=0)
    for _ in range(40):  # no rate, no channel cap: all at the same instant
        await world.answered_call(h)
    assert h.edge.active_calls == 40
    options = EdgeOptions(trunk_defaults=TrunkDefaults(channels=2, callsPerSecond=0))
    h = world.build(tmp_path, options=options, owner="edge-2")
    for _ in range(2):
        await world.answered_call(h)
    await h.stack.deliver(world.invite(call_id="third"), world.PBX)
    assert (h.stack.responses[-1].status, h.stack.responses[-1].get("Retry-After")) == (503, "5")
