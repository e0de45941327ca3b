"""Ending a call: BYE to a leg, the edge ending a call itself, and the end of every call (timers,
channel, media, dialogs and the CDR), once."""

from __future__ import annotations

import logging

from trunkline.core.logs import event
from trunkline.edge.call import Call
from trunkline.edge.cdr import HungUp
from trunkline.edge.context import EdgeContext
from trunkline.sip.stack import NoAnswer

log = logging.getLogger("trunkline.edge")
BYE_TIMEOUT = 32.0  # 64*T1: a BYE nobody answers by then is given up (its transaction ends too)


async def bye(ctx: EdgeContext, call: Call, leg_name: str) -> None:
    leg = call.a if leg_name == "a" else call.b
    if leg is None or leg.dialog is None:
        return
    request = leg.dialog.create_request("BYE", ctx.local.via(leg.transport))
    future = ctx.stack.request(request, leg.addr, leg.transport)
    try:
        if await ctx.wait_at_most(future, BYE_TIMEOUT):
            future.result()
            return
        future.cancel()  # whatever comes later is of no interest
    except NoAnswer:
        pass
    event(log, logging.INFO, "BYE not answered", call_id=call.key, leg=leg_name)


async def expire(ctx: EdgeContext, call: Call, why: str) -> None:
    """The edge ends an answered call: BYE both ways, CDR with `why`."""
    if call.ended:
        return
    event(log, logging.INFO, "call ended by the edge", call_id=call.key, why=why)
    ctx.spawn(bye(ctx, call, "a"))
    ctx.spawn(bye(ctx, call, "b"))
    await finish(ctx, call, HungUp.EDGE, call.record.status, reason=why)


async def finish(ctx: EdgeContext, call: Call, hung_up: HungUp, status: int | None, reason: str = "") -> None:
    if call.ended:
        return
    call.ended = True
    for timer in (call.session_timer, call.limit_timer):
        if timer is not None:
            timer.cancel()
    call.record.end = ctx.clock()
    call.record.hung_up = hung_up
    call.record.status = status if status is not None else call.record.status
    call.record.reason = reason
    ctx.calls.drop(call)
    ctx.stack.stop_answer((call.a_invite.call_id, call.a.tag, call.a_invite.from_.tag or ""))
    try:
        await ctx.store.end_call(call.counters, call.key, ctx.owner, call.dialog_keys)
    except Exception as exc:  # its TTL frees it when the store comes back
        event(log, logging.WARNING, "could not release channel", trunk=call.trunk.name, error=str(exc))
    await ctx.media.release(call)
    ctx.cdr.write(call.record)
