"""Routing a call: the targets in order (registered contacts, origination targets, carriers), each
target's RFC 3263 hops, failover when a hop stays silent, relaying provisional answers, the answer,
the caller's CANCEL (and ours to the callee), ring timeout and the caller's final failure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial

from trunkline.core.logs import event
from trunkline.core.models import DID, Target, Trunk
from trunkline.core.state import aor_of
from trunkline.edge import attempt_ends, emergency, observing, trace_headers
from trunkline.edge.call import Call, Leg, MediaError
from trunkline.edge.carrier_auth import send_answering_challenges
from trunkline.edge.cdr import Attempt, Direction, HungUp
from trunkline.edge.context import EdgeContext
from trunkline.edge.ending import bye, finish, stand_down
from trunkline.edge.legs import ack_for, first_invite, new_tag, relay_response, response_for
from trunkline.edge.registrar import NatSource
from trunkline.edge.resolver import Hop
from trunkline.edge.routing import inbound_targets, lookup_uri
from trunkline.edge.session_timers import arm_limit, start_session_timer
from trunkline.edge.tracing import NO_ATTEMPT
from trunkline.edge.tracing import Attempt as AttemptSpan
from trunkline.sip.dialog import Dialog
from trunkline.sip.errors import SipParseError
from trunkline.sip.message import Request, Response
from trunkline.sip.stack import Incoming, NoAnswer
from trunkline.sip.transaction import build_cancel, server_key
from trunkline.sip.uri import SipUri, parse_uri

log = logging.getLogger("trunkline.edge")


async def targets_of_did(ctx: EdgeContext, trunk: Trunk, did: DID) -> list[tuple[Target, str]]:
    """Registered contacts first (the freshest first), then origination targets."""
    targets: list[tuple[Target, str]] = []
    if trunk.spec.registration.enabled and trunk.spec.auth.digest:
        username = ctx.directory.username_of(trunk)
        if username:
            for binding in await ctx.store.bindings(aor_of(username)):
                uri = binding.contact
                if binding.source:  # behind NAT: send to where the REGISTER came from
                    try:
                        source = NatSource.parse(binding.source)
                    except ValueError:
                        event(log, logging.WARNING, "unusable binding source", source=binding.source)
                        continue
                    uri = f"sip:{source.uri_host}:{source.port};transport={source.transport}"
                targets.append((Target(uri=uri), did.spec.number))
    targets += [(t, did.spec.number) for t in inbound_targets(trunk, did)]
    return targets


async def route(
    ctx: EdgeContext, inc: Incoming, call: Call, targets: Sequence[tuple[Target, str]], caller: str
) -> None:
    last: Response | None = None
    offer = inc.request
    try:
        offer_body = await ctx.media.rewrite(call, offer.body, "a") if offer.body else b""
    except MediaError as exc:
        event(log, logging.WARNING, "media refused", call_id=call.key, status=exc.status, why=exc.reason)
        ctx.stack.respond(response_for(inc.request, exc.status, exc.reason, call.a.tag))
        await finish(ctx, call, HungUp.EDGE, exc.status, reason=exc.reason)
        return
    if ctx.media.snapshot(call):  # the relay session is in the record from the moment it exists
        await ctx.save(call)
    async for target, number, parsed, hop in hops(ctx, call, targets):
        if call.cancelled:
            break
        request_uri = SipUri("sip", "", number, None, parsed.host, parsed.port, dict(parsed.params))
        max_forwards = (offer.max_forwards or 70) - 1
        invite = first_invite(ctx.local, hop.transport, request_uri, caller, number, max_forwards, offer)
        invite.body = offer_body
        invite, response, refused = await send_answering_challenges(
            ctx, call, target.uri, hop, invite, partial(attempt, ctx, call, target, hop)
        )
        if response is None:
            continue  # no answer: next target
        last = response
        if 200 <= response.status < 300:
            observing.answered_by(call, ctx.directory.carriers, target)
            await answered(ctx, call, invite, response)
            return
        if refused:
            continue  # the carrier does not take our credentials here: its next gateway may
        if not emergency.tries_next(call.record.emergency, response.status):
            break
    await failed(ctx, inc, call, last)


async def attempt(ctx: EdgeContext, call: Call, target: Target, hop: Hop, invite: Request) -> Response | None:
    """One INVITE to one hop, in the CDR and the trace as an attempt of its own (a challenged INVITE
    and the one answering it are two)."""
    call.b_invite, call.b_provisional, call.b_post_dial_delay = invite, False, None
    call.b = Leg((hop.host, hop.port), hop.transport, tag=invite.from_.tag or "")
    record = Attempt(target.uri, gateway=observing.host_port(hop.host, hop.port))
    call.record.attempts.append(record)
    span = call.trace.attempt(f"{hop.host}:{hop.port}", hop.transport, invite.call_id, target_uri=target.uri)
    trace_headers.stamp(invite, span, call, ctx.directory.carriers, target)
    ctx.traces.add(invite.call_id, call.trace, "b")
    with span.current():  # the relay's work for this attempt continues its span
        response = await try_target(ctx, call, invite, span)
    record.status = response.status if response else None
    span.end(None if response is None or response.status < 300 else str(response.status))
    if carrier := observing.carrier_with(ctx.directory.carriers, target):
        attempt_ends.attempt_ended(ctx, call, carrier, target.uri, response)  # metrics, store
    if response is None or response.status >= 300:  # this attempt's Call-ID is done with
        ctx.traces.drop(invite.call_id, call.trace)
    return response


async def hops(
    ctx: EdgeContext, call: Call, targets: Sequence[tuple[Target, str]]
) -> AsyncIterator[tuple[Target, str, SipUri, Hop]]:
    """Every address to try, in order: each target's RFC 3263 hops in turn."""
    default = call.trunk.spec.transport.value if call.direction is Direction.INBOUND else "udp"
    for target, number in targets:
        parsed = parse_uri(target.uri)
        if not isinstance(parsed, SipUri):
            continue
        found = await ctx.resolver.resolve(lookup_uri(parsed, default), default)
        if not found:
            event(log, logging.WARNING, "target does not resolve", target=target.uri, call_id=call.key)
        for hop in found:
            if hop.transport == "tls" and hop.host != parsed.host.strip("[]"):
                ctx.stack.verify_tls_name((hop.host, hop.port), parsed.host)  # RFC 5922
            yield target, number, parsed, hop


