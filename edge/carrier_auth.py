"""Answering a carrier's digest challenges (401/407) to the requests the edge sends it: the INVITE of
an outbound call's attempt (attempts.py resends it) and in-dialog requests toward a carrier (BYE,
re-INVITE, UPDATE...; CANCEL cannot be challenged and is never resent).

Credentials go only to a gateway the Carrier lists: the attempt's target must be one of its gateways
(never a trunk's PBX, a registered contact or a redirect target, which the edge does not follow), and
an in-dialog request only to the address the call was set up with at that gateway, or to a gateway
whose URI names that address literally. Any other challenge is an ordinary final answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trunkline.core.logs import event
from trunkline.core.models import Carrier
from trunkline.edge.call import Call, Leg
from trunkline.edge.cdr import Direction
from trunkline.edge.context import EdgeContext
from trunkline.edge.digest_client import ChallengeError, DigestClient, Tries, printable
from trunkline.edge.observing import carrier_key
from trunkline.edge.resolver import Hop, ip_literal
from trunkline.sip.errors import SipParseError
from trunkline.sip.headers import Via
from trunkline.sip.message import Request, Response
from trunkline.sip.uri import SipUri, parse_uri

log = logging.getLogger("trunkline.edge")
CHALLENGES = (401, 407)
_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization")


@dataclass
class LegAuth:
    """A dialog's credentials toward its carrier: the carrier's last challenge lives in `client`."""

    carrier: tuple[str, str]
    host: str  # the address of the gateway the dialog was set up with
    client: DigestClient


def client_for(ctx: EdgeContext, carrier: Carrier | None) -> DigestClient | None:
    if carrier is None:
        return None
    credentials = ctx.directory.carrier_credentials(carrier)
    if credentials is None or carrier.spec.auth is None:
        return None
    if not printable(credentials[0]):  # it goes into a header: a line break would forge others
        event(log, logging.WARNING, "carrier username not usable in a header", carrier=carrier.name)
        return None
    return DigestClient(*credentials, realm=carrier.spec.auth.realm)


def attempt_client(ctx: EdgeContext, call: Call, target_uri: str) -> DigestClient | None:
    """Credentials for an outbound call's INVITE to `target_uri`, when that is a gateway of a Carrier
    with credentials."""
    if call.direction is not Direction.OUTBOUND:
        return None
    return client_for(ctx, ctx.directory.carrier_of_gateway(target_uri))


async def send_answering_challenges(
    ctx: EdgeContext, call: Call, target_uri: str, hop: Hop, invite: Request,
    send: Callable[[Request], Awaitable[Response | None]],
) -> tuple[Request, Response | None, bool]:  # fmt: skip
    """An attempt's INVITE through `send` (each one sent is an attempt in the CDR and the trace),
    sent again with credentials while the gateway's challenges are answerable: the INVITE last sent,
    its answer, and True when the carrier refused our credentials (or its challenge was not one to
    answer), which moves the call on to the next gateway."""
    client, tries = attempt_client(ctx, call, target_uri), Tries()
    response = await send(invite)
    while (
        response is not None and response.status in CHALLENGES and client is not None and not call.cancelled
    ):
        again = answer_challenge(ctx, invite, response, client, tries, invite.cseq.seq + 1, hop.transport,
                                 call.key)  # fmt: skip
        if again is None:
            return invite, response, True
        invite = again
        response = await send(invite)
    carrier = ctx.directory.carrier_of_gateway(target_uri)
    if response is not None and 200 <= response.status < 300 and client is not None and carrier is not None:
        # The dialog's own challenges are answered at this address only (the gateway's).
        call.auth["b"] = LegAuth(carrier.key, hop.host, client)
    return invite, response, False


def answer_challenge(
    ctx: EdgeContext, request: Request, response: Response, client: DigestClient, tries: Tries, seq: int,
    transport: str, call_id: str,
) -> Request | None:  # fmt: skip
    """`request` again with CSeq `seq`, a new branch and credentials answering `response`'s challenge;
    None (logged) when the challenge is not one to answer: unreadable, for another realm, or a repeat
    for this request (the credentials are refused)."""
    try:
        challenge = client.challenge_of(response)
    except ChallengeError as exc:
        event(log, logging.WARNING, "carrier challenge not answered", call_id=call_id,
              method=request.method, status=response.status, why=str(exc))  # fmt: skip
        return None
    if not tries.may_answer(challenge):
        event(log, logging.WARNING, "carrier refused our credentials", call_id=call_id,
              method=request.method, status=response.status, realm=challenge.realm)  # fmt: skip
        return None
    value = client.authorization(challenge, request.method, str(request.uri))
    return resend(request, ctx.local.via(transport), seq, challenge.answer_header, value)


def resend(request: Request, via: Via, seq: int, header: str, credentials: str) -> Request:
    """A copy of `request` as a new transaction (top Via replaced) with CSeq `seq` and `credentials`
    in `header` (earlier credentials dropped)."""
    again = Request(request.method, request.uri)
    for name, value in request.headers():
        lowered = name.lower()
        if lowered in ("authorization", "proxy-authorization"):
            continue
        if lowered in ("via", "v") and "Via" not in again:  # ours is the only Via
            again.add("Via", via)
        elif lowered in ("cseq",):
            again.add("CSeq", f"{seq} {request.method}")
        elif lowered not in ("via", "v"):
            again.add(name, value)
    again.add(header, credentials)
    again.body = request.body
    return again


async def leg_auth(ctx: EdgeContext, call: Call, leg_name: str) -> LegAuth | None:
    """Credentials for in-dialog requests on a leg facing a carrier, kept on the call for the dialog."""
    leg = call.leg(leg_name)
    facing_carrier = (leg_name == "b") == (call.direction is Direction.OUTBOUND)
    if not facing_carrier:
        return None
    carrier: Carrier | None = None
    if call.direction is Direction.OUTBOUND and call.record.attempts:
        carrier = ctx.directory.carrier_of_gateway(call.record.attempts[-1].target)
    elif call.record.carrier:  # inbound: the carrier the call came from, by its CDR name
        carrier = next((c for c in ctx.directory.carriers if carrier_key(c) == call.record.carrier), None)
    if carrier is None:  # a gateway naming the leg's address
        carrier = next((c for c in ctx.directory.carriers if leg.addr[0] in gateway_hosts(c)), None)
    client = client_for(ctx, carrier)
    if carrier is None or client is None:
        return None
    kept = call.auth.get(leg_name)
    host = kept.host if kept is not None and kept.carrier == carrier.key else None
    if leg.addr[0] != host and not await is_gateway_address(ctx, carrier, leg.addr[0], leg.transport):
        return None  # the dialog moved to an address that is not the carrier's gateway
    if kept is None or host is None or kept.client.username != client.username:
        kept = LegAuth(carrier.key, host or leg.addr[0], client)
        call.auth[leg_name] = kept
    else:  # the same dialog state (its last challenge, the nonce count) with today's secret
        kept.client.password, kept.client.realm = client.password, client.realm
    return kept


async def is_gateway_address(ctx: EdgeContext, carrier: Carrier, address: str, transport: str) -> bool:
    """Whether `address` is one of the carrier's gateways: named literally, or what a gateway's host
    name resolves to now (edge/resolver.py). An edge that adopted the call never saw the challenge the
    dialog was set up with, so the carrier's gateways are all it can go by."""
    if address in gateway_hosts(carrier):
        return True
    for gateway in carrier.spec.gateways:
        try:
            uri = parse_uri(gateway.uri)
        except SipParseError:
            continue
        if not isinstance(uri, SipUri) or ip_literal(uri.host) is not None:
            continue  # a literal address: checked above
        if any(hop.host == address for hop in await ctx.resolver.resolve(uri, transport)):
            return True
    return False


