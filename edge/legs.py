"""Building the messages of a B2BUA leg, with topology hiding.

Each leg is its own dialog with its own Call-ID, tags, Via, Contact and CSeq space. Nothing of one
side's addressing reaches the other: requests are built from scratch, and only the headers listed in
`PASSED_HEADERS` are copied across (their values do not name hosts), plus the body.

Identities on the other leg (From/To users) are never the peer's text: `header_user` lets through
only a validated E.164 number or a plain id, else `anonymous`. A user part is percent-decoded when
parsed, so `%0D%0A` in it would otherwise become a real line break, i.e. forged header lines
(P-Asserted-Identity, Call-Info answer-after) in the request the other side receives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trunkline.sip import ids
from trunkline.sip.dialog import Dialog
from trunkline.sip.headers import NameAddr, Via
from trunkline.sip.ids import new_branch
from trunkline.sip.message import Message, Request, Response
from trunkline.sip.transaction import Addr
from trunkline.sip.uri import SipUri, TelUri, Uri

# Copied from one leg to the other: they describe the session, not the path.
PASSED_HEADERS = ("Content-Type", "Session-Expires", "Min-SE", "Event", "Info-Package", "Content-Disposition")
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER"
SUPPORTED = "timer"
ANONYMOUS = "anonymous"
_E164 = re.compile(r"\+[1-9][0-9]{1,14}\Z")
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # unreserved characters only: no escaping


@dataclass(frozen=True)
class Local:
    """Our addresses: `via` is where responses to our requests must come back (this process), and
    `contact` what any edge answers for (the service address, so in-dialog requests survive us)."""

    via_host: str
    via_port: int
    contact_host: str
    contact_port: int
    # False when requests leave by an address other edges share (`--service-listen`): an answer to
    # the source address (RFC 3581) could reach another edge, one to Via's port reaches this one.
    rport: bool = True

    def via(self, transport: str) -> Via:
        params: dict[str, str | None] = {"branch": new_branch()}
        if self.rport:
            params["rport"] = None
        return Via(transport.upper(), self.via_host, self.via_port, params)

    def contact(self, transport: str, user: str = "trunkline") -> NameAddr:
        params: dict[str, str | None] = {} if transport == "udp" else {"transport": transport}
        return NameAddr(SipUri("sip", "", user, None, self.contact_host, self.contact_port, params))


new_call_id, new_tag = ids.new_call_id, ids.new_tag  # the edge's names for them (one generator)


def copy_passed(source: Message, target: Message) -> None:
    for name in PASSED_HEADERS:
        for value in source.get_all(name):
            target.add(name, value)
    target.body = source.body


def user_of(uri: Uri) -> str | None:
    if isinstance(uri, SipUri):
        return uri.user_unescaped
    if isinstance(uri, TelUri):
        return uri.number
    return None


def header_user(text: str) -> str:
    """`text` when it is an E.164 number or a plain id (letters, digits, then also . _ -), else
    "anonymous": the only user parts that reach a header of the other leg."""
    return text if _E164.match(text) or _PLAIN_ID.match(text) else ANONYMOUS


def first_invite(
    local: Local,
    transport: str,
    request_uri: SipUri,
    caller: str,
    callee: str,
    max_forwards: int,
    offer_from: Request,
) -> Request:
    """The INVITE that opens the other leg: fresh Call-ID, tag, Via, Contact, CSeq 1. The From and To
    users are `caller` and `callee` when `header_user` accepts them, else anonymous."""
    caller, callee = header_user(caller), header_user(callee)
    invite = Request("INVITE", request_uri)
    invite.add("Via", local.via(transport))
    invite.add("Max-Forwards", str(max_forwards))
    host = f"[{local.contact_host}]" if ":" in local.contact_host else local.contact_host
    invite.add("From", f"<sip:{caller}@{host}>;tag={new_tag()}")
    invite.add("To", f"<sip:{callee}@{request_uri.host}>")
    invite.add("Call-ID", new_call_id())
    invite.add("CSeq", "1 INVITE")
    invite.add("Contact", local.contact(transport))
    invite.add("Allow", ALLOW)
    invite.add("Supported", SUPPORTED)
    copy_passed(offer_from, invite)
    return invite


def response_for(request: Request, status: int, reason: str | None, to_tag: str) -> Response:
    response = request.create_response(status, reason, to_tag=to_tag)
    for name in ("Record-Route",):  # a B2BUA is the UAS: nothing of the other side's route reaches here
        response.remove(name)
    return response


def relay_response(
    request: Request, answer: Response, to_tag: str, contact: NameAddr | None, reason: str | None = None
) -> Response:
    """Our answer to `request` mirroring `answer` from the other leg: status, reason, session headers
    and body; our own tag and Contact."""
    response = response_for(request, answer.status, reason or answer.reason, to_tag)
    if contact is not None and answer.status < 300 and request.method in ("INVITE", "UPDATE"):
        response.add("Contact", contact)
    if 200 <= answer.status < 300 and "timer" in (answer.get("Require") or ""):
        response.add("Require", "timer")
    copy_passed(answer, response)
    return response


def in_dialog(dialog: Dialog, method: str, local: Local, transport: str, source: Message) -> Request:
    """A request on this leg carrying what `source` (from the other leg) carries."""
    request = dialog.create_request(method, local.via(transport), local.contact(transport))
    copy_passed(source, request)
    return request


def ack_for(
    dialog: Dialog, local: Local, transport: str, invite: Request, body_from: Message | None
) -> Request:
    """The ACK of a 2xx to `invite`: its CSeq and (RFC 3261 13.2.2.4) the same credentials."""
    ack = dialog.create_request("ACK", local.via(transport), cseq=invite.cseq.seq)
    for name in ("Authorization", "Proxy-Authorization"):
        for value in invite.get_all(name):
            ack.add(name, value)
    if body_from is not None and body_from.body:
        copy_passed(body_from, ack)
    return ack


def addr_of(host: str, port: int) -> Addr:
    return (host, port)
