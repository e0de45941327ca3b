"""Admission: a trunk's channels and call rate bound its concurrent calls and new calls per second;
a call over either is answered 503 with Retry-After, and a channel comes back when a call ends."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world


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
