"""Emergency calls admitted while the store did not answer (edge/admission.py) are held by this edge
alone. Once the store answers again (this edge's keep-alive got through), each one still live gets
the record every other call has: owned by this edge (its keep-alive), findable by its dialogs, with
its relay session and dialog state, and its channel, so that another edge adopts it like any call
should this one die (docs/emergency.md)."""

from __future__ import annotations

import logging

from trunkline.core.logs import event
from trunkline.edge.call import Call
from trunkline.edge.context import EdgeContext

log = logging.getLogger("trunkline.edge")


async def write_unstored(ctx: EdgeContext) -> None:
    """Write the records of the calls admitted without the store, oldest first; the first failure
    leaves the rest for the next keep-alive."""
    for key, call in list(ctx.unstored.items()):
        if call.ended:
            ctx.unstored.pop(key, None)
            continue
        try:
            saved = await write(ctx, call)
        except Exception as exc:
            event(log, logging.WARNING, "could not write the record of a call admitted without the store",
                  call_id=key, error=str(exc))  # fmt: skip
            return
        ctx.unstored.pop(key, None)
        event(log, logging.INFO if saved else logging.WARNING,
              "record of a call admitted without the store written" if saved else
              "record of a call admitted without the store refused", call_id=key)  # fmt: skip


async def write(ctx: EdgeContext, call: Call) -> bool:
    """The call's record and channel in the store; False when the store refused the record (the call
    ended, or a newer epoch holds it). A call that ends meanwhile gets its channel freed again: its
    end (edge/ending.py) may have reached the store before the channel did."""
    ttl = ctx.record_ttl(call)
    state = call.to_state(ctx.media.snapshot(call))
    if not await ctx.store.save_call(call.counters, call.key, ctx.owner, state, call.dialog_keys, ttl,
                                     call.epoch):  # fmt: skip
        return False
    await ctx.store.acquire_channel(call.counters, call.key, None, ttl)  # held to no cap, as admitted
    if call.ended:
        await ctx.store.release_channel(call.counters, call.key)
    return True
