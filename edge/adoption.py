"""Calls held by other edges: the keep-alive that tells the store this edge lives, adopting the
calls of edges that stopped saying so (while the store answered), and the explicit handover of a
call whose in-dialog request came here while another edge holds it: the store raises the call's
epoch, so the previous holder stands down at its next fenced write, timer or end (docs/failover.md).
A ringing call whose edge died gets its caller answered 503 and its relay session released."""

from __future__ import annotations

import logging
import secrets

from trunkline.core.logs import event
from trunkline.core.state import CallState
from trunkline.edge import observing
from trunkline.edge.call import Call
from trunkline.edge.cdr import HungUp
from trunkline.edge.context import DialogId, EdgeContext
from trunkline.edge.ending import finish, replay_spool
from trunkline.edge.late_records import write_unstored
from trunkline.edge.legs import response_for
from trunkline.edge.session_timers import arm_limit, arm_session_expiry

log = logging.getLogger("trunkline.edge")


async def adopt(ctx: EdgeContext, dialog_id: DialogId) -> tuple[Call, str] | None:
    """A call this edge does not hold, from the store: its edge died or the request came here."""
    try:
        state = await ctx.store.adopt_call("|".join(dialog_id), ctx.owner)
    except Exception as exc:
        event(log, logging.WARNING, "could not look up call", error=str(exc))
        return None
    if state is None:
        return None
    call = carry(ctx, state)
    return ctx.calls.find(dialog_id) if call else None


def carry(ctx: EdgeContext, state: CallState) -> Call | None:
    """Hold an adopted call like one of ours; a call that never got answered is failed instead."""
    try:
        call = Call.from_state(state)
    except (ValueError, KeyError, TypeError) as exc:
        event(log, logging.ERROR, "unusable call record", error=repr(exc))
        return None
    held = ctx.calls.get(call.key)
    if held is not None:  # handed back to this edge: hold it with the new epoch
        held.epoch = max(held.epoch, call.epoch)
        return held
    ctx.media.adopt(call, state.get("media") or {})
    observing.adopted(ctx.traces, call)
    if call.record.answer is None or call.a.dialog is None or call.b is None or call.b.dialog is None:
        ctx.spawn(fail_orphan(ctx, call))
        return None
    ctx.calls.hold(call)
    observing.held(ctx.metrics, call)
    for leg_name, leg in (("a", call.a), ("b", call.b)):
        assert leg.dialog is not None
        ctx.calls.add_dialog(leg.dialog.id, call, leg_name)
    arm_limit(ctx, call)
    if call.session_seconds:
        arm_session_expiry(ctx, call)
    event(log, logging.INFO, "call adopted", call_id=call.key, trunk=call.trunk.name)
    return call


async def fail_orphan(ctx: EdgeContext, call: Call) -> None:
    """The caller of a call whose edge died before it was answered gets a final answer from us.
    There is no server transaction here: the response goes straight where the INVITE's Via says."""
    status, reason = 503, "Service Unavailable (edge lost)"
    response = response_for(call.a_invite, status, reason, call.a.tag)
    response.add("Retry-After", "1")
    ctx.stack.send_stateless(response, call.a.addr, call.a.transport)
    event(log, logging.WARNING, "ringing call lost with its edge", call_id=call.key, status=status)
    await finish(ctx, call, HungUp.EDGE, status, reason="edge lost while ringing")


def incarnation(edge_id: str) -> str:
    """The owner name of this process of the edge `edge_id` (in Kubernetes the pod's name, which a
    container restart keeps): `<edge_id>/<random>`, so that a restarted process is a new owner and
    never renews the keep-alive of calls it knows nothing about."""
    return f"{edge_id}/{secrets.token_hex(4)}"


def predecessors_of(owner: str) -> str:
    """The owner-name prefix of the earlier processes of this one's edge id ("" when `owner` is not an
    `incarnation`): they died with their container, their calls are this process's to carry."""
    edge_id, slash, process = owner.rpartition("/")
    return f"{edge_id}/" if slash and edge_id and process else ""


async def keep_alive(ctx: EdgeContext) -> None:
    """Tell the store this edge lives, and take over the calls of edges that stopped saying so. First
    the spooled ends a previous process of this pod left are replayed, then that process's calls are
    taken over at once (named by the pod's edge id, they are no other pod's)."""
    interval = ctx.options.owner_ttl / 3
    predecessors, replayed = predecessors_of(ctx.owner), False
    while True:
        try:
            claim = predecessors if replayed else ""
            for state in await ctx.store.keep_alive(ctx.owner, ctx.options.owner_ttl, claim):
                carry(ctx, state)
            await write_unstored(ctx)  # the store answers again: calls admitted without it
            predecessors = "" if claim else predecessors
            if not replayed:
                await replay_spool(ctx)
                replayed = True
                continue  # the predecessors' calls now, not a keep-alive interval later
        except Exception as exc:
            event(log, logging.WARNING, "store keep-alive failed", error=str(exc))
        await ctx.sleep(interval)
