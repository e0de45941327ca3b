"""Ending a call: BYE to a leg, the edge ending a call itself, and the end of every call (timers,
channel, media, dialogs and the CDR), once."""

from __future__ import annotations

import logging
import time

from trunkline.core.logs import event
from trunkline.edge.call import Call
from trunkline.edge.cdr import HungUp
from trunkline.edge.context import EdgeContext
from trunkline.edge.observing import ended
from trunkline.sip.stack import NoAnswer

log = logging.getLogger("trunkline.edge")
BYE_TIMEOUT = 32.0  # 64*T1: a BYE nobody answers by then is given up (its transaction ends too)


async def bye(ctx: EdgeContext, call: Call, leg_name: str) -> None:
    leg = call.a if leg_name == "a" else call.b
    if leg is None or leg.dialog is None:
        return
    request = leg.dialog.create_request("BYE", ctx.local.via(leg.transport))
    step = call.trace.transaction("BYE", leg_name)
    # This transaction's messages go on its own span: the call's may be over before the answer.
    previous = ctx.traces.get(request.call_id)
    ctx.traces.add(request.call_id, step, leg_name)
    future = ctx.stack.request(request, leg.addr, leg.transport)
    answered = False
    try:
        if await ctx.wait_at_most(future, BYE_TIMEOUT):
            step.set(sip__status_code=future.result().status)
            answered = True
            return
        future.cancel()  # whatever comes later is of no interest
    except NoAnswer:
        pass
    finally:
        ctx.traces.drop(request.call_id, step)
        if previous is not None and not call.ended:
            ctx.traces.add(request.call_id, *previous)
        step.end(None if answered else "not answered")
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
    started = time.monotonic()
    try:
        await ctx.store.end_call(call.counters, call.key, ctx.owner, call.dialog_keys)
        ctx.metrics.store("release", time.monotonic() - started)
    except Exception as exc:  # its TTL frees it when the store comes back
        ctx.metrics.store("release", time.monotonic() - started, ok=False)
        event(log, logging.WARNING, "could not release channel", trunk=call.trunk.name, error=str(exc))
    with call.trace.current():  # the relay's delete continues the call's trace
        await ctx.media.release(call)
    ended(ctx.metrics, ctx.traces, call)
    ctx.cdr.write(call.record)
