"""The SIP edge: a B2BUA that carries calls between trunks (customers' PBXs) and carriers.

Per request: who sent it (carrier CIDR, trunk IP ACL or digest user), what it may do (policy, limits),
where it goes (DID -> registered contacts and origination targets; number -> carrier gateways), then
two legs with nothing in common but the session: see `legs.py` for topology hiding.

The call's control flow is a coroutine per call (`_route`), which reads as the call flow does; SIP
timing (retransmissions, timeouts) stays in the sans-I/O transaction layer under `SipStack`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from trunkline.core.logs import event
from trunkline.core.models import DID, Numbering, Target, Trunk
from trunkline.core.state import Admission, CallState, StateStore, aor_of, trunk_key
from trunkline.core.state_redis import StoreUnavailable
from trunkline.edge.cdr import Attempt, CallRecord, CdrSink, Direction, HungUp
from trunkline.edge.digest import DigestAuthenticator, DigestError, Outcome, parse_credentials
from trunkline.edge.directory import Directory
from trunkline.edge.handover import (
    VERSION,
    call_record_from_data,
    call_record_to_data,
    invite_from_data,
    invite_to_data,
    leg_from_record,
    leg_to_record,
    trunk_from_data,
    trunk_to_data,
)
from trunkline.edge.legs import (
    ALLOW,
    Local,
    ack_for,
    first_invite,
    in_dialog,
    new_tag,
    relay_response,
    response_for,
    user_of,
)
from trunkline.edge.numbers import to_e164
from trunkline.edge.policy import Rejection, check_caller_id, check_destination
from trunkline.edge.registrar import Source, register
from trunkline.edge.resolver import Hop, Resolver
from trunkline.edge.routing import Next, after_final_response, inbound_targets, outbound_targets
from trunkline.sip.dialog import Dialog
from trunkline.sip.errors import SipParseError
from trunkline.sip.message import Request, Response
from trunkline.sip.stack import Incoming, NoAnswer, SipStack
from trunkline.sip.transaction import Addr, build_cancel
from trunkline.sip.uri import SipUri, parse_uri

log = logging.getLogger("trunkline.edge")


class MediaError(Exception):
    """The media plane cannot carry this session: answer the offer with `status` (488, 503)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Media(Protocol):
    """What the edge asks of the media plane: rewrite each SDP coming from leg `from_leg` ("a", the
    caller, or "b") into what the other leg must see, and release the call's media at the end."""

    async def rewrite(self, call: Call, sdp: bytes, from_leg: str) -> bytes: ...

    async def release(self, call: Call) -> None: ...

    def snapshot(self, call: Call) -> dict[str, Any]:
        """What another edge needs to go on with this call's media (JSON-safe)."""
        ...

    def adopt(self, call: Call, snapshot: dict[str, Any]) -> None:
        """Go on with the media of a call another edge began, from its `snapshot`."""
        ...


class PassThrough:
    """SDP unchanged: media flows between the parties directly (no relay configured)."""

    async def rewrite(self, call: Call, sdp: bytes, from_leg: str) -> bytes:
        return sdp

    async def release(self, call: Call) -> None:
        return None

    def snapshot(self, call: Call) -> dict[str, Any]:
        return {}

    def adopt(self, call: Call, snapshot: dict[str, Any]) -> None:
        return None


@dataclass
class EdgeOptions:
    failover_after: float = 3.0  # seconds without any answer from a target before the next one
    ring_timeout: float = 180.0  # seconds a target may ring
    max_duration: float = 4 * 3600.0  # an answered call is ended (BYE both ways) after this long
    owner_ttl: float = 6.0  # an edge silent this long in the store has its calls adopted by another
    auth_window: float = 60.0
    lockout_after: int = 10  # failed authentications in the window: answer 403
    silence_after: int = 20  # ... and from here on, do not answer at all
    nonce_ttl: float = 300.0


@dataclass
class Leg:
    addr: Addr
    transport: str
    dialog: Dialog | None = None
    tag: str = ""  # our tag on this leg


