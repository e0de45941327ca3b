"""What the rooms of the edge share: the SIP stack and its clock, the store, the directory, the
media plane, options, and the registry of live calls (`Calls`), with the few helpers every room
uses (answering, saving a call, waiting on the stack's clock)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from prometheus_client import CollectorRegistry

from trunkline.core.emergency import DEFAULT_COUNTRIES, installation_numbers
from trunkline.core.gateway_figures import GatewayFigures
from trunkline.core.logs import event
from trunkline.core.state import StateStore
from trunkline.core.trunk_defaults import TrunkDefaults
from trunkline.edge.call import Call, Leg, MediaError, MediaPlane
from trunkline.edge.cdr import CdrSink
from trunkline.edge.digest import DigestAuthenticator
from trunkline.edge.directory import Directory
from trunkline.edge.gateway_figures import FigureRecorder
from trunkline.edge.legs import Local, ack_for, new_tag, response_for
from trunkline.edge.local_auth import LocalAuthState
from trunkline.edge.metrics import EdgeMetrics
from trunkline.edge.observing import Traces, rule_label
from trunkline.edge.policy import Rejection
from trunkline.edge.resolver import Resolver
from trunkline.edge.spool import CdrSpool
from trunkline.sip.message import Request
from trunkline.sip.stack import Incoming, Stack
from trunkline.sip.uri import SipUri

log = logging.getLogger("trunkline.edge")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DialogId = tuple[str, str, str]  # Call-ID, our tag, their tag
T = TypeVar("T")


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
    contact_deny: tuple[Network, ...] = ()  # REGISTER Contacts inside these are refused (--contact-deny)
    count_registrations_every: float = 10.0  # seconds between two counts of the trunks' contacts (/metrics)
    # The installation's emergency numbers (--emergency-countries, --emergency-number).
    emergency_numbers: frozenset[str] = installation_numbers(DEFAULT_COUNTRIES)
    trunk_defaults: TrunkDefaults = field(default_factory=TrunkDefaults)  # caps a trunk leaves unset
    # TEST ONLY (the hidden --test-pause-at-cdr): "before" or "after" holds every end of a call at its
    # CDR write (logging "test pause at the CDR write") so that a test can SIGKILL the edge there.
    test_pause_at_cdr: str = ""


class Calls:
    """The calls this edge holds: by the caller's Call-ID, and each leg by its dialog id."""

    def __init__(self) -> None:
        self.by_key: dict[str, Call] = {}
        self.by_dialog: dict[DialogId, tuple[Call, str]] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def get(self, key: str) -> Call | None:
        return self.by_key.get(key)

    def find(self, dialog: DialogId) -> tuple[Call, str] | None:
        return self.by_dialog.get(dialog)

    def hold(self, call: Call) -> None:
        self.by_key[call.key] = call

    def add_dialog(self, dialog: DialogId, call: Call, leg_name: str) -> None:
        self.by_dialog[dialog] = (call, leg_name)

    def drop(self, call: Call) -> None:
        self.by_key.pop(call.key, None)
        for leg in (call.a, call.b):
            if leg is not None and leg.dialog is not None:
                self.by_dialog.pop(leg.dialog.id, None)
        self.by_dialog.pop((call.a_invite.call_id, call.a.tag, call.a_invite.from_.tag or ""), None)


