"""Requests inside a call's dialogs: ACK (passed on to the other leg), BYE, re-INVITE, UPDATE, INFO
and the rest relayed across the legs (with the SDP through the media plane), the callee's remote
target refresh, a stray 2xx retransmitted by the callee, and the caller's missing ACK."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from trunkline.core.logs import event
from trunkline.core.models import Trunk
from trunkline.core.state import CallEnd
from trunkline.edge.call import Call, MediaError
from trunkline.edge.carrier_auth import request_on_leg
from trunkline.edge.cdr import Direction, HungUp
from trunkline.edge.context import DialogId, EdgeContext
from trunkline.edge.ending import bye, finish, stand_down, still_held
from trunkline.edge.legs import ack_for, in_dialog, relay_response
from trunkline.edge.session_timers import start_session_timer
from trunkline.edge.trace_messages import peer, sip_event
from trunkline.sip.errors import SipParseError
from trunkline.sip.message import Response
from trunkline.sip.stack import Incoming, NoAnswer
from trunkline.sip.uri import SipUri, parse_uri

log = logging.getLogger("trunkline.edge")
Adopt = Callable[[DialogId], Awaitable["tuple[Call, str] | None"]]
# Digest authentication of a request (the auth room's, given by the coordinator): the trunk, or None
# after answering it.
Authenticate = Callable[[Incoming], Awaitable["Trunk | None"]]


def faces_trunk(call: Call, leg_name: str) -> bool:
    """Is the party on this leg the trunk's PBX (else a carrier)?"""
    return (leg_name == "a") == (call.direction is Direction.OUTBOUND)


def from_party(ctx: EdgeContext, call: Call, leg_name: str, source: str) -> bool:
    """Does `source` belong to the party of this leg: the address the leg talks to (the caller's
    signalling source, the callee's registered contact or target), else for a PBX its trunk's IP ACL,
    for a carrier any carrier's inbound CIDRs or gateway addresses (docs/security.md)."""
    if source == call.leg(leg_name).addr[0]:
        return True
    directory = ctx.directory
    if faces_trunk(call, leg_name):
        trunk = directory.trunk_for_source(source)
        return trunk is not None and trunk.key == call.trunk.key
    if directory.carrier_for_source(source) is not None:
        return True
    return any(_host(g.uri) == source for c in directory.carriers for g in c.spec.gateways)


def _host(uri: str) -> str:
    try:
        parsed = parse_uri(uri)
    except SipParseError:
        return ""
    return parsed.host.strip("[]") if isinstance(parsed, SipUri) else ""


def on_ack(ctx: EdgeContext, inc: Incoming) -> bool:
    """Pass a caller's ACK of our 2xx on to the callee; False when the call is not held here."""
    req = inc.request
    found = ctx.calls.find((req.call_id, req.to.tag or "", req.from_.tag or ""))
    if found is None:
        return False
    _pass_ack(ctx, inc, *found)
    return True


async def on_ack_elsewhere(ctx: EdgeContext, inc: Incoming, adopt: Adopt) -> None:
    """An ACK of a call another edge answered: a Service sent the caller's flow here between the 2xx
    and its ACK (that edge left the Service: a rolling update). That edge never gets the ACK, so it
    would never ACK the callee's 2xx: take the call over and ACK the callee here."""
    req = inc.request
    if req.to.tag is None:
        return
    found = await adopt((req.call_id, req.to.tag, req.from_.tag or ""))
    if found is None:
        return
    call, leg_name = found
    b = call.b
    if leg_name != "a" or b is None or b.dialog is None or not from_party(ctx, call, leg_name, inc.addr[0]):
        return
    # The callee's 2xx answered the dialog's last INVITE (nothing else went to it yet): its CSeq.
    ack = b.dialog.create_request("ACK", ctx.local.via(b.transport), cseq=b.dialog.local_seq)
    call.last_b_ack = ack
    ctx.stack.send_ack(ack, b.addr, b.transport)


def _pass_ack(ctx: EdgeContext, inc: Incoming, call: Call, leg_name: str) -> None:
    req = inc.request
    if not from_party(ctx, call, leg_name, inc.addr[0]):
        return  # an ACK cannot be challenged: one from a stranger is dropped
    invite = call.pending_ack.pop(leg_name, None)
    if invite is None:
        return
    other = call.leg(call.other(leg_name))
    if other.dialog is None:
        return
    if other is call.b:
        ctx.ack_b(call, invite, req)
    else:
        ack = ack_for(other.dialog, ctx.local, other.transport, invite, req)
        ctx.stack.send_ack(ack, other.addr, other.transport)


def on_stray_response(ctx: EdgeContext, response: Response) -> None:
    """A retransmitted 2xx from a callee whose ACK was lost: ACK it again."""
    if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
        return
    found = ctx.calls.find((response.call_id, response.from_.tag or "", response.to.tag or ""))
    if found and found[0].last_b_ack is not None:
        call = found[0]
        assert call.b is not None and call.last_b_ack is not None
        ctx.stack.send_ack(call.last_b_ack, call.b.addr, call.b.transport)