@dataclass
class Call:
    trunk: Trunk
    direction: Direction
    a_invite: Request
    a: Leg
    record: CallRecord
    b: Leg | None = None
    b_invite: Request | None = None
    b_provisional: bool = False
    cancelled: bool = False
    ended: bool = False
    a_acked: asyncio.Event = field(default_factory=asyncio.Event)
    pending_ack: dict[str, Request] = field(default_factory=dict)  # leg the ACK comes from -> INVITE sent
    last_b_ack: Request | None = None
    session_timer: asyncio.TimerHandle | None = None
    session_seconds: float = 0.0
    session_refreshed: float = 0.0  # epoch seconds of the last session refresh
    limit_timer: asyncio.TimerHandle | None = None

    @property
    def key(self) -> str:
        return self.a_invite.call_id

    @property
    def counters(self) -> str:
        """The trunk's key for channels and call rate in the store."""
        return trunk_key(self.trunk.metadata.namespace, self.trunk.metadata.name)

    @property
    def dialog_keys(self) -> list[str]:
        """The store keys of both legs' dialogs, as in-dialog requests name them (Call-ID, our tag,
        their tag)."""
        return ["|".join(leg.dialog.id) for leg in (self.a, self.b) if leg is not None and leg.dialog]

    def to_state(self, media: dict[str, Any]) -> CallState:
        b = self.b
        return {
            "version": VERSION, "trunk": trunk_to_data(self.trunk), "invite": invite_to_data(self.a_invite),
            "a": leg_to_record(self.a.addr, self.a.transport, self.a.tag, self.a.dialog),
            "b": leg_to_record(b.addr, b.transport, b.tag, b.dialog) if b else None,
            "record": call_record_to_data(self.record), "session_seconds": self.session_seconds,
            "session_refreshed": self.session_refreshed, "media": media,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: CallState) -> Call:
        """The call a record describes; ValueError (or KeyError) when it is not one we can carry."""
        if state.get("version") != VERSION:
            raise ValueError(f"call record version {state.get('version')!r}, not {VERSION}")
        record = call_record_from_data(state["record"])
        call = cls(trunk_from_data(state["trunk"]), record.direction, invite_from_data(state["invite"]),
                   Leg(*leg_from_record(state["a"])), record)  # fmt: skip
        if state["b"]:
            call.b = Leg(*leg_from_record(state["b"]))
        call.session_seconds = float(state["session_seconds"])
        call.session_refreshed = float(state["session_refreshed"])
        call.a_acked.set()
        return call

    def leg(self, name: str) -> Leg:
        leg = self.a if name == "a" else self.b
        assert leg is not None
        return leg


