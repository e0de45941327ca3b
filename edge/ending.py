"""Ending a call: BYE to a leg, the edge ending a call itself, the end of every call (timers,
channel, media, dialogs and the CDR, once), and standing down from a call another edge took over.

The end is fenced (`StateStore.end_call_with_cdr`): one atomic step in the store checks the call's
epoch, ends it at most once and appends its CDR to the stream. An edge that lost the call (a newer
epoch) or finds it ended by another edge stands down: it stops its timers and sends nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from trunkline.core.logs import event
from trunkline.core.state import SPOOLED_END_EPOCH, CallEnd
from trunkline.edge.call import Call
from trunkline.edge.carrier_auth import request_on_leg
from trunkline.edge.cdr import HungUp, to_cdr
from trunkline.edge.context import EdgeContext
from trunkline.edge.observing import ended
from trunkline.edge.spool import SpooledEnd
from trunkline.sip.stack import NoAnswer

log = logging.getLogger("trunkline.edge")
BYE_TIMEOUT = 32.0  # 64*T1: a BYE nobody answers by then is given up (its transaction ends too)
END_RETRIES = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)  # an end the store did not take, tried again
TEST_PAUSE_SECONDS = 3600.0  # EdgeOptions.test_pause_at_cdr: how long an end is held there


async def bye(ctx: EdgeContext, call: Call, leg_name: str) -> None:
    leg = call.a if leg_name == "a" else call.b
    if leg is None or leg.dialog is None:
        return
    request = leg.dialog.create_request("BYE", ctx.local.via(leg.transport))
    step = call.trace.transaction("BYE", leg_name)
    # This transaction's messages go on its own span: the call's may be over before the answer.
    previous = ctx.traces.get(request.call_id)
    ctx.traces.add(request.call_id, step, leg_name)
    future = asyncio.ensure_future(request_on_leg(ctx, call, leg_name, request))  # challenges answered
    answered = False
    try:
        if await ctx.wait_at_most(future, BYE_TIMEOUT):
            step.set(sip__status_code=future.result()[1].status)
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
    """The edge ends an answered call (a timer, a dead relay): the fenced end first, then BYE both
    ways only when this edge still held the call (or the store could not tell)."""
    if call.ended:
        return
    outcome = await finish(ctx, call, HungUp.EDGE, call.record.status, reason=why)
    if outcome in (CallEnd.ENDED, None):
        event(log, logging.INFO, "call ended by the edge", call_id=call.key, why=why)
        ctx.spawn(bye(ctx, call, "a"))
        ctx.spawn(bye(ctx, call, "b"))


def stand_down(ctx: EdgeContext, call: Call, why: str) -> None:
    """Another edge holds the call now (or ended it): forget it here without touching its dialogs,
    its media or its channel, which are the new holder's."""
    if call.ended:
        return
    call.ended = True
    _stop_timers(call)
    ctx.calls.drop(call)
    forget(ctx, call)
    event(log, logging.INFO, "stood down from a call", call_id=call.key, why=why)


def forget(ctx: EdgeContext, call: Call) -> None:
    """This edge no longer holds the call: out of its active gauge, its trace here closed; the call's
    outcome is the holder's to count."""
    if call.counted:
        call.counted = False
        ctx.metrics.active.labels(call.trunk.name).dec()
    call.trace.finish(call.record.status or 0, "", "taken over by another edge")
    ctx.traces.drop(call.key, call.trace)


async def still_held(ctx: EdgeContext, call: Call) -> bool:
    """Whether this edge still holds `call` (no other edge took it over or ended it); when not, it
    stands down. A store that does not answer cannot tell: the call goes on here. Nor can one that
    has no record of a call admitted without it yet (edge/late_records.py): no other edge holds it."""
    if call.key in ctx.unstored:
        return True
    try:
        epoch = await ctx.store.call_epoch(call.key)
    except Exception:
        return True
    if epoch is not None and epoch <= call.epoch:
        return True
    stand_down(ctx, call, "ended elsewhere" if epoch is None else "taken over")
    return False


def _stop_timers(call: Call) -> None:
    for timer in (call.session_timer, call.limit_timer):
        if timer is not None:
            timer.cancel()


