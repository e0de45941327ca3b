"""W3C trace context in SIP headers, for the peers whose Trunk/Carrier sets
`spec.tracing.traceparentHeader` (topology hiding otherwise: no trace context ever goes into SIP).

In: a new INVITE's `traceparent` becomes the parent of the call's trace when the peer it came from is
known by its source address (a carrier's inboundCidrs, a trunk's ipAcl: the same order `Edge._set_up`
decides who sent it) and enables the option. The call's span starts before a digest proves who sent
an INVITE, so a peer known only by its digest is never trusted. Anything else about the header is
hostile until checked: exactly one `traceparent` of version 00, lower-case hex, ids not all zero
(`accepted`); `tracestate` is kept only when short (W3C: at most 32 members; 512 characters here).

Out: the INVITE of an attempt toward such a peer (inbound calls: the trunk; outbound: the carrier
whose gateway it is) carries the attempt span's context (`headers`), so the peer's spans are its
children.
"""

from __future__ import annotations

import re

from trunkline.core.models import Carrier, PeerTracing, Target
from trunkline.edge.call import Call
from trunkline.edge.cdr import Direction
from trunkline.edge.directory import Directory
from trunkline.edge.tracing import Attempt
from trunkline.sip.message import Request
from trunkline.sip.stack import Incoming

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_VERSION_00 = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
MAX_TRACESTATE = 512
MAX_TRACESTATE_MEMBERS = 32

TraceContext = tuple[str, str | None]  # traceparent, tracestate


def accepted(request: Request) -> TraceContext | None:
    """The request's trace context when it is well formed, else None (never an error: ignored)."""
    parents = request.get_all(TRACEPARENT)
    if len(parents) != 1:  # none, or several: W3C says the context is then invalid
        return None
    parent = parents[0].strip()
    if len(parent) != 55 or not _VERSION_00.fullmatch(parent):
        return None
    state: str | None = ",".join(value.strip() for value in request.get_all(TRACESTATE))
    if not state or len(state) > MAX_TRACESTATE or state.count(",") >= MAX_TRACESTATE_MEMBERS:
        state = None  # W3C lets a receiver drop tracestate; the parent stays good
    return parent, state


def trusted_parent(directory: Directory, inc: Incoming) -> TraceContext | None:
    """The trace context of a new INVITE from a peer that enables it, else None."""
    request = inc.request
    if request.get(TRACEPARENT) is None:  # the usual case: one header lookup
        return None
    tracing: PeerTracing | None = None
    carrier = directory.carrier_for_source(inc.addr[0])
    if carrier is not None and request.get("Proxy-Authorization") is None:
        tracing = carrier.spec.tracing
    else:
        trunk = directory.trunk_for_source(inc.addr[0])
        tracing = trunk.spec.tracing if trunk is not None else None
    if tracing is None or not tracing.traceparentHeader:
        return None
    return accepted(request)


def sent_to_tracing_peer(call: Call, carriers: list[Carrier], target: Target) -> bool:
    """Does the peer this attempt's INVITE goes to want trace context: the call's trunk for an inbound
    call (its PBX), the carrier `target` is a gateway of for an outbound one."""
    if call.direction is Direction.INBOUND:
        return call.trunk.spec.tracing.traceparentHeader
    for carrier in carriers:
        if any(gateway.uri == target.uri for gateway in carrier.spec.gateways):
            return carrier.spec.tracing.traceparentHeader
    return False


def headers(attempt: Attempt) -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate`, when the trace has one) naming `attempt` as the parent of what
    the peer does with its INVITE; none while not recording."""
    span = attempt.context()
    if span is None:
        return []
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    return [(name, carrier[name]) for name in (TRACEPARENT, TRACESTATE) if carrier.get(name)]


def stamp(invite: Request, attempt: Attempt, call: Call, carriers: list[Carrier], target: Target) -> None:
    """Put `attempt`'s trace context into its INVITE when the peer wants it; a resent INVITE (a
    challenge answered) has its predecessor's replaced, as it is an attempt of its own."""
    if attempt.recording and sent_to_tracing_peer(call, carriers, target):
        for name, value in headers(attempt):
            invite.set(name, value)
