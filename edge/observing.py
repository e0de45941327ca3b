"""One hook for every SIP message the edge sends or receives: `ObservedStack` wraps the edge's `Stack`,
counts requests and responses (EdgeMetrics) and adds a `sip.message` event to the trace of the call
the message belongs to, found by its Call-ID (either leg's). The rooms never see it: they talk to
the Stack protocol as before.

Traces are looked up only for Call-IDs a recorded trace registered (`Traces`): with tracing off or a
call not sampled, the cost per message is one empty-dict lookup and the counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from trunkline.core.lean_spans import Message as Event
from trunkline.core.logs import event
from trunkline.core.models import Carrier, Target
from trunkline.edge import tracing
from trunkline.edge.call import Call
from trunkline.edge.metrics import EdgeMetrics
from trunkline.edge.trace_messages import peer as _peer
from trunkline.edge.trace_messages import sip_event
from trunkline.edge.tracing import NoTrace
from trunkline.sip.message import Message, Request, Response
from trunkline.sip.stack import (
    Incoming,
    OnAckTimeout,
    OnRequest,
    OnStrayResponse,
    Provisional,
    Stack,
    TimerHandle,
)
from trunkline.sip.transaction import Addr, Timers, TxKey

log = logging.getLogger("trunkline.edge")


class Observer(Protocol):
    """Where a Call-ID's messages go: a call's trace, or one transaction's span (a BYE the edge sends)."""

    @property
    def recording(self) -> bool: ...

    def note(self, event: Event) -> None: ...

    def set(self, **attributes: Any) -> None: ...


class Traces:
    """The recorded traces of the calls in progress, by each leg's Call-ID (leg name alongside)."""

    def __init__(self) -> None:
        self._by_call_id: dict[str, tuple[Observer, str]] = {}

    def __len__(self) -> int:
        return len(self._by_call_id)

    def add(self, call_id: str, trace: Observer, leg: str) -> None:
        if trace.recording:
            self._by_call_id[call_id] = (trace, leg)

    def get(self, call_id: str) -> tuple[Observer, str] | None:
        return self._by_call_id.get(call_id) if self._by_call_id else None

    def drop(self, call_id: str, trace: Observer | None = None) -> None:
        """Forget `call_id` (only while it still goes to `trace`, when given)."""
        found = self._by_call_id.get(call_id)
        if found is not None and (trace is None or found[0] is trace):
            del self._by_call_id[call_id]


class ObservedStack:
    """The edge's Stack, with each message counted and put on its call's trace."""

    def __init__(self, inner: Stack, metrics: EdgeMetrics, traces: Traces) -> None:
        self.inner, self.metrics, self.traces = inner, metrics, traces
        self._on_request: OnRequest = lambda inc: None
        self._on_stray: OnStrayResponse = lambda r, a, t: None

    def _note(self, message: Message, direction: str, addr: Addr | None) -> None:
        if isinstance(message, Request):
            self.metrics.request(message.method, direction)
        elif isinstance(message, Response):
            self.metrics.response(message.cseq.method, message.status, direction)
        found = self.traces.get(message.call_id)
        if found is not None:
            trace, leg = found
            trace.note(sip_event(leg, direction, message, _peer(addr)))

    # -- network -> edge ---------------------------------------------------------------------------
    def bind(
        self, on_request: OnRequest, on_stray_response: OnStrayResponse, on_ack_timeout: OnAckTimeout
    ) -> None:
        self._on_request, self._on_stray = on_request, on_stray_response
        self.inner.bind(self._received, self._stray, on_ack_timeout)

    def _received(self, inc: Incoming) -> asyncio.Future[None] | None:
        self._note(inc.request, "received", inc.addr)
        result = self._on_request(inc)
        return asyncio.ensure_future(result) if result is not None else None

    def _stray(self, response: Response, addr: Addr, transport: str) -> None:
        self._note(response, "received", addr)
        self._on_stray(response, addr, transport)

    # -- edge -> network ---------------------------------------------------------------------------
    def request(
        self, request: Request, addr: Addr, transport: str, on_provisional: Provisional | None = None
    ) -> asyncio.Future[Response]:
        def provisional(response: Response) -> None:
            self._note(response, "received", addr)
            if on_provisional is not None:
                on_provisional(response)

        try:
            future = self.inner.request(request, addr, transport, provisional)
        finally:  # noted once written: its size is then known (Message.last_wire_size)
            self._note(request, "sent", addr)
        future.add_done_callback(lambda f: self._final(f, addr))
        return future

    def _final(self, future: asyncio.Future[Response], addr: Addr) -> None:
        if not future.cancelled() and future.exception() is None:
            self._note(future.result(), "received", addr)

    def send_ack(self, ack: Request, addr: Addr, transport: str) -> None:
        try:
            self.inner.send_ack(ack, addr, transport)
        finally:
            self._note(ack, "sent", addr)

    def respond(self, response: Response) -> None:
        try:
            self.inner.respond(response)
        finally:
            self._note(response, "sent", None)

    def send_stateless(self, response: Response, addr: Addr, transport: str) -> None:
        try:
            self.inner.send_stateless(response, addr, transport)
        finally:
            self._note(response, "sent", addr)

    # -- the rest as it is -------------------------------------------------------------------------
    @property
    def timers(self) -> Timers:
        return self.inner.timers

    def abandon(self, request: Request) -> None:
        self.inner.abandon(request)

    def discard(self, key: TxKey | None) -> None:
        self.inner.discard(key)

    def vouch(self, source_ip: str) -> None:
        self.inner.vouch(source_ip)

    def stop_answer(self, dialog: tuple[str, str, str]) -> None:
        self.inner.stop_answer(dialog)

    def invite_for_cancel(self, cancel: Request) -> TxKey | None:
        return self.inner.invite_for_cancel(cancel)

    def verify_tls_name(self, addr: Addr, name: str) -> None:
        self.inner.verify_tls_name(addr, name)

    def local_address(self, transport: str) -> Addr | None:
        return self.inner.local_address(transport)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.inner.call_later(delay, callback)

    async def close(self) -> None:
        await self.inner.close()


