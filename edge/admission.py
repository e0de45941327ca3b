"""Admission of a new call: one call per Call-ID (a second initial INVITE is 482), the trunk's
call rate, then a channel, all counted in the store that every edge shares. From then on the store
keeps the ringing call's record (so that another edge answers the caller should this one die).

An emergency call takes a channel (it counts against the trunk's other calls) but is held to neither
cap, and a store that does not answer admits it on this edge's own word (docs/emergency.md)."""

from __future__ import annotations

import logging
import time

from trunkline.core.logs import event
from trunkline.core.state import Admission
from trunkline.edge.call import Call
from trunkline.edge.context import EdgeContext
from trunkline.edge.ending import refused_by_store
from trunkline.edge.policy import Rejection
from trunkline.sip.stack import Incoming

log = logging.getLogger("trunkline.edge")


async def admit(ctx: EdgeContext, inc: Incoming, call: Call) -> bool:
    """True when the call may go on (and is held from now on); else the caller was answered 503."""
    spec, defaults = call.trunk.spec, ctx.options.trunk_defaults
    emergency = call.record.emergency
    channels, per_second = (
        (None, None) if emergency else (defaults.channels_of(spec), defaults.calls_per_second_of(spec))
    )
    rejection: Rejection | None = None
    stored = True
    started = time.monotonic()
    try:
        verdict = await ctx.store.admit(
            call.counters, call.key, channels, per_second, ctx.owner,
            call.to_state(ctx.media.snapshot(call)), ctx.options.max_duration + 60,
        )  # fmt: skip
        if verdict is Admission.OVER_RATE:
            detail = f"over {per_second:g}/s"
            rejection = Rejection(503, "Service Unavailable", "callsPerSecond", detail, retry_after=1)
        elif verdict is Admission.DUPLICATE:
            # A second INVITE for a call in progress (here or at another edge), e.g. a new From-tag
            # to get past the channel cap: a merged request (RFC 3261 8.2.2.2).
            rejection = Rejection(482, "Loop Detected", "callId", "a call with this Call-ID is in progress")
        elif verdict is Admission.NO_CHANNEL:
            detail = f"all {channels} in use"
            rejection = Rejection(503, "Service Unavailable", "channels", detail, retry_after=5)
        ctx.metrics.store("admit", time.monotonic() - started)
    except Exception as exc:  # the store is down: no new calls (documented degraded mode)...
        ctx.metrics.store("admit", time.monotonic() - started, ok=False)
        if emergency and ctx.calls.get(call.key) is not None:  # this edge's own word on duplicates
            rejection = Rejection(482, "Loop Detected", "callId", "a call with this Call-ID is in progress")
        elif emergency:  # ... but an emergency call: held here alone; its end reaches the store later
            event(log, logging.WARNING, "emergency call admitted without the store", call_id=call.key,
                  trunk=call.trunk.name, error=str(exc))  # fmt: skip
            stored = False
        else:
            rejection = Rejection(503, "Service Unavailable", "store", str(exc), retry_after=5)
            await refused_by_store(ctx, call, 503, "store unavailable at admission")
    if rejection is not None:
        ctx.reject(inc, rejection, call.trunk.name, call.a.tag)
        return False
    ctx.calls.hold(call)
    if not stored:  # its record is written once the store answers (edge/late_records.py)
        ctx.unstored[call.key] = call
    ctx.calls.add_dialog((inc.request.call_id, call.a.tag, inc.request.from_.tag or ""), call, "a")
    return True