async def on_ack_timeout(ctx: EdgeContext, dialog: DialogId) -> None:
    """The caller never acknowledged our 2xx (64*T1): the call ends both ways."""
    found = ctx.calls.find(dialog)
    if found is None or found[1] != "a":
        return
    call = found[0]
    event(log, logging.WARNING, "caller never acknowledged the answer", call_id=call.key)
    if call.b and call.b.dialog and "a" in call.pending_ack:
        ctx.ack_b(call, call.pending_ack.pop("a"), None)
    if await finish(ctx, call, HungUp.EDGE, call.record.status) in (CallEnd.ENDED, None):
        ctx.spawn(bye(ctx, call, "a"))
        ctx.spawn(bye(ctx, call, "b"))


async def on_request(ctx: EdgeContext, inc: Incoming, adopt: Adopt, authenticate: Authenticate) -> None:
    """A request with a To tag: relayed to the other leg of its call (found here, unless another edge
    took it over meanwhile, or handed over to this edge from the store through `adopt`), or 481. From
    an address that is not its party's, a PBX side's request must authenticate as the call's trunk and
    a carrier side's is refused 403."""
    req = inc.request
    dialog_id = (req.call_id, req.to.tag or "", req.from_.tag or "")
    found = ctx.calls.find(dialog_id)
    if found is not None and not await still_held(ctx, found[0]):
        found = None
    if found is None:
        found = await adopt(dialog_id)
        if found is not None:  # its trace began after this request came in: put it there too
            found[0].trace.note(sip_event(found[1], "received", req, peer(inc.addr)))
    if found is None:
        ctx.answer(inc, 481, "Call/Transaction Does Not Exist", req.to.tag)
        return
    call, leg_name = found
    step = call.trace.transaction(req.method, leg_name)
    try:
        with call.trace.current(), step.current():
            await _relay(ctx, inc, call, leg_name, authenticate)
    finally:
        step.end()


async def _relay(
    ctx: EdgeContext, inc: Incoming, call: Call, leg_name: str, authenticate: Authenticate
) -> None:
    req = inc.request
    this = call.leg(leg_name)
    if this.dialog is None:
        ctx.answer(inc, 481, "Call/Transaction Does Not Exist", req.to.tag)
        return
    if not from_party(ctx, call, leg_name, inc.addr[0]):
        if not faces_trunk(call, leg_name):
            ctx.answer(inc, 403, "Forbidden", req.to.tag)
            return
        trunk = await authenticate(inc)
        if trunk is None:
            return  # challenged (or refused, or silenced) by the auth room
        if trunk.key != call.trunk.key:
            ctx.answer(inc, 403, "Forbidden", req.to.tag)
            return
    try:
        this.dialog.receive_request(req)
    except SipParseError as exc:
        ctx.answer(inc, exc.status, exc.reason, this.tag)
        return
    if this is call.b:
        await ctx.follow_target(this)
    other_name = call.other(leg_name)
    other = call.leg(other_name)
    if req.method == "BYE":  # answered once the end is stored: see ending.finish
        ctx.spawn(bye(ctx, call, other_name))
        await finish(ctx, call, HungUp.CALLER if leg_name == "a" else HungUp.CALLEE, call.record.status,
                     then=lambda: ctx.answer(inc, 200, None, req.to.tag))  # fmt: skip
        return
    if other.dialog is None:
        ctx.answer(inc, 481, "Call/Transaction Does Not Exist", req.to.tag)
        return
    out = in_dialog(other.dialog, req.method, ctx.local, other.transport, req)
    if req.body and req.method in ("INVITE", "UPDATE"):
        try:
            out.body = await ctx.media.rewrite(call, req.body, leg_name)
        except MediaError as exc:  # a re-offer the trunk's rules refuse: the session stays as it was
            ctx.answer(inc, exc.status, exc.reason, req.to.tag)
            return
    try:
        out, answer = await request_on_leg(ctx, call, other_name, out)  # a carrier's challenge answered
    except NoAnswer:
        ctx.answer(inc, 408, "Request Timeout", req.to.tag)
        return
    other.dialog.receive_response(out, answer)
    if other is call.b:
        await ctx.follow_target(other)
    if answer.body and req.method in ("INVITE", "UPDATE"):
        answer.body = await ctx.rewrite_or_keep(call, answer.body, other_name)
    if req.method == "INVITE" and 200 <= answer.status < 300:
        call.pending_ack[leg_name] = out
    if req.method in ("INVITE", "UPDATE") and 200 <= answer.status < 300:
        start_session_timer(ctx, call, answer)
    if not await ctx.save(call):  # the CSeqs and targets moved on
        stand_down(ctx, call, "taken over")
    ctx.stack.respond(relay_response(req, answer, req.to.tag or "", ctx.local.contact(this.transport)))