async def try_target(
    ctx: EdgeContext, call: Call, invite: Request, span: AttemptSpan = NO_ATTEMPT
) -> Response | None:
    """Send one INVITE; relay provisional answers; None when the target never answered."""
    assert call.b is not None
    leg = call.b
    sent = time.monotonic()
    timed: list[bool] = []

    def post_dial_delay(status: int) -> None:
        """The first answer past 100 Trying: how long the caller waited for a sign of life."""
        span.response(status)
        if status > 100 and not timed:
            timed.append(True)
            ctx.metrics.post_dial_delay(call.trunk.name, time.monotonic() - sent)
        if call.b_post_dial_delay is None and (180 <= status < 190 or 200 <= status < 300):
            call.b_post_dial_delay = time.monotonic() - sent  # the gateway's figures: ringing or answer

    def provisional(response: Response) -> None:
        post_dial_delay(response.status)
        call.b_provisional = True
        if call.cancelled:
            send_cancel(ctx, call)
            return
        if response.status > 100:
            ctx.spawn(relay_provisional(ctx, call, response))

    future = ctx.stack.request(invite, leg.addr, leg.transport, provisional)
    try:
        if await ctx.wait_at_most(future, ctx.options.failover_after):
            post_dial_delay(future.result().status)
            return future.result()
        if not call.b_provisional:
            ctx.stack.abandon(invite)
            return None
        if await ctx.wait_at_most(future, ctx.options.ring_timeout):
            post_dial_delay(future.result().status)
            return future.result()
    except NoAnswer:
        return None
    if call.b_provisional and not future.done():
        send_cancel(ctx, call)  # rang too long: stop it ringing, and the 487 it answers is of no interest
        future.add_done_callback(partial(hang_up_late_answer, ctx, invite, leg))
        return None
    future.cancel()
    return None


def hang_up_late_answer(
    ctx: EdgeContext, invite: Request, leg: Leg, future: asyncio.Future[Response]
) -> None:
    """A 2xx that crossed our CANCEL (RFC 3261 15): the callee thinks the call is up, so it gets its
    ACK and then a BYE, or it would stay up at its end until its own timers end it."""
    if future.cancelled() or future.exception() is not None or not 200 <= future.result().status < 300:
        return
    try:
        dialog = Dialog.from_uac(invite, future.result())
    except SipParseError:
        return
    ctx.stack.send_ack(ack_for(dialog, ctx.local, leg.transport, invite, None), leg.addr, leg.transport)
    bye = ctx.stack.request(
        dialog.create_request("BYE", ctx.local.via(leg.transport)), leg.addr, leg.transport
    )
    bye.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)


