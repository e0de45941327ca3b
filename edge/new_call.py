"""A new INVITE: which way it goes (inbound from a carrier to a DID, outbound from a trunk to a
number) and whether the trunk's policy lets it (destination, caller ID). Returns the call to admit
and route, or None after answering the caller. An emergency number (edge/emergency.py) skips the
policy and the E.164 normalisation: it is routed as dialled."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trunkline.core.logs import event
from trunkline.core.models import DID, Carrier, Target, Trunk
from trunkline.edge import emergency
from trunkline.edge.call import Call, Leg
from trunkline.edge.cdr import CallRecord, Direction
from trunkline.edge.context import EdgeContext
from trunkline.edge.legs import new_tag, user_of
from trunkline.edge.numbers import to_e164
from trunkline.edge.observing import carrier_key, host_port
from trunkline.edge.policy import Rejection, check_caller_id, check_destination
from trunkline.edge.routing import outbound_targets
from trunkline.sip.errors import SipParseError
from trunkline.sip.stack import Incoming
from trunkline.sip.uri import parse_uri

log = logging.getLogger("trunkline.edge")


@dataclass
class NewCall:
    call: Call
    caller: str
    callee: str
    did: DID | None = None  # inbound: its targets are gathered once the call is admitted
    targets: list[tuple[Target, str]] | None = None  # outbound: the carriers to try, in order

    @property
    def emergency(self) -> bool:
        return self.call.record.emergency


def inbound(
    ctx: EdgeContext, inc: Incoming, carrier: Carrier, contact_user: str | None = None
) -> NewCall | None:
    """A call from `carrier` (known by the INVITE's source address) to one of our DIDs. `contact_user`:
    the user we register to this carrier as; a call sent to that Contact as it was bound names the DID
    in To rather than in the Request-URI (docs/carriers.md)."""
    req, tag, numbering = inc.request, new_tag(), carrier.spec.numbering
    dialled = user_of(req.uri) or ""
    if contact_user is not None and dialled == contact_user:
        dialled = user_of(req.to.uri) or ""
    number = to_e164(dialled, numbering)
    did = ctx.directory.did(number) if number else None
    trunk = ctx.directory.trunk_of(did) if did else None
    if did is None or trunk is None:
        event(
            log,
            logging.INFO,
            "call rejected",
            rule="unknown DID",
            number=user_of(req.uri),
            source=inc.addr[0],
        )
        ctx.answer(inc, 404, "Not Found", tag)
        return None
    # The carrier's plan reads its caller number too: a national caller ID reaches the PBX and the
    # CDR in E.164.
    caller = to_e164(user_of(req.from_.uri) or "", numbering) or (user_of(req.from_.uri) or "anonymous")
    call = new_call(ctx, inc, trunk, Direction.INBOUND, caller, did.spec.number, tag)
    call.record.carrier, call.record.gateway = carrier_key(carrier), host_port(inc.addr[0], inc.addr[1])
    return NewCall(call, caller, did.spec.number, did=did)


def outbound(ctx: EdgeContext, inc: Incoming, trunk: Trunk) -> NewCall | None:
    req, tag = inc.request, new_tag()
    dialled = emergency.number_of(user_of(req.uri), ctx.options.emergency_numbers, trunk)
    if dialled is not None:
        return _emergency(ctx, inc, trunk, dialled, tag)
    number = to_e164(user_of(req.uri) or "", trunk.spec.numbering)
    if number is None:
        ctx.reject(
            inc, Rejection(484, "Address Incomplete", "number", f"{user_of(req.uri)!r}"), trunk.name, tag
        )
        return None
    rejection = check_destination(trunk, number, ctx.options.trunk_defaults)
    if rejection:
        ctx.reject(inc, rejection, trunk.name, tag)
        return None
    pai = req.get("P-Asserted-Identity")
    try:
        presented = parse_uri(pai.strip().lstrip("<").split(">")[0]) if pai else req.from_.uri
    except SipParseError as exc:  # a peer's mistake: its answer, not a traceback
        ctx.reject(inc, Rejection(400, "Bad Request (P-Asserted-Identity)", "pai", str(exc)), trunk.name, tag)
        return None
    caller_raw = to_e164(user_of(presented) or "", trunk.spec.numbering)
    caller, rejection = check_caller_id(trunk, caller_raw, ctx.directory.numbers_of(trunk))
    if rejection or caller is None:
        ctx.reject(inc, rejection or Rejection(403, "Forbidden", "callerId"), trunk.name, tag)
        return None
    call = new_call(ctx, inc, trunk, Direction.OUTBOUND, caller, number, tag)
    carriers = ctx.directory.carriers
    targets = outbound_targets(number, carriers, down=ctx.gateways_down, quality=ctx.gateway_quality)
    return NewCall(call, caller, number, targets=[(t, number) for t in targets])


def _emergency(ctx: EdgeContext, inc: Incoming, trunk: Trunk, dialled: str, tag: str) -> NewCall:
    """An emergency call: no destination or caller-ID refusal, the number kept as dialled."""
    req = inc.request
    pai = req.get("P-Asserted-Identity")
    try:
        presented = parse_uri(pai.strip().lstrip("<").split(">")[0]) if pai else req.from_.uri
    except SipParseError:  # a bad P-Asserted-Identity does not stop an emergency call: From it is
        presented = req.from_.uri
    caller = emergency.caller_of(trunk, user_of(presented) or "", ctx.directory.numbers_of(trunk))
    event(log, logging.WARNING, "emergency call", trunk=trunk.name, number=dialled, caller=caller,
          source=inc.addr[0], call_id=req.call_id)  # fmt: skip
    call = new_call(ctx, inc, trunk, Direction.OUTBOUND, caller, dialled, tag)
    call.record.emergency = True
    targets = emergency.targets(dialled, ctx.directory.carriers)
    return NewCall(call, caller, dialled, targets=[(t, dialled) for t in targets])


def new_call(
    ctx: EdgeContext, inc: Incoming, trunk: Trunk, direction: Direction, caller: str, callee: str, tag: str
) -> Call:
    record = CallRecord(inc.request.call_id, trunk.name, direction, caller, callee, ctx.clock())
    return Call(trunk, direction, inc.request, Leg(inc.addr, inc.transport, tag=tag), record)
