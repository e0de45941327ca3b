"""Calls held elsewhere: an in-dialog request reaching an edge that does not hold the call adopts it
from the store; the keep-alive adopts the answered calls of a dead edge and answers the callers of
its ringing calls 503."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support import edge_harness as world
from trunkline.core.state import MemoryStore
from trunkline.edge.call import Call
from trunkline.edge.context import EdgeOptions


def pair(tmp_path: Path) -> tuple[world.Harness, world.Harness]:
    options = EdgeOptions(failover_after=30.0)  # a ringing call rings through the tests' 7 s
    one = world.build(tmp_path, options, owner="edge-1")
    two = world.build(tmp_path, options, store=one.store, owner="edge-2")
    return one, two


async def test_a_bye_at_another_edge_ends_the_call_there(tmp_path: Path) -> None:
    one, two = pair(tmp_path)
    call = await world.answered_call(one)
    await two.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert two.stack.responses[-1].status == 200
    byes = two.stack.requests("BYE")
    assert len(byes) == 1 and byes[0].addr == world.GATEWAYS[0]
    assert byes[0].request.call_id == call.b.request.call_id and byes[0].request.to.tag == "callee"
    record = two.cdr.records[-1]
    assert record.call_id == call.call_id and record.answer is not None and record.attempts
    assert await two.store.channels_in_use("default/acme") == 0


async def test_the_keep_alive_adopts_the_answered_calls_of_a_dead_edge(tmp_path: Path) -> None:
    one, two = pair(tmp_path)
    await one.store.keep_alive("edge-1", 6.0)
    call = await world.answered_call(one)
    await one.stack.advance(7.0)  # edge-1 (and the store's clock) goes on; edge-1 never says it lives
    keep_alive = asyncio.ensure_future(two.edge.keep_alive())
    try:
        await two.stack.settle()
        assert two.edge.active_calls == 1
        b = call.b.request
        from_callee = world.in_dialog("BYE", b.call_id, b.from_.tag or "", 2, source=world.GATEWAYS[0],
                                      from_tag="callee")  # fmt: skip
        await two.stack.deliver(from_callee, world.GATEWAYS[0])
        assert [tx.addr for tx in two.stack.requests("BYE")] == [world.PBX]
        assert two.cdr.records[-1].hung_up.value == "callee"
    finally:
        keep_alive.cancel()


async def test_the_caller_of_a_ringing_call_of_a_dead_edge_gets_503(tmp_path: Path) -> None:
    one, two = pair(tmp_path)
    await one.store.keep_alive("edge-1", 6.0)
    await one.stack.deliver(world.invite(call_id="ringing"), world.PBX)
    await one.stack.advance(7.0)
    keep_alive = asyncio.ensure_future(two.edge.keep_alive())
    try:
        await two.stack.settle()
        ((response, addr, _),) = two.stack.stateless
        assert (response.status, response.call_id, addr) == (503, "ringing", world.PBX)
        assert two.cdr.records[-1].reason == "edge lost while ringing"
        assert isinstance(two.store, MemoryStore) and two.edge.active_calls == 0
    finally:
        keep_alive.cancel()


async def test_the_record_holds_the_callers_invite_written_once(tmp_path: Path) -> None:
    one, _ = pair(tmp_path)
    answered = await world.answered_call(one)
    held = one.edge.ctx.calls.get(answered.call_id)
    assert held is not None and held.invite_data is not None
    written = held.invite_data
    stored = one.store._calls[answered.call_id].record
    assert stored["invite"] is written  # the set-up's write and the answer's: one serialization
    assert held.to_state({})["invite"] is written
    adopted = Call.from_state(stored)
    assert adopted.a_invite.to_bytes() == held.a_invite.to_bytes()


async def test_the_callers_ack_at_another_edge_takes_the_call_and_acks_the_callee(tmp_path: Path) -> None:
    # Between the 2xx and its ACK the Service moved the caller's flow (the answering edge left it).
    one, two = pair(tmp_path)
    call = await world.answered_call(one)
    await two.stack.deliver(world.in_dialog("ACK", call.call_id, call.a_tag, 1), world.PBX)
    await two.stack.settle()
    [(ack, addr, _)] = two.stack.acks
    b = call.b.request
    assert addr == world.GATEWAYS[0] and ack.call_id == b.call_id and ack.to.tag == "callee"
    assert ack.cseq.seq == b.cseq.seq  # the ACK of the callee's 2xx to that INVITE
    assert two.edge.active_calls == 1 and not one.stack.acks
    # The call goes on at the second edge: the caller's BYE ends it there, once.
    await two.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert two.stack.responses[-1].status == 200
    assert [tx.addr for tx in two.stack.requests("BYE")] == [world.GATEWAYS[0]]


async def test_an_ack_of_no_call_anywhere_is_dropped(tmp_path: Path) -> None:
    _, two = pair(tmp_path)
    await two.stack.deliver(world.in_dialog("ACK", "no-such-call", "nobody", 1), world.PBX)
    await two.stack.settle()
    assert not two.stack.acks and two.edge.active_calls == 0