class EdgeContext:
    def __init__(
        self,
        stack: Stack,
        clock: Callable[[], float],
        store: StateStore,
        directory: Callable[[], Directory],
        local: Local,
        cdr: CdrSink,
        media: MediaPlane,
        options: EdgeOptions,
        auth: DigestAuthenticator,
        resolver: Resolver,
        owner: str,
    ) -> None:
        self.stack, self.clock, self.store, self._directory = stack, clock, store, directory
        self.local, self.cdr, self.media, self.options = local, cdr, media, options
        self.auth, self.resolver, self.owner = auth, resolver, owner
        self.calls = Calls()
        # Emergency calls admitted while the store did not answer: their records are written once it
        # answers again (edge/late_records.py), so that another edge can adopt them.
        self.unstored: dict[str, Call] = {}
        # Lockout counters and used nonces of this edge alone, for emergency calls while the store
        # does not answer (edge/auth.py).
        self.local_auth = LocalAuthState()
        self.spool: CdrSpool | None = None  # --cdr-spool: call ends the store did not take, on disk
        self.draining = False
        # Gateways the health probes found down, by carrier key (edge/upkeep.py keeps it from the store).
        self.gateways_down: dict[tuple[str, str], frozenset[str]] = {}
        # Gateway figures of the last minutes (core/gateway_figures.py) of the Carriers that route by
        # them (`routing: quality`), by carrier key: edge/upkeep.py keeps them from the store.
        self.gateway_quality: dict[tuple[str, str], dict[str, GatewayFigures]] = {}
        self.metrics = EdgeMetrics(CollectorRegistry())  # the Edge puts one on the process's registry
        self.traces = Traces()
        self._tasks: set[asyncio.Future[None]] = set()
        self.figures = FigureRecorder(store, self.spawn, lambda: self.metrics.figure_dropped())

    @property
    def directory(self) -> Directory:
        """The configuration now (it may change between two requests of one call)."""
        return self._directory()

    @property
    def running(self) -> int:
        """Work the rooms spawned that has not finished (BYEs, expiries, provisional relays)."""
        return len(self._tasks)

    def spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def answer(self, inc: Incoming, status: int, reason: str | None = None, tag: str | None = None) -> None:
        self.stack.respond(response_for(inc.request, status, reason, tag or new_tag()))

    def reject(self, inc: Incoming, rejection: Rejection, trunk: str, tag: str) -> None:
        event(log, logging.INFO, "call rejected", trunk=trunk, rule=rejection.rule, status=rejection.status,
              detail=rejection.detail, call_id=inc.request.call_id)  # fmt: skip
        self.metrics.rejected(rule_label(rejection.rule))
        found = self.traces.get(inc.request.call_id)
        if found is not None:
            found[0].set(trunk=trunk, rule=rejection.rule, outcome="rejected", detail=rejection.detail)
        response = response_for(inc.request, rejection.status, rejection.reason, tag)
        if rejection.retry_after is not None:
            response.add("Retry-After", str(rejection.retry_after))
        self.stack.respond(response)

    async def wait_at_most(self, future: asyncio.Future[T], delay: float) -> bool:
        """Wait for `future` no longer than `delay` on the stack's clock; True when it is done.
        The future itself is left alone (not cancelled) either way."""
        if future.done():
            return True
        # One waiter woken by whichever comes first (asyncio.wait costs twice this, twice a call).
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self.stack.call_later(delay, partial(_wake, waiter))

        def done(_: asyncio.Future[T]) -> None:
            _wake(waiter)

        future.add_done_callback(done)
        try:
            await waiter
        finally:
            handle.cancel()
            future.remove_done_callback(done)
            waiter.cancel()
        return future.done()

    async def sleep(self, delay: float) -> None:
        """`asyncio.sleep` on the stack's clock."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self.stack.call_later(delay, partial(_wake, woken))
        try:
            await woken
        finally:
            handle.cancel()

    def ack_b(self, call: Call, invite: Request, body_from: Request | None) -> None:
        """ACK the callee's 2xx to `invite` (with the caller's ACK body when it carries the answer)."""
        assert call.b is not None and call.b.dialog is not None
        ack = ack_for(call.b.dialog, self.local, call.b.transport, invite, body_from)
        call.last_b_ack = ack
        self.stack.send_ack(ack, call.b.addr, call.b.transport)

    async def rewrite_or_keep(self, call: Call, sdp: bytes, from_leg: str) -> bytes:
        """An SDP after the first offer. When the relay refuses it, the other side gets no SDP rather
        than this side's addresses (topology hiding), and the session goes on as it was."""
        try:
            return await self.media.rewrite(call, sdp, from_leg)
        except MediaError as exc:
            event(log, logging.WARNING, "media update refused", call_id=call.key, why=exc.reason)
            return b""

    def record_ttl(self, call: Call) -> float:
        """How long the call's record and channel live without news from its owner: two session
        intervals when the session is refreshed, else until the longest call would end."""
        answered = call.record.answer or self.clock()
        left = answered + self.options.max_duration - self.clock() + 60
        if call.session_seconds:
            left = min(left, 2 * call.session_seconds + 32)
        return max(left, 1.0)

    async def save(self, call: Call) -> bool:
        """Write the call where every edge finds it, fenced by its epoch. False when another edge
        took the call over (or ended it): the caller stands down (`ending.stand_down`). Without the
        store the call goes on here only (True)."""
        started = time.monotonic()
        try:
            saved = await self.store.save_call(call.counters, call.key, self.owner,
                                               call.to_state(self.media.snapshot(call)), call.dialog_keys,
                                               self.record_ttl(call), call.epoch)  # fmt: skip
        except Exception as exc:
            self.metrics.store("dialog", time.monotonic() - started, ok=False)
            event(log, logging.WARNING, "could not save call", call_id=call.key, error=str(exc))
            return True
        self.metrics.store("dialog", time.monotonic() - started)
        return saved

    async def follow_target(self, leg: Leg) -> None:
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


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