async def relay_provisional(ctx: EdgeContext, call: Call, response: Response) -> None:
    if call.ended or call.cancelled:
        return
    if response.body:
        response.body = await ctx.rewrite_or_keep(call, response.body, "b")
    ctx.stack.respond(
        relay_response(call.a_invite, response, call.a.tag, ctx.local.contact(call.a.transport))
    )


async def answered(ctx: EdgeContext, call: Call, invite: Request, response: Response) -> None:
    assert call.b is not None
    try:
        call.b.dialog = Dialog.from_uac(invite, response)
    except SipParseError as exc:
        event(log, logging.WARNING, "callee answered without a usable dialog", error=str(exc))
        call.b.dialog = None
    if call.cancelled or call.b.dialog is None:
        if call.b.dialog is not None:
            ctx.ack_b(call, invite, None)
            ctx.spawn(bye(ctx, call, "b"))
        await finish(ctx, call, HungUp.CALLER if call.cancelled else HungUp.EDGE, 487)
        return
    ctx.calls.add_dialog(call.b.dialog.id, call, "b")
    await ctx.follow_target(call.b)
    if response.body:
        try:
            response.body = await ctx.media.rewrite(call, response.body, "b")
        except MediaError as exc:  # e.g. no SRTP keys when the trunk requires them: never connect
            event(log, logging.WARNING, "answer refused", call_id=call.key, status=exc.status, why=exc.reason)
            ctx.ack_b(call, invite, None)
            ctx.spawn(bye(ctx, call, "b"))
            ctx.stack.respond(response_for(call.a_invite, exc.status, exc.reason, call.a.tag))
            await finish(ctx, call, HungUp.EDGE, exc.status, reason=exc.reason)
            return
    ok = relay_response(call.a_invite, response, call.a.tag, ctx.local.contact(call.a.transport))
    try:
        call.a.dialog = Dialog.from_uas(call.a_invite, ok)
    except SipParseError:
        call.a.dialog = None
    call.record.answer = ctx.clock()
    call.record.status = response.status
    call.pending_ack["a"] = invite
    arm_limit(ctx, call)
    start_session_timer(ctx, call, response)
    if not await ctx.save(call):  # before the caller hears of it: from now on any edge can end the call
        # Another edge found this one dead while the call rang and answered the caller 503.
        ctx.spawn(bye(ctx, call, "b"))
        stand_down(ctx, call, "taken over while ringing")
    if call.ended:
        return
    ctx.stack.respond(ok)  # the stack retransmits it until the ACK (or reports an ACK timeout)
    record = call.record
    event(log, logging.INFO, "call answered", trunk=record.trunk, direction=record.direction.value,
          caller=record.caller, callee=record.callee, target=record.attempts[-1].target)  # fmt: skip


async def failed(ctx: EdgeContext, inc: Incoming, call: Call, last: Response | None) -> None:
    if call.cancelled:
        status, reason = 487, "Request Terminated"
    elif last is None:
        status, reason = (408, "Request Timeout") if call.record.attempts else (404, "No Route")
    else:
        status, reason = last.status, last.reason
    ctx.stack.respond(response_for(inc.request, status, reason, call.a.tag))
    await finish(ctx, call, HungUp.CALLER if call.cancelled else HungUp.NOBODY, status)


def on_cancel(ctx: EdgeContext, inc: Incoming) -> None:
    """The caller's CANCEL: 200 when it matches a live INVITE transaction, then 487 to that INVITE
    and CANCEL to the callee once it rang (RFC 3261 9.1: no CANCEL before a provisional)."""
    key = ctx.stack.invite_for_cancel(inc.request)
    call = ctx.calls.get(inc.request.call_id)
    if key is not None and (call is None or server_key(call.a_invite, "INVITE") != key):
        # RFC 3261 9.2: it matched the transaction of another INVITE (its branch) while naming this
        # call (its Call-ID): it cancels neither.
        key = None
    ctx.answer(inc, 200 if key else 481, None, inc.request.to.tag or new_tag())
    if key is None or call is None or call.cancelled or call.record.answer:
        return
    call.cancelled = True
    if call.b_invite is not None and call.b_provisional:
        send_cancel(ctx, call)
    ctx.stack.respond(response_for(call.a_invite, 487, "Request Terminated", call.a.tag))


def send_cancel(ctx: EdgeContext, call: Call) -> None:
    if call.b_invite is None or call.b is None:
        return
    future = ctx.stack.request(build_cancel(call.b_invite), call.b.addr, call.b.transport)
    future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
