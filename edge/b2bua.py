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

from trunkline.core.state import StateStore, StoreUnavailable
from trunkline.edge import admission, adoption, attempts, auth, ending, in_dialog, new_call
from trunkline.edge.call import Call, MediaPlane, PassThrough
from trunkline.edge.cdr import CdrSink, HungUp
from trunkline.edge.context import DialogId, EdgeContext, EdgeOptions
from trunkline.edge.digest import DigestAuthenticator
from trunkline.edge.directory import Directory
from trunkline.edge.legs import ALLOW, Local, new_tag, response_for
from trunkline.edge.resolver import Resolver
from trunkline.sip.message import Response
from trunkline.sip.stack import Incoming, SipStack, Stack
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
    ) -> None:
        self.directory = directory
        options = options or EdgeOptions()
        self.stack: Stack = stack or SipStack()
        self.ctx = EdgeContext(
            self.stack, clock, store, lambda: self.directory, local, cdr, media or PassThrough(), options,
            authenticator or DigestAuthenticator(nonce_ttl=options.nonce_ttl), resolver or Resolver(),
            owner or f"{socket.gethostname()}-{os.getpid()}",
        )  # fmt: skip
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
            in_dialog.on_ack(ctx, inc)
            return None
        if req.method == "CANCEL":
            attempts.on_cancel(ctx, inc)
            return None
        if req.to.tag is not None:
            return asyncio.ensure_future(in_dialog.on_request(ctx, inc, self._adopt))
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
            return asyncio.ensure_future(auth.on_register(ctx, inc))
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

    # -- new calls ---------------------------------------------------------------------------------
    async def _new_call(self, inc: Incoming) -> None:
        """Set up a call; whatever goes wrong inside, the caller gets an answer and nothing leaks."""
        try:
            await self._set_up(inc)
        except Exception as exc:
            unavailable = isinstance(exc, StoreUnavailable)
            status, reason = (503, "Service Unavailable") if unavailable else (500, "Server Internal Error")
            log.error("call set-up failed: %s", exc, exc_info=not unavailable)
            call = self.ctx.calls.get(inc.request.call_id)
            if call is None or not call.record.answer:
                self.stack.respond(
                    response_for(inc.request, status, reason, call.a.tag if call else new_tag())
                )
            if call is not None:
                await ending.finish(
                    self.ctx, call, HungUp.EDGE, status, reason=f"{type(exc).__name__}: {exc}"
                )

    async def _set_up(self, inc: Incoming) -> None:
        req, ctx = inc.request, self.ctx
        if ctx.draining:
            response = response_for(req, 503, "Service Unavailable (draining)", new_tag())
            response.add("Retry-After", "5")
            self.stack.respond(response)
            return
        carrier = self.directory.carrier_for_source(inc.addr[0])
        if carrier is not None and req.get("Proxy-Authorization") is None:
            planned = new_call.inbound(ctx, inc, carrier.spec.numbering)
        else:
            trunk = self.directory.trunk_for_source(inc.addr[0])
            if trunk is None:
                who = await auth.authenticate(ctx, inc, "Proxy-Authorization", 407)
                if who is None:
                    return
                trunk = who[0]
            planned = new_call.outbound(ctx, inc, trunk)
        if planned is None or not await admission.admit(ctx, inc, planned.call):
            return
        targets = planned.targets
        if planned.did is not None:
            targets = await attempts.targets_of_did(ctx, planned.call.trunk, planned.did)
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
        """Tell the store this edge lives, and take over the calls of edges that stopped saying so."""
        await adoption.keep_alive(self.ctx)
