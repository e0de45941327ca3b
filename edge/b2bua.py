"""The SIP edge: a B2BUA that carries calls between trunks (customers' PBXs) and carriers.

Per request: who sent it (carrier CIDR, trunk IP ACL or digest user), what it may do (policy, limits),
where it goes (DID -> registered contacts and origination targets; number -> carrier gateways), then
two legs with nothing in common but the session: see `legs.py` for topology hiding.

`Edge` only dispatches: each concern is a room of its own (auth, new_call, admission, attempts,
in_dialog, session_timers, adoption, ending) over the shared `EdgeContext`. A call's control flow is
a coroutine per call, which reads as the call flow does; SIP timing (retransmissions, timeouts, the
edge's own timers) is the transaction layer's, behind the `Stack` the edge is given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from trunkline.core.emergency import emergency_number
from trunkline.core.models import Trunk
from trunkline.core.state import StateStore, StoreUnavailable
from trunkline.edge import (
    admission,
    adoption,
    attempts,
    auth,
    ending,
    in_dialog,
    new_call,
    observing,
    registrations,
    trace_headers,
)
from trunkline.edge.call import Call, MediaPlane
from trunkline.edge.cdr import CdrSink, HungUp
from trunkline.edge.context import DialogId, EdgeContext, EdgeOptions
from trunkline.edge.digest import DigestAuthenticator
from trunkline.edge.direct_media import DirectMedia
from trunkline.edge.directory import Directory
from trunkline.edge.legs import ALLOW, Local, new_tag, response_for, user_of
from trunkline.edge.metrics import EdgeMetrics
from trunkline.edge.observing import ObservedStack, Traces
from trunkline.edge.resolver import Resolver
from trunkline.edge.tracing import NoTrace
from trunkline.sip.errors import SipParseError
from trunkline.sip.message import Response
from trunkline.sip.stack import Incoming, SipStack, Stack, error_status
from trunkline.sip.transaction import Addr

log = logging.getLogger("trunkline.edge")


class Edge:
    """The B2BUA over a `Stack`. `directory` may be replaced at any time (configuration changes)."""

    def __init__(
        self,
        directory: Directory,
        store: StateStore,
        local: Local,
        cdr: CdrSink,
        media: MediaPlane | None = None,
        options: EdgeOptions | None = None,
        authenticator: DigestAuthenticator | None = None,
        clock: Callable[[], float] = time.time,
        resolver: Resolver | None = None,
        owner: str | None = None,
        stack: Stack | None = None,
        metrics: EdgeMetrics | None = None,
    ) -> None:
        self.directory = directory
        options = options or EdgeOptions()
        self.metrics = metrics or EdgeMetrics(CollectorRegistry())
        self.traces = Traces()
        # Every message in and out passes here once: counted, and put on its call's trace.
        self.stack: Stack = ObservedStack(stack or SipStack(), self.metrics, self.traces)
        self.ctx = EdgeContext(
            self.stack, clock, store, lambda: self.directory, local, cdr, media or DirectMedia(), options,
            authenticator or DigestAuthenticator(nonce_ttl=options.nonce_ttl), resolver or Resolver(),
            owner or f"{socket.gethostname()}-{os.getpid()}",
        )  # fmt: skip
        self.ctx.metrics, self.ctx.traces = self.metrics, self.traces
        self.stack.bind(self.on_request, self.on_stray_response, self.on_ack_timeout)

    @property
    def media(self) -> MediaPlane:
        return self.ctx.media

    @property
    def draining(self) -> bool:
        return self.ctx.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.ctx.draining = value

    @property
    def active_calls(self) -> int:
        return len(self.ctx.calls)

    # -- entry points ------------------------------------------------------------------------------
    def on_request(self, inc: Incoming) -> asyncio.Future[None] | None:
        req, ctx = inc.request, self.ctx
        if req.method == "ACK":
            if in_dialog.on_ack(ctx, inc):
                return None
            return asyncio.ensure_future(in_dialog.on_ack_elsewhere(ctx, inc, self._adopt))
        if req.method == "CANCEL":
            attempts.on_cancel(ctx, inc)
            return None
        if req.to.tag is not None:
            return asyncio.ensure_future(in_dialog.on_request(ctx, inc, self._adopt, self._authenticate))
        if req.method == "OPTIONS":
            response = req.create_response(200, to_tag=new_tag())
            response.add("Allow", ALLOW)
            self.stack.respond(response)
            return None
        max_forwards = req.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            ctx.answer(inc, 483, "Too Many Hops")
            return None
        if req.method == "INVITE":
            return asyncio.ensure_future(self._new_call(inc))
        if req.method == "REGISTER":
            return asyncio.ensure_future(self._register(inc))
        if req.method == "BYE":
            ctx.answer(inc, 481, "Call/Transaction Does Not Exist")
            return None
        response = req.create_response(405, to_tag=new_tag())
        response.add("Allow", ALLOW)
        self.stack.respond(response)
        return None

    def on_stray_response(self, response: Response, addr: Addr, transport: str) -> None:
        in_dialog.on_stray_response(self.ctx, response)

    def on_ack_timeout(self, dialog: DialogId) -> None:
        self.ctx.spawn(in_dialog.on_ack_timeout(self.ctx, dialog))

    async def _adopt(self, dialog: DialogId) -> tuple[Call, str] | None:
        return await adoption.adopt(self.ctx, dialog)

    async def _authenticate(self, inc: Incoming) -> Trunk | None:
        who = await auth.authenticate(self.ctx, inc, "Proxy-Authorization", 407)
        return who[0] if who else None

    # -- new calls ---------------------------------------------------------------------------------
    async def _register(self, inc: Incoming) -> None:
        trace = observing.start_trace(self.traces, inc, "REGISTER")
        try:
            with trace.current():
                await auth.on_register(self.ctx, inc)
        finally:
            self.traces.drop(inc.request.call_id)
            trace.finish(trace.last_status)

    async def _new_call(self, inc: Incoming) -> None:
        """Set up a call; whatever goes wrong inside, the caller gets an answer and nothing leaks."""
        parent = trace_headers.trusted_parent(self.directory, inc)  # a peer's that asks for it, or None
        trace = observing.start_trace(self.traces, inc, parent=parent)
        try:
            with trace.current():
                await self._set_up(inc, trace)
        except Exception as exc:
            # A peer's malformed request or the store being down: one line; our own bug: a traceback.
            expected = isinstance(exc, StoreUnavailable | SipParseError)
            status, reason = error_status(exc)
            log.error("call set-up failed: %s", exc, exc_info=not expected)
            call = self.ctx.calls.get(inc.request.call_id)
            if call is None or not call.record.answer:
                self.stack.respond(
                    response_for(inc.request, status, reason, call.a.tag if call else new_tag())
                )
            if call is not None:
                await ending.finish(
                    self.ctx, call, HungUp.EDGE, status, reason=f"{type(exc).__name__}: {exc}"
                )
        finally:
            if self.ctx.calls.get(inc.request.call_id) is None:  # refused, failed or over already
                self.traces.drop(inc.request.call_id)
                trace.finish(trace.last_status, reason="refused" if trace.last_status >= 300 else "")

    def _refuse_draining(self, inc: Incoming) -> None:
        response = response_for(inc.request, 503, "Service Unavailable (draining)", new_tag())
        response.add("Retry-After", "5")
        self.stack.respond(response)

    async def _set_up(self, inc: Incoming, trace: NoTrace) -> None:
        req, ctx = inc.request, self.ctx
        # Before we know the trunk: any trunk's emergency number may be one (confirmed once planned).
        maybe_emergency = emergency_number(
            user_of(req.uri), ctx.options.emergency_numbers, self.directory.emergency_numbers
        ) is not None  # fmt: skip
        if ctx.draining and not maybe_emergency:
            self._refuse_draining(inc)
            return
        carrier = self.directory.carrier_for_source(inc.addr[0])
        if carrier is not None and req.get("Proxy-Authorization") is None:
            with trace.step(
                "auth", sip__auth__method="carrier-cidr", sip__auth__outcome="ok", carrier=carrier.name
            ):
                pass
            planned = new_call.inbound(ctx, inc, carrier, self.directory.registration_user(carrier))
        else:
            trunk = self.directory.trunk_for_source(inc.addr[0])
            if trunk is None:
                with trace.step("auth", sip__auth__method="digest") as step:
                    who = await auth.authenticate(
                        ctx, inc, "Proxy-Authorization", 407, store_optional=maybe_emergency
                    )
                    step.set(sip__auth__outcome="ok" if who else "refused")
                if who is None:
                    return
                trunk = who[0]
            else:
                with trace.step("auth", sip__auth__method="ip-acl", sip__auth__outcome="ok"):
                    pass
            planned = new_call.outbound(ctx, inc, trunk)
        if planned is None:
            return
        if ctx.draining and not planned.emergency:
            self._refuse_draining(inc)
            return
        observing.traced(self.traces, planned.call, trace)
        with trace.step("admission", trunk=planned.call.trunk.name) as step:
            admitted = await admission.admit(ctx, inc, planned.call)
            step.set(outcome="admitted" if admitted else "rejected")
        if not admitted:
            return
        observing.held(self.metrics, planned.call)
        targets = planned.targets
        with trace.step("routing", callee=planned.callee) as step:
            if planned.did is not None:
                targets = await attempts.targets_of_did(ctx, planned.call.trunk, planned.did)
            if targets:
                first = targets[0][0]
                carrier_name = observing.carrier_of(self.directory.carriers, first) or None
                step.set(targets=len(targets), target=first.uri, carrier=carrier_name)
        await attempts.route(ctx, inc, planned.call, targets or [], planned.caller)

    # -- from outside SIP ----------------------------------------------------------------------------
    def end_call(self, key: str, why: str) -> bool:
        """End a call this edge holds from outside SIP (e.g. its media went silent): BYE both ways,
        CDR with `why`. False when no such call is held here."""
        call = self.ctx.calls.get(key)
        if call is None or call.record.answer is None:
            return False
        self.ctx.spawn(ending.expire(self.ctx, call, why))
        return True

    async def keep_alive(self) -> None:
        """Tell the store this edge lives, take over the calls of edges that stopped saying so, and
        keep the registered contacts on /metrics current."""
        await asyncio.gather(adoption.keep_alive(self.ctx), registrations.keep_counting(self.ctx))