async def finish(
    ctx: EdgeContext,
    call: Call,
    hung_up: HungUp,
    status: int | None,
    reason: str = "",
    then: Callable[[], None] | None = None,
) -> CallEnd | None:
    """End the call here: ENDED (its CDR is in the store's stream), LOST or ALREADY_ENDED (another
    edge's: this one stood down), None when the store did not answer (the end is tried again in the
    background, the call is over here all the same). `then` runs once the store has the end (or
    could not take it), before the media is released: what must not happen before (the 200 to a BYE:
    an edge that dies before the end is stored leaves the BYE unanswered, so the caller sends it again
    and the edge it reaches ends the call then, instead of the call running on to its limits)."""
    if call.ended:
        if then is not None:
            then()
        return CallEnd.ALREADY_ENDED
    call.ended = True
    _stop_timers(call)
    call.record.end = ctx.clock()
    call.record.hung_up = hung_up
    call.record.status = status if status is not None else call.record.status
    call.record.reason = reason
    ctx.calls.drop(call)
    ctx.unstored.pop(call.key, None)  # its end carries its CDR to the store; no record to write
    ctx.stack.stop_answer((call.a_invite.call_id, call.a.tag, call.a_invite.from_.tag or ""))
    relay = ctx.media.snapshot(call).get("relay")
    relay = relay if isinstance(relay, str) else None
    source = f"{call.a.addr[0]}:{call.a.addr[1]}"
    cdr = to_cdr(call.record, ctx.cdr.settings, trunk=call.counters, source=source,
                 transport=call.a.transport, relay=relay).to_json()  # fmt: skip
    started = time.monotonic()
    try:
        outcome: CallEnd | None = await _end_in_store(ctx, call, cdr)
        ctx.metrics.store("release", time.monotonic() - started)
    except Exception as exc:
        ctx.metrics.store("release", time.monotonic() - started, ok=False)
        event(log, logging.WARNING, "could not end the call in the store, trying again", call_id=call.key,
              error=str(exc))  # fmt: skip
        await _spool(ctx, call, cdr)  # on disk before the 200 to the BYE goes out (`then`)
        ctx.spawn(_end_later(ctx, call, cdr))
        outcome = None
    if then is not None:
        then()
    if outcome in (CallEnd.LOST, CallEnd.ALREADY_ENDED):
        event(log, logging.INFO, "stood down from a call", call_id=call.key, why=str(outcome))
        forget(ctx, call)
        return outcome
    try:
        with call.trace.current():  # the relay's delete continues the call's trace
            await ctx.media.release(call)
    finally:  # a relay that never answers, or the edge stopping, still ends the call's span
        ended(ctx.metrics, ctx.traces, call)
    return outcome


async def refused_by_store(ctx: EdgeContext, call: Call, status: int, reason: str) -> None:
    """A call turned away because the store did not answer its admission. The admission may still
    have run (a reply lost, a script queued behind a stall): its end, with a CDR of the refusal, is
    written once the store answers, so that no admitted record (and channel) outlives it and every
    call placed has its record. With a spool, the end is on disk when this returns (before the 503)."""
    call.ended = True
    call.record.end, call.record.status = ctx.clock(), status
    call.record.hung_up, call.record.reason = HungUp.EDGE, reason
    source = f"{call.a.addr[0]}:{call.a.addr[1]}"
    cdr = to_cdr(call.record, ctx.cdr.settings, trunk=call.counters, source=source,
                 transport=call.a.transport).to_json()  # fmt: skip
    await _spool(ctx, call, cdr)
    ctx.spawn(_end_later(ctx, call, cdr))


async def _spool(ctx: EdgeContext, call: Call, cdr: str) -> None:
    if ctx.spool is None:
        return
    started = time.monotonic()
    try:
        await ctx.spool.add(SpooledEnd(call.key, call.counters, tuple(call.dialog_keys), cdr))
        ctx.metrics.spool_write.observe(time.monotonic() - started)
    except OSError as exc:  # a full or broken disk: the end is still retried from memory
        event(log, logging.ERROR, "could not spool the call's end", call_id=call.key, error=str(exc))


async def replay_spool(ctx: EdgeContext) -> None:
    """Offer the store the ends a previous process of this pod spooled and could not hand over. Each
    such call ended on the SIP side, so its end wins over an edge that took its record over since
    (SPOOLED_END_EPOCH). Raises when the store does not answer: the rest are offered next time."""
    if ctx.spool is None:
        return
    for end in ctx.spool.loaded():
        outcome = await ctx.store.end_call_with_cdr(end.call, SPOOLED_END_EPOCH, end.cdr, trunk=end.trunk,
                                                    dialogs=end.dialogs)  # fmt: skip
        event(log, logging.INFO, "spooled call end replayed", call_id=end.call, outcome=str(outcome))
        await ctx.spool.done(end.call)


async def _end_in_store(ctx: EdgeContext, call: Call, cdr: str) -> CallEnd:
    pause = ctx.options.test_pause_at_cdr
    if pause == "before":
        await _test_pause(ctx, call, "before")
    outcome = await ctx.store.end_call_with_cdr(call.key, call.epoch, cdr, trunk=call.counters,
                                                dialogs=call.dialog_keys)  # fmt: skip
    if pause == "after":
        await _test_pause(ctx, call, f"after ({outcome})")
    if outcome is CallEnd.ENDED:
        ctx.cdr.write(call.record)  # the JSON lines file (--cdr) of the embedded default
    return outcome


async def _test_pause(ctx: EdgeContext, call: Call, where: str) -> None:
    event(log, logging.WARNING, "test pause at the CDR write", at=where, call_id=call.key)
    await ctx.sleep(TEST_PAUSE_SECONDS)


async def _end_later(ctx: EdgeContext, call: Call, cdr: str) -> None:
    """The store did not take the end: again until it does, so that a store outage loses no CDR (the
    fence still decides: if another edge took the call over meanwhile, its end is the one that counts)."""
    error = ""
    for delay in END_RETRIES:
        await ctx.sleep(delay)
        try:
            await _end_in_store(ctx, call, cdr)
        except Exception as exc:
            error = str(exc)
            continue
        if ctx.spool is not None:
            await ctx.spool.done(call.key)
        return
    lost = "left in the spool for the next start" if ctx.spool is not None else "its CDR is lost"
    event(log, logging.ERROR, f"call end never reached the store: {lost}", call_id=call.key, error=error)