class Edge:
    """The B2BUA over a SipStack. `directory` may be replaced at any time (configuration changes)."""

    def __init__(
        self,
        directory: Directory,
        store: StateStore,
        local: Local,
        cdr: CdrSink,
        media: Media | None = None,
        options: EdgeOptions | None = None,
        authenticator: DigestAuthenticator | None = None,
        clock: Callable[[], float] = time.time,
        resolver: Resolver | None = None,
        owner: str | None = None,
    ) -> None:
        self.directory = directory
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}"  # this edge, in the store
        self.store = store
        self.local = local
        self.cdr = cdr
        self.media = media or PassThrough()
        self.options = options or EdgeOptions()
        self.auth = authenticator or DigestAuthenticator(nonce_ttl=self.options.nonce_ttl)
        self.clock = clock
        self.stack = SipStack(self.on_request, self.on_stray_response)
        self.resolver = resolver or Resolver()
        self.calls: dict[str, Call] = {}  # by the caller's Call-ID
        self.dialogs: dict[tuple[str, str, str], tuple[Call, str]] = {}
        self.draining = False
        self._tasks: set[asyncio.Future[None]] = set()

    # -- entry points ------------------------------------------------------------------------------
    def on_request(self, inc: Incoming) -> asyncio.Future[None] | None:
        req = inc.request
        if req.method == "ACK":
            self._on_ack(inc)
            return None
        if req.method == "CANCEL":
            self._on_cancel(inc)
            return None
        if req.to.tag is not None:
            return asyncio.ensure_future(self._in_dialog(inc))
        if req.method == "OPTIONS":
            response = req.create_response(200, to_tag=new_tag())
            response.add("Allow", ALLOW)
            self.stack.respond(response)
            return None
        max_forwards = req.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            self._answer(inc, 483, "Too Many Hops")
            return None
        if req.method == "INVITE":
            return asyncio.ensure_future(self._new_call(inc))
        if req.method == "REGISTER":
            return asyncio.ensure_future(self._register(inc))
        if req.method == "BYE":
            self._answer(inc, 481, "Call/Transaction Does Not Exist")
            return None
        response = req.create_response(405, to_tag=new_tag())
        response.add("Allow", ALLOW)
        self.stack.respond(response)
        return None

    def on_stray_response(self, response: Response, addr: Addr, transport: str) -> None:
        # A retransmitted 2xx from a callee whose ACK was lost: ACK it again.
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        found = self.dialogs.get((response.call_id, response.from_.tag or "", response.to.tag or ""))
        if found and found[0].last_b_ack is not None:
            call = found[0]
            assert call.b is not None and call.last_b_ack is not None
            self.stack.send_ack(call.last_b_ack, call.b.addr, call.b.transport)

    # -- helpers -----------------------------------------------------------------------------------
    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer(self, inc: Incoming, status: int, reason: str | None = None, tag: str | None = None) -> None:
        self.stack.respond(response_for(inc.request, status, reason, tag or new_tag()))

    def _reject(self, inc: Incoming, rejection: Rejection, trunk: str, tag: str) -> None:
        event(log, logging.INFO, "call rejected", trunk=trunk, rule=rejection.rule, status=rejection.status,
              detail=rejection.detail, call_id=inc.request.call_id)  # fmt: skip
        response = response_for(inc.request, rejection.status, rejection.reason, tag)
        if rejection.retry_after is not None:
            response.add("Retry-After", str(rejection.retry_after))
        self.stack.respond(response)

    # -- authentication ----------------------------------------------------------------------------
    async def _authenticate(self, inc: Incoming, header: str, status: int) -> tuple[Trunk, str] | None:
        """(trunk, username) for a request that proved itself, else None after answering it."""
        req, source = inc.request, inc.addr[0]
        failures = await self.store.auth_failures(source, self.options.auth_window)
        if failures >= self.options.silence_after:
            return None  # a source that keeps failing gets no more answers for a while
        if failures >= self.options.lockout_after:
            await self.store.note_auth_failure(source, self.options.auth_window)  # hammering counts too
            self._answer(inc, 403, "Forbidden (too many failed authentications)")
            return None
        raw = req.get(header)
        username_hint = user_of(req.to.uri if req.method == "REGISTER" else req.from_.uri) or ""
        if raw is None:
            self._challenge(inc, username_hint, status)
            return None
        try:
            params = parse_credentials(raw)
        except DigestError as exc:
            event(log, logging.INFO, "auth failed", source=source, why=str(exc))
            self._challenge(inc, username_hint, status)
            return None
        creds = self.directory.credentials(params.get("username", ""))
        if creds is None:
            verdict_outcome = Outcome.UNKNOWN_USER
        else:
            digest = creds.trunk.spec.auth.digest
            assert digest is not None
            verdict = self.auth.verify(params, req.method, str(req.uri), creds.trunk.realm, digest.algorithms,
                                       lambda _: creds.password)  # fmt: skip
            verdict_outcome = verdict.outcome
            if verdict.ok:
                if not await self.store.first_use(verdict.replay_key, self.options.nonce_ttl * 2):
                    self._challenge(inc, creds.username, status, stale=True)
                    return None
                if failures:  # a write only when there is something to forget
                    await self.store.clear_auth_failures(source)
                return creds.trunk, creds.username
        if verdict_outcome is Outcome.STALE:
            self._challenge(inc, params.get("username", ""), status, stale=True)
            return None
        count = await self.store.note_auth_failure(source, self.options.auth_window)
        event(log, logging.WARNING, "auth failed", source=source, username=params.get("username", ""),
              realm=params.get("realm", ""), uri=params.get("uri", ""), why=verdict_outcome.value,
              failures=count)  # fmt: skip
        self._challenge(inc, params.get("username", ""), status)
        return None

    def _challenge(self, inc: Incoming, username: str, status: int, stale: bool = False) -> None:
        creds = self.directory.credentials(username)
        trunks = [creds.trunk] if creds else self.directory.digest_trunks()
        if len(trunks) != 1:
            # Without a username that names the trunk, any realm would reveal which trunks exist.
            self._answer(inc, 403, "Forbidden")
            return
        trunk = trunks[0]
        digest = trunk.spec.auth.digest
        assert digest is not None
        response = response_for(inc.request, status, None, new_tag())
        name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        for value in self.auth.challenges(trunk.realm, digest.algorithms, stale=stale):
            response.add(name, value)
        self.stack.respond(response)

    # -- REGISTER ----------------------------------------------------------------------------------
    async def _register(self, inc: Incoming) -> None:
        who = await self._authenticate(inc, "Authorization", 401)
        if who is None:
            return
        trunk, username = who
        source = Source(inc.transport, inc.addr[0], inc.addr[1])
        try:
            response = await register(inc.request, username, trunk, self.store, source, new_tag())
        except SipParseError as exc:
            response = response_for(inc.request, exc.status, exc.reason, new_tag())
        self.stack.respond(response)

    # -- new calls ---------------------------------------------------------------------------------
    async def _new_call(self, inc: Incoming) -> None:
        """Set up a call; whatever goes wrong inside, the caller gets an answer and nothing leaks."""
        try:
            await self._set_up(inc)
        except Exception as exc:
            unavailable = isinstance(exc, StoreUnavailable)
            status, reason = (503, "Service Unavailable") if unavailable else (500, "Server Internal Error")
            log.error("call set-up failed: %s", exc, exc_info=not unavailable)
            call = self.calls.get(inc.request.call_id)
            if call is None or not call.record.answer:
                self.stack.respond(
                    response_for(inc.request, status, reason, call.a.tag if call else new_tag())
                )
            if call is not None:
                await self._finish(call, HungUp.EDGE, status, reason=f"{type(exc).__name__}: {exc}")

    async def _set_up(self, inc: Incoming) -> None:
        req = inc.request
        if self.draining:
            response = response_for(req, 503, "Service Unavailable (draining)", new_tag())
            response.add("Retry-After", "5")
            self.stack.respond(response)
            return
        carrier = self.directory.carrier_for_source(inc.addr[0])
        if carrier is not None and req.get("Proxy-Authorization") is None:
            await self._inbound(inc, carrier.spec.numbering)
            return
        trunk = self.directory.trunk_for_source(inc.addr[0])
        if trunk is None:
            who = await self._authenticate(inc, "Proxy-Authorization", 407)
            if who is None:
                return
            trunk = who[0]
        await self._outbound(inc, trunk)

    async def _inbound(self, inc: Incoming, numbering: Numbering | None) -> None:
        req, tag = inc.request, new_tag()
        number = to_e164(user_of(req.uri) or "", numbering)
        did = self.directory.did(number) if number else None
        trunk = self.directory.trunk_of(did) if did else None
        if did is None or trunk is None:
            event(
                log,
                logging.INFO,
                "call rejected",
                rule="unknown DID",
                number=user_of(req.uri),
                source=inc.addr[0],
            )
            self._answer(inc, 404, "Not Found", tag)
            return
        caller = to_e164(user_of(req.from_.uri) or "") or (user_of(req.from_.uri) or "anonymous")
        call = self._call(inc, trunk, Direction.INBOUND, caller, did.spec.number, tag)
        if not await self._admit(inc, call):
            return
        targets = await self._inbound_targets(trunk, did)
        await self._route(inc, call, targets, caller, did.spec.number)

    async def _outbound(self, inc: Incoming, trunk: Trunk) -> None:
        req, tag = inc.request, new_tag()
        number = to_e164(user_of(req.uri) or "", trunk.spec.numbering)
        if number is None:
            self._reject(
                inc, Rejection(484, "Address Incomplete", "number", f"{user_of(req.uri)!r}"), trunk.name, tag
            )
            return
        rejection = check_destination(trunk, number)
        if rejection:
            self._reject(inc, rejection, trunk.name, tag)
            return
        pai = req.get("P-Asserted-Identity")
        presented = parse_uri(pai.strip().lstrip("<").split(">")[0]) if pai else req.from_.uri
        caller_raw = to_e164(user_of(presented) or "", trunk.spec.numbering)
        caller, rejection = check_caller_id(trunk, caller_raw, self.directory.numbers_of(trunk))
        if rejection or caller is None:
            self._reject(inc, rejection or Rejection(403, "Forbidden", "callerId"), trunk.name, tag)
            return
        call = self._call(inc, trunk, Direction.OUTBOUND, caller, number, tag)
        if not await self._admit(inc, call):
            return
        targets = outbound_targets(number, self.directory.carriers)
        await self._route(inc, call, [(t, number) for t in targets], caller, number)

    def _call(
        self, inc: Incoming, trunk: Trunk, direction: Direction, caller: str, callee: str, tag: str
    ) -> Call:
        record = CallRecord(inc.request.call_id, trunk.name, direction, caller, callee, self.clock())
        return Call(trunk, direction, inc.request, Leg(inc.addr, inc.transport, tag=tag), record)

    async def _admit(self, inc: Incoming, call: Call) -> bool:
        """Call rate, then a channel, shared by every edge through the store, which keeps the ringing
        call's record from then on (so that another edge answers the caller should this one die)."""
        spec = call.trunk.spec
        rejection: Rejection | None = None
        try:
            verdict = await self.store.admit(
                call.counters, call.key, spec.channels, spec.callsPerSecond, self.owner,
                call.to_state(self.media.snapshot(call)), self.options.max_duration + 60,
            )  # fmt: skip
            if verdict is Admission.OVER_RATE:
                detail = f"over {spec.callsPerSecond}/s"
                rejection = Rejection(503, "Service Unavailable", "callsPerSecond", detail, retry_after=1)
            elif verdict is Admission.NO_CHANNEL:
                detail = f"all {spec.channels} in use"
                rejection = Rejection(503, "Service Unavailable", "channels", detail, retry_after=5)
        except Exception as exc:  # the store is down: no new calls (documented degraded mode)
            rejection = Rejection(503, "Service Unavailable", "store", str(exc), retry_after=5)
        if rejection is not None:
            self._reject(inc, rejection, call.trunk.name, call.a.tag)
            return False
        self.calls[call.key] = call
        self.dialogs[(inc.request.call_id, call.a.tag, inc.request.from_.tag or "")] = (call, "a")
        return True

    async def _inbound_targets(self, trunk: Trunk, did: DID) -> list[tuple[Target, str]]:
        """Registered contacts first (the freshest first), then origination targets."""
        targets: list[tuple[Target, str]] = []
        if trunk.spec.registration.enabled and trunk.spec.auth.digest:
            username = self.directory.username_of(trunk)
            if username:
                for binding in await self.store.bindings(aor_of(username)):
                    uri = binding.contact
                    if binding.source:  # behind NAT: send to where the REGISTER came from
                        transport, host, port = binding.source.rsplit(":", 2)
                        uri = f"sip:{host}:{port};transport={transport}"
                    targets.append((Target(uri=uri), did.spec.number))
        targets += [(t, did.spec.number) for t in inbound_targets(trunk, did)]
        return targets

    # -- routing with failover ---------------------------------------------------------------------
    async def _route(
        self, inc: Incoming, call: Call, targets: Sequence[tuple[Target, str]], caller: str, callee: str
    ) -> None:
        last: Response | None = None
        offer = inc.request
        try:
            offer_body = await self.media.rewrite(call, offer.body, "a") if offer.body else b""
        except MediaError as exc:
            event(log, logging.WARNING, "media refused", call_id=call.key, status=exc.status, why=exc.reason)
            self.stack.respond(response_for(inc.request, exc.status, exc.reason, call.a.tag))
            await self._finish(call, HungUp.EDGE, exc.status, reason=exc.reason)
            return
        async for target, number, parsed, hop in self._hops(call, targets):
            if call.cancelled:
                break
            request_uri = SipUri("sip", "", number, None, parsed.host, parsed.port, dict(parsed.params))
            max_forwards = (offer.max_forwards or 70) - 1
            invite = first_invite(self.local, hop.transport, request_uri, caller, number, max_forwards, offer)
            invite.body = offer_body
            call.b_invite, call.b_provisional = invite, False
            call.b = Leg((hop.host, hop.port), hop.transport, tag=invite.from_.tag or "")
            attempt = Attempt(target.uri)
            call.record.attempts.append(attempt)
            response = await self._try(call, invite)
            attempt.status = response.status if response else None
            if response is None:
                continue  # no answer: next target
            last = response
            if 200 <= response.status < 300:
                await self._answered(inc, call, invite, response)
                return
            if after_final_response(response.status) is Next.RELAY:
                break
        await self._failed(inc, call, last)

    async def _hops(
        self, call: Call, targets: Sequence[tuple[Target, str]]
    ) -> AsyncIterator[tuple[Target, str, SipUri, Hop]]:
        """Every address to try, in order: each target's RFC 3263 hops in turn."""
        default = call.trunk.spec.transport.value if call.direction is Direction.INBOUND else "udp"
        for target, number in targets:
            parsed = parse_uri(target.uri)
            if not isinstance(parsed, SipUri):
                continue
            hops = await self.resolver.resolve(parsed, default)
            if not hops:
                event(log, logging.WARNING, "target does not resolve", target=target.uri, call_id=call.key)
            for hop in hops:
                if hop.transport == "tls" and hop.host != parsed.host.strip("[]"):
                    self.stack.transport.tls_names[(hop.host, hop.port)] = parsed.host  # RFC 5922
                yield target, number, parsed, hop

    async def _try(self, call: Call, invite: Request) -> Response | None:
        """Send one INVITE; relay provisional answers; None when the target never answered."""
        assert call.b is not None
        leg = call.b

        def provisional(response: Response) -> None:
            call.b_provisional = True
            if call.cancelled:
                self._send_cancel(call)
                return
            if response.status > 100:
                self._spawn(self._relay_provisional(call, response))

        future = self.stack.request(invite, leg.addr, leg.transport, provisional)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.options.failover_after)
        except TimeoutError:
            if not call.b_provisional:
                self.stack.abandon(invite)
                return None
        except NoAnswer:
            return None
        try:
            return await asyncio.wait_for(future, self.options.ring_timeout)
        except (TimeoutError, NoAnswer):
            if call.b_provisional and not future.done():
                self._send_cancel(call)
            return None

    async def _relay_provisional(self, call: Call, response: Response) -> None:
        if call.ended or call.cancelled:
            return
        answer = response
        if response.body:
            response.body = await self._rewrite_or_keep(call, response.body, "b")
        self.stack.respond(
            relay_response(call.a_invite, answer, call.a.tag, self.local.contact(call.a.transport))
        )

    async def _answered(self, inc: Incoming, call: Call, invite: Request, response: Response) -> None:
        assert call.b is not None
        try:
            call.b.dialog = Dialog.from_uac(invite, response)
        except SipParseError as exc:
            event(log, logging.WARNING, "callee answered without a usable dialog", error=str(exc))
            call.b.dialog = None
        if call.cancelled or call.b.dialog is None:
            if call.b.dialog is not None:
                self._ack_b(call, invite, None)
                self._spawn(self._bye(call, "b"))
            await self._finish(call, HungUp.CALLER if call.cancelled else HungUp.EDGE, 487)
            return
        self.dialogs[call.b.dialog.id] = (call, "b")
        await self._follow_target(call.b)
        if response.body:
            response.body = await self._rewrite_or_keep(call, response.body, "b")
        ok = relay_response(call.a_invite, response, call.a.tag, self.local.contact(call.a.transport))
        try:
            call.a.dialog = Dialog.from_uas(call.a_invite, ok)
        except SipParseError:
            call.a.dialog = None
        call.record.answer = self.clock()
        call.record.status = response.status
        call.pending_ack["a"] = invite
        self._arm_limit(call)
        self._start_session_timer(call, response)
        await self._save(call)  # before the caller hears of it: from now on any edge can end the call
        if call.ended:
            return
        self.stack.respond(ok)
        record = call.record
        event(log, logging.INFO, "call answered", trunk=record.trunk, direction=record.direction.value,
              caller=record.caller, callee=record.callee, target=record.attempts[-1].target)  # fmt: skip
        if call.a.transport == "udp":
            await self._retransmit_2xx(call, ok)

    async def _retransmit_2xx(self, call: Call, ok: Response) -> None:
        """The UAS core retransmits a 2xx until the ACK comes (RFC 3261 13.3.1.4)."""
        t1, t2 = self.stack.timers.t1, self.stack.timers.t2
        interval, waited, data = t1, 0.0, ok.to_bytes()
        while waited < 64 * t1:
            try:
                await asyncio.wait_for(call.a_acked.wait(), interval)
                return
            except TimeoutError:
                waited += interval
                interval = min(2 * interval, t2)
                if call.ended:
                    return
                self.stack.resend(data, call.a.addr, call.a.transport)
        event(log, logging.WARNING, "caller never acknowledged the answer", call_id=call.key)
        if call.b and call.b.dialog and "a" in call.pending_ack:
            self._ack_b(call, call.pending_ack.pop("a"), None)
        self._spawn(self._bye(call, "a"))
        self._spawn(self._bye(call, "b"))
        await self._finish(call, HungUp.EDGE, call.record.status)

    async def _failed(self, inc: Incoming, call: Call, last: Response | None) -> None:
        if call.cancelled:
            status, reason = 487, "Request Terminated"
        elif last is None:
            status, reason = (408, "Request Timeout") if call.record.attempts else (404, "No Route")
        else:
            status, reason = last.status, last.reason
        self.stack.respond(response_for(inc.request, status, reason, call.a.tag))
        await self._finish(call, HungUp.CALLER if call.cancelled else HungUp.NOBODY, status)

    # -- CANCEL, ACK, in-dialog --------------------------------------------------------------------
    def _on_cancel(self, inc: Incoming) -> None:
        key = self.stack.layer.invite_for_cancel(inc.request)
        self._answer(inc, 200 if key else 481, None, inc.request.to.tag or new_tag())
        call = self.calls.get(inc.request.call_id)
        if key is None or call is None or call.cancelled or call.record.answer:
            return
        call.cancelled = True
        if call.b_invite is not None and call.b_provisional:
            self._send_cancel(call)
        self.stack.respond(response_for(call.a_invite, 487, "Request Terminated", call.a.tag))

    def _send_cancel(self, call: Call) -> None:
        if call.b_invite is None or call.b is None:
            return
        cancel = build_cancel(call.b_invite)
        future = self.stack.request(cancel, call.b.addr, call.b.transport)
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)

    def _ack_b(self, call: Call, invite: Request, body_from: Request | None) -> None:
        assert call.b is not None and call.b.dialog is not None
        ack = ack_for(call.b.dialog, self.local, call.b.transport, invite.cseq.seq, body_from)
        call.last_b_ack = ack
        self.stack.send_ack(ack, call.b.addr, call.b.transport)

    def _on_ack(self, inc: Incoming) -> None:
        req = inc.request
        found = self.dialogs.get((req.call_id, req.to.tag or "", req.from_.tag or ""))
        if found is None:
            return
        call, leg_name = found
        invite = call.pending_ack.pop(leg_name, None)
        if leg_name == "a":
            call.a_acked.set()
        if invite is None:
            return
        other = call.leg("b" if leg_name == "a" else "a")
        if other.dialog is None:
            return
        if other is call.b:
            self._ack_b(call, invite, req)
        else:
            ack = ack_for(other.dialog, self.local, other.transport, invite.cseq.seq, req)
            self.stack.send_ack(ack, other.addr, other.transport)

    async def _in_dialog(self, inc: Incoming) -> None:
        req = inc.request
        dialog_id = (req.call_id, req.to.tag or "", req.from_.tag or "")
        found = self.dialogs.get(dialog_id) or await self._adopt(dialog_id)
        if found is None:
            self._answer(inc, 481, "Call/Transaction Does Not Exist", req.to.tag)
            return
        call, leg_name = found
        this = call.leg(leg_name)
        if this.dialog is None:
            self._answer(inc, 481, "Call/Transaction Does Not Exist", req.to.tag)
            return
        try:
            this.dialog.receive_request(req)
        except SipParseError as exc:
            self._answer(inc, exc.status, exc.reason, this.tag)
            return
        if this is call.b:
            await self._follow_target(this)
        other_name = "b" if leg_name == "a" else "a"
        other = call.leg(other_name)
        if req.method == "BYE":
            self._answer(inc, 200, None, req.to.tag)
            self._spawn(self._bye(call, other_name))
            hung_up = HungUp.CALLER if leg_name == "a" else HungUp.CALLEE
            await self._finish(call, hung_up, call.record.status)
            return
        if other.dialog is None:
            self._answer(inc, 481, "Call/Transaction Does Not Exist", req.to.tag)
            return
        out = in_dialog(other.dialog, req.method, self.local, other.transport, req)
        if req.body and req.method in ("INVITE", "UPDATE"):
            out.body = await self._rewrite_or_keep(call, req.body, leg_name)
        try:
            answer = await self.stack.request(out, other.addr, other.transport)
        except NoAnswer:
            self._answer(inc, 408, "Request Timeout", req.to.tag)
            return
        other.dialog.receive_response(out, answer)
        if other is call.b:
            await self._follow_target(other)
        if answer.body and req.method in ("INVITE", "UPDATE"):
            answer.body = await self._rewrite_or_keep(call, answer.body, other_name)
        if req.method == "INVITE" and 200 <= answer.status < 300:
            call.pending_ack[leg_name] = out
        if req.method in ("INVITE", "UPDATE") and 200 <= answer.status < 300:
            self._start_session_timer(call, answer)
        await self._save(call)  # the CSeqs and targets moved on
        self.stack.respond(relay_response(req, answer, req.to.tag or "", self.local.contact(this.transport)))

    async def _follow_target(self, leg: Leg) -> None:
        """Send the callee's in-dialog requests where its remote target says (RFC 3263 for a host
        name), unless a route set decides. The caller's go back where its requests come from (NAT)."""
        dialog = leg.dialog
        if dialog is None or dialog.route_set or not isinstance(dialog.remote_target, SipUri):
            return
        if dialog.remote_target.host.strip("[]") == leg.addr[0] and dialog.remote_target.port == leg.addr[1]:
            return
        hops = await self.resolver.resolve(dialog.remote_target, leg.transport)
        if not hops:
            event(log, logging.WARNING, "remote target does not resolve, keeping the last address",
                  target=str(dialog.remote_target), addr=f"{leg.addr[0]}:{leg.addr[1]}")  # fmt: skip
            return
        leg.addr, leg.transport = (hops[0].host, hops[0].port), hops[0].transport

    async def _bye(self, call: Call, leg_name: str) -> None:
        leg = call.a if leg_name == "a" else call.b
        if leg is None or leg.dialog is None:
            return
        bye = leg.dialog.create_request("BYE", self.local.via(leg.transport))
        try:
            await asyncio.wait_for(self.stack.request(bye, leg.addr, leg.transport), 32)
        except (NoAnswer, TimeoutError):
            event(log, logging.INFO, "BYE not answered", call_id=call.key, leg=leg_name)

    async def _rewrite_or_keep(self, call: Call, sdp: bytes, from_leg: str) -> bytes:
        """An SDP after the first offer. When the relay refuses it, the other side gets no SDP rather
        than this side's addresses (topology hiding), and the session goes on as it was."""
        try:
            return await self.media.rewrite(call, sdp, from_leg)
        except MediaError as exc:
            event(log, logging.WARNING, "media update refused", call_id=call.key, why=exc.reason)
            return b""

    # -- session timers (RFC 4028) and the longest call ---------------------------------------------
    def _start_session_timer(self, call: Call, response: Response) -> None:
        header = response.get("Session-Expires")
        if not header:
            return
        value = header.split(";")[0].strip()
        if not value.isdigit():
            return
        call.session_seconds = float(value)
        call.session_refreshed = self.clock()
        self._arm_session_expiry(call)

    def _arm_session_expiry(self, call: Call) -> None:
        if call.session_timer is not None:
            call.session_timer.cancel()
        left = call.session_refreshed + call.session_seconds - self.clock()
        loop = asyncio.get_running_loop()
        call.session_timer = loop.call_later(
            max(0.0, left), lambda: self._spawn(self._expire(call, "session timer expired"))
        )

    def _arm_limit(self, call: Call) -> None:
        assert call.record.answer is not None
        left = call.record.answer + self.options.max_duration - self.clock()
        loop = asyncio.get_running_loop()
        call.limit_timer = loop.call_later(
            max(0.0, left), lambda: self._spawn(self._expire(call, "maximum call duration"))
        )

    def end_call(self, key: str, why: str) -> bool:
        """End a call this edge holds from outside SIP (e.g. its media went silent): BYE both ways,
        CDR with `why`. False when no such call is held here."""
        call = self.calls.get(key)
        if call is None or call.record.answer is None:
            return False
        self._spawn(self._expire(call, why))
        return True

    async def _expire(self, call: Call, why: str) -> None:
        if call.ended:
            return
        event(log, logging.INFO, "call ended by the edge", call_id=call.key, why=why)
        self._spawn(self._bye(call, "a"))
        self._spawn(self._bye(call, "b"))
        await self._finish(call, HungUp.EDGE, call.record.status, reason=why)

    # -- handing calls over between edges ----------------------------------------------------------
    def _record_ttl(self, call: Call) -> float:
        """How long the call's record and channel live without news from its owner: two session
        intervals when the session is refreshed, else until the longest call would end."""
        answered = call.record.answer or self.clock()
        left = answered + self.options.max_duration - self.clock() + 60
        if call.session_seconds:
            left = min(left, 2 * call.session_seconds + 32)
        return max(left, 1.0)

    async def _save(self, call: Call) -> None:
        """Write the call where every edge finds it. Without the store the call goes on here only."""
        try:
            await self.store.save_call(call.counters, call.key, self.owner,
                                       call.to_state(self.media.snapshot(call)), call.dialog_keys,
                                       self._record_ttl(call))  # fmt: skip
        except Exception as exc:
            event(log, logging.WARNING, "could not save call", call_id=call.key, error=str(exc))

    async def _adopt(self, dialog_id: tuple[str, str, str]) -> tuple[Call, str] | None:
        """A call this edge does not hold, from the store: its edge died or the request came here."""
        try:
            state = await self.store.adopt_call("|".join(dialog_id), self.owner)
        except Exception as exc:
            event(log, logging.WARNING, "could not look up call", error=str(exc))
            return None
        if state is None:
            return None
        call = self._carry(state)
        return self.dialogs.get(dialog_id) if call else None

    def _carry(self, state: CallState) -> Call | None:
        """Hold an adopted call like one of ours; a call that never got answered is failed instead."""
        try:
            call = Call.from_state(state)
        except (ValueError, KeyError, TypeError) as exc:
            event(log, logging.ERROR, "unusable call record", error=repr(exc))
            return None
        if call.key in self.calls:
            return self.calls[call.key]
        self.media.adopt(call, state.get("media") or {})
        if call.record.answer is None or call.a.dialog is None or call.b is None or call.b.dialog is None:
            self._spawn(self._fail_orphan(call))
            return None
        self.calls[call.key] = call
        for leg_name, leg in (("a", call.a), ("b", call.b)):
            assert leg.dialog is not None
            self.dialogs[leg.dialog.id] = (call, leg_name)
        self._arm_limit(call)
        if call.session_seconds:
            self._arm_session_expiry(call)
        event(log, logging.INFO, "call adopted", call_id=call.key, trunk=call.trunk.name)
        return call

    async def _fail_orphan(self, call: Call) -> None:
        """The caller of a call whose edge died before it was answered gets a final answer from us.
        There is no server transaction here: the response goes straight where the INVITE's Via says."""
        status, reason = 503, "Service Unavailable (edge lost)"
        response = response_for(call.a_invite, status, reason, call.a.tag)
        response.add("Retry-After", "1")
        self.stack.resend(response.to_bytes(), call.a.addr, call.a.transport)
        event(log, logging.WARNING, "ringing call lost with its edge", call_id=call.key, status=status)
        await self._finish(call, HungUp.EDGE, status, reason="edge lost while ringing")

    async def keep_alive(self) -> None:
        """Tell the store this edge lives, and take over the calls of edges that stopped saying so."""
        interval = self.options.owner_ttl / 3
        while True:
            try:
                for state in await self.store.keep_alive(self.owner, self.options.owner_ttl):
                    self._carry(state)
            except Exception as exc:
                event(log, logging.WARNING, "store keep-alive failed", error=str(exc))
            await asyncio.sleep(interval)

    # -- the end -----------------------------------------------------------------------------------
    async def _finish(self, call: Call, hung_up: HungUp, status: int | None, reason: str = "") -> None:
        if call.ended:
            return
        call.ended = True
        for timer in (call.session_timer, call.limit_timer):
            if timer is not None:
                timer.cancel()
        call.record.end = self.clock()
        call.record.hung_up = hung_up
        call.record.status = status if status is not None else call.record.status
        call.record.reason = reason
        self.calls.pop(call.key, None)
        for leg in (call.a, call.b):
            if leg is not None and leg.dialog is not None:
                self.dialogs.pop(leg.dialog.id, None)
        self.dialogs.pop((call.a_invite.call_id, call.a.tag, call.a_invite.from_.tag or ""), None)
        try:
            await self.store.end_call(call.counters, call.key, self.owner, call.dialog_keys)
        except Exception as exc:  # its TTL frees it when the store comes back
            event(log, logging.WARNING, "could not release channel", trunk=call.trunk.name, error=str(exc))
        await self.media.release(call)
        self.cdr.write(call.record)

    @property
    def active_calls(self) -> int:
        return len(self.calls)
