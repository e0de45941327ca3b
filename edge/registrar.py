"""The registrar (RFC 3261 section 10.3) for trunks with `spec.registration.enabled`.

The address of record is `sip:USERNAME@<any host naming the edge>`; the request was already
authenticated as USERNAME, which found the trunk. Bindings live in the shared store under
`sip:USERNAME`, so any edge answers for them and any edge can route to them.

NAT (RFC 3581): a binding normally goes to the Contact as given. When the REGISTER came from another
address than its top Via's sent-by, the PBX is behind NAT and requests must go to where it came from:
the binding then remembers that source and inbound calls are sent there.

Contacts are where inbound calls fan out to, so a REGISTER may not point them anywhere
(`contact_refusal`): not at loopback (unless the REGISTER itself came over loopback, i.e. the edge
runs there), link-local, multicast, unspecified or reserved addresses, not at a host name (it would be
resolved inside the cluster), and not inside the deny networks (`--contact-deny`: pod and service
CIDRs). At most `registration.maxContacts` bindings per address of record. Each refusal is a 403
naming the rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from trunkline.core.models import Trunk
from trunkline.core.state import Binding, StateStore, aor_of
from trunkline.sip.errors import SipParseError
from trunkline.sip.message import Request, Response
from trunkline.sip.uri import SipUri

MIN_EXPIRES = 60
DEFAULT_EXPIRES = 3600

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class NatSource:
    """Where a REGISTER came from, as a binding stores it: `udp:192.0.2.1:5060`, `udp:[2001:db8::1]:5060`."""

    transport: str  # "udp", "tcp", "tls"
    host: str
    port: int

    @property
    def uri_host(self) -> str:
        """The host as a SIP URI writes it (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.transport}:{self.uri_host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> NatSource:
        """The inverse of `str()`; ValueError for anything else."""
        transport, sep, rest = text.partition(":")
        host, colon, port = rest.rpartition(":")
        if not sep or not colon or not transport or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"not a NAT source: {text!r}")
        if host.startswith("["):
            if not host.endswith("]") or ":" not in host:
                raise ValueError(f"not a NAT source: {text!r}")
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"not a NAT source (IPv6 without brackets): {text!r}")
        return cls(transport, host, int(port))


def behind_nat(request: Request, source: NatSource) -> bool:
    via = request.top_via
    return via.host.strip("[]") != source.host or (via.port or 5060) != source.port


def _expires(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit():
        raise SipParseError(f"Bad Request: {what} is not a number of seconds")
    return int(value)


def contact_refusal(host: str, source_host: str, deny: Sequence[Network] = ()) -> str | None:
    """Why a Contact at `host` may not be bound (for a REGISTER from `source_host`), or None if it may."""
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return "contact host is a name, not an address"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        try:
            from_loopback = ipaddress.ip_address(source_host.strip("[]")).is_loopback
        except ValueError:
            from_loopback = False
        return None if from_loopback else "contact host is a loopback address"
    if addr.is_unspecified:
        return "contact host is the unspecified address"
    if addr.is_link_local:
        return "contact host is link-local"
    if addr.is_multicast:
        return "contact host is multicast"
    if addr.is_reserved or (addr.version == 4 and int(addr) == 0xFFFFFFFF):
        return "contact host is a reserved address"
    for net in deny:
        if addr.version == net.version and addr in net:
            return f"contact host is inside a denied network ({net})"
    return None


async def register(
    request: Request,
    username: str,
    trunk: Trunk,
    store: StateStore,
    source: NatSource,
    to_tag: str,
    deny: Sequence[Network] = (),
) -> Response:
    """Apply a REGISTER and answer it: 200 with every current contact, or the error status.

    `deny`: networks no contact may point into (SignallingLimits.contact_deny).
    """
    to_uri = request.to.uri
    if not isinstance(to_uri, SipUri) or to_uri.user_unescaped != username:
        return request.create_response(403, "Forbidden (AOR is not the authenticated user)", to_tag=to_tag)
    if not trunk.spec.registration.enabled:
        return request.create_response(403, "Forbidden (registration not enabled)", to_tag=to_tag)
    aor = aor_of(username)
    now = store.now()
    header_expires = _expires(request.get("Expires"), "Expires")
    contacts = request.contact
    if any(c.wildcard for c in contacts):
        # Contact: * is only for removing every binding, alone and with Expires: 0 (10.3 step 6).
        if len(contacts) != 1 or header_expires != 0:
            return request.create_response(400, "Bad Request (Contact: * needs Expires: 0)", to_tag=to_tag)
        for binding in await store.bindings(aor):
            await store.remove_binding(aor, binding.contact)
        return request.create_response(200, to_tag=to_tag)
    max_contacts = trunk.spec.registration.maxContacts
    if len(contacts) > max_contacts:
        return request.create_response(403, f"Forbidden (more than {max_contacts} contacts)", to_tag=to_tag)
    existing = {b.contact: b for b in await store.bindings(aor)}
    nat_source = str(source) if behind_nat(request, source) else ""
    call_id, cseq = request.call_id, request.cseq.seq
    # Every contact is checked before any is applied: a refused REGISTER changes nothing.
    plan: list[tuple[str, int]] = []
    after = set(existing)
    for contact in contacts:
        target = contact.uri
        if not isinstance(target, SipUri):
            return request.create_response(403, "Forbidden (contact is not a SIP URI)", to_tag=to_tag)
        asked = _expires(contact.params.get("expires"), "expires")
        seconds = asked if asked is not None else header_expires
        seconds = DEFAULT_EXPIRES if seconds is None else seconds
        if seconds:
            why = contact_refusal(target.host, source.host, deny)
            if why is not None:
                return request.create_response(403, f"Forbidden ({why})", to_tag=to_tag)
            after.add(str(target))
        else:
            after.discard(str(target))
        plan.append((str(target), seconds))
    if len(after) > max_contacts and len(after) > len(existing):
        return request.create_response(403, f"Forbidden (more than {max_contacts} contacts)", to_tag=to_tag)
    for uri, seconds in plan:
        old = existing.get(uri)
        if old and old.call_id == call_id and old.cseq >= cseq:
            continue  # a retransmitted or reordered REGISTER: the newer one already applied
        if seconds == 0:
            await store.remove_binding(aor, uri)
            continue
        if seconds < MIN_EXPIRES:
            response = request.create_response(423, "Interval Too Brief", to_tag=to_tag)
            response.add("Min-Expires", str(MIN_EXPIRES))
            return response
        seconds = min(seconds, trunk.spec.registration.maxExpires)
        await store.put_binding(aor, Binding(uri, now + seconds, nat_source, call_id, cseq))
    response = request.create_response(200, to_tag=to_tag)
    for binding in await store.bindings(aor):
        response.add("Contact", f"<{binding.contact}>;expires={max(1, round(binding.expires_at - now))}")
    return response