# -- a call's life, as traces and metrics see it (the rooms call these) ------------------------------
RULES = {"callsPerSecond": "cps", "allowedPrefixes": "prefix", "callerId": "caller-id"}


def rule_label(rule: str) -> str:
    """A rejection's rule (policy.Rejection.rule) as the metric's closed label set names it."""
    return RULES.get(rule, rule)


def start_trace(
    traces: Traces, inc: Incoming, name: str = "call", parent: tuple[str, str | None] | None = None
) -> NoTrace:
    """The trace of a new request (a call's INVITE, a REGISTER), with the request as its first
    event (received before the trace existed). `parent`: a trusted peer's trace context
    (trace_headers.trusted_parent), to continue its trace."""
    req = inc.request
    traceparent, tracestate = parent or (None, None)
    trace = tracing.start_call(req.call_id, "", "", "", "", _peer(inc.addr), inc.transport, traceparent,
                               name, tracestate)  # fmt: skip
    if trace.recording:
        traces.add(req.call_id, trace, "a")
        trace.note(sip_event("a", "received", req, _peer(inc.addr)))
    return trace


def traced(traces: Traces, call: Call, trace: NoTrace) -> None:
    """`call` goes on under `trace`: its identity on the root span, its context in the record."""
    call.trace = trace
    record = call.record
    record.trace_id, record.traceparent = trace.trace_id, trace.traceparent
    trace.set(trunk=call.trunk.name, direction=record.direction.value, sip__caller=record.caller,
              sip__callee=record.callee)  # fmt: skip
    if record.emergency:
        trace.set(emergency=True)


def adopted(traces: Traces, call: Call) -> None:
    """A call another edge began, held here now: its trace goes on where that edge's left off."""
    record = call.record
    if not record.traceparent:
        return
    trace = tracing.start_call(call.key, call.trunk.name, record.direction.value, record.caller or "",
                               record.callee, "", call.a.transport, record.traceparent)  # fmt: skip
    trace.set(adopted=True)
    call.trace = trace
    traces.add(call.key, trace, "a")
    if call.b is not None and call.b.dialog is not None:
        traces.add(call.b.dialog.call_id, trace, "b")


def held(metrics: EdgeMetrics, call: Call) -> None:
    """The call counts as active from now on (admitted, or adopted)."""
    if not call.counted:
        call.counted = True
        metrics.call_started(call.trunk.name)


def ended(metrics: EdgeMetrics, traces: Traces, call: Call) -> None:
    """The call is over: counted by outcome, its trace finished, its Call-IDs forgotten."""
    record = call.record
    status = record.status or 0
    if call.counted:
        call.counted = False
        answered_for = record.end - record.answer if record.end and record.answer else None
        metrics.call_ended(call.trunk.name, record.direction.value, status, answered_for)
        if record.emergency:
            metrics.emergency_ended(call.trunk.name, status)
            event(log, logging.WARNING, "emergency call ended", trunk=call.trunk.name, call_id=call.key,
                  number=record.callee, status=status, hung_up=record.hung_up.value)  # fmt: skip
    call.trace.finish(status, record.hung_up.value, record.reason)
    traces.drop(call.key, call.trace)  # a BYE still under way keeps its own (ending.bye)
    if call.b_invite is not None:
        traces.drop(call.b_invite.call_id, call.trace)
    if call.b is not None and call.b.dialog is not None:
        traces.drop(call.b.dialog.call_id, call.trace)


def carrier_of(carriers: list[Carrier], target: Target) -> str:
    """The configured carrier a target is a gateway of ('' for a trunk's target or a contact)."""
    carrier = carrier_with(carriers, target)
    return carrier.name if carrier is not None else ""


def carrier_with(carriers: list[Carrier], target: Target) -> Carrier | None:
    """The configured carrier a target is a gateway of (None for a trunk's target or a contact)."""
    for carrier in carriers:
        if any(gateway.uri == target.uri for gateway in carrier.spec.gateways):
            return carrier
    return None


def answered_by(call: Call, carriers: list[Carrier], target: Target) -> None:
    """An outbound call's answer: the carrier and gateway of its last attempt go into its record (an
    inbound call's are set from its INVITE)."""
    took = carrier_with(carriers, target)
    if took is not None and call.record.attempts:
        call.record.carrier, call.record.gateway = carrier_key(took), call.record.attempts[-1].gateway


def carrier_key(carrier: Carrier) -> str:
    """A carrier as CDRs name it: namespace/name."""
    return f"{carrier.metadata.namespace}/{carrier.metadata.name}"


def host_port(host: str, port: int) -> str:
    """An address as CDRs name it: 192.0.2.1:5060, [2001:db8::1]:5060."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