def gateway_hosts(carrier: Carrier) -> set[str]:
    hosts = set()
    for gateway in carrier.spec.gateways:
        try:
            uri = parse_uri(gateway.uri)
        except SipParseError:
            continue
        if isinstance(uri, SipUri):
            hosts.add(uri.host.strip("[]"))
    return hosts


async def request_on_leg(
    ctx: EdgeContext, call: Call, leg_name: str, request: Request
) -> tuple[Request, Response]:
    """Send an in-dialog request on a leg and answer the carrier's challenges to it; the request last
    sent (its CSeq is the dialog's) and its final answer. Raises NoAnswer as the stack does."""
    leg: Leg = call.leg(leg_name)
    answer = await ctx.stack.request(request, leg.addr, leg.transport)
    if answer.status not in CHALLENGES or request.method in ("CANCEL", "ACK") or leg.dialog is None:
        return request, answer
    auth = await leg_auth(ctx, call, leg_name)
    tries = Tries()
    while auth is not None and answer.status in CHALLENGES and leg.dialog is not None:
        again = answer_challenge(ctx, request, answer, auth.client, tries, leg.dialog.local_seq + 1,
                                 leg.transport, call.key)  # fmt: skip
        if again is None:
            break
        leg.dialog.local_seq += 1
        request = again
        answer = await ctx.stack.request(request, leg.addr, leg.transport)
    return request, answer
