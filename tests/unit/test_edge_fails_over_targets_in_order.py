"""Failover: the gateways of a carrier are tried in priority order; a silent one is given up after
`failover_after` (on the stack's clock), a ringing one after `ring_timeout` with a CANCEL."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world
from trunkline.edge.context import EdgeOptions


async def test_a_silent_gateway_is_abandoned_for_the_next_after_the_failover_time(tmp_path: Path) -> None:
    h = world.build(tmp_path, EdgeOptions(failover_after=3.0))
    await h.stack.deliver(world.invite(), world.PBX)
    first = h.stack.requests("INVITE")
    assert [tx.addr for tx in first] == [world.GATEWAYS[0]]
    await h.stack.advance(2.5)
    assert len(h.stack.requests("INVITE")) == 1  # not yet
    await h.stack.advance(1.0)
    invites = h.stack.requests("INVITE")
    assert [tx.addr for tx in invites] == world.GATEWAYS
    assert invites[0].abandoned  # no CANCEL for an INVITE that never got a provisional (RFC 3261 9.1)
    assert h.stack.requests("CANCEL") == []
    await h.stack.reply(invites[1], 200, "Contact: <sip:gw@127.0.0.1:5072>")
    assert h.stack.statuses()[-1] == 200
    attempts = h.edge.ctx.calls.get(h.stack.responses[-1].call_id)
    assert attempts is not None and [a.target for a in attempts.record.attempts] == [
        "sip:127.0.0.1:5071", "sip:127.0.0.1:5072",
    ]  # fmt: skip


async def test_a_gateway_that_fails_hands_the_call_to_the_next_and_the_last_answer_reaches_the_caller(
    tmp_path: Path,
) -> None:
    h = world.build(tmp_path)
    await h.stack.deliver(world.invite(), world.PBX)
    await h.stack.reply(h.stack.requests("INVITE")[0], 503)
    second = h.stack.requests("INVITE")[1]
    assert second.addr == world.GATEWAYS[1]
    await h.stack.reply(second, 486)
    assert h.stack.statuses()[-1] == 486
    record = h.cdr.records[0]
    assert [a.status for a in record.attempts] == [503, 486] and record.hung_up.value == "nobody"


async def test_a_ringing_gateway_is_cancelled_after_the_ring_timeout(tmp_path: Path) -> None:
    h = world.build(tmp_path, EdgeOptions(failover_after=3.0, ring_timeout=60.0))
    await h.stack.deliver(world.invite(), world.PBX)
    invite = h.stack.requests("INVITE")[0]
    await h.stack.reply(invite, 180)
    assert 180 in h.stack.statuses()  # relayed to the caller
    await h.stack.advance(30.0)
    assert h.stack.requests("CANCEL") == []
    await h.stack.advance(40.0)
    cancels = h.stack.requests("CANCEL")
    assert len(cancels) == 1 and cancels[0].request.top_via.branch == invite.request.top_via.branch
    assert h.stack.requests("INVITE")[1].addr == world.GATEWAYS[1]  # and the next one is tried
