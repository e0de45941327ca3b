"""W3C trace context in SIP (edge/trace_headers.py): only a well-formed `traceparent` is taken, only
from a peer known by its source address that enables it; INVITEs carry one only toward such peers."""

from __future__ import annotations

from typing import Any

import pytest

from trunkline.core.manifests import ConfigSet
from trunkline.core.models import Carrier, Target, Trunk
from trunkline.edge.call import Call, Leg
from trunkline.edge.cdr import CallRecord, Direction
from trunkline.edge.directory import Directory
from trunkline.edge.trace_headers import accepted, sent_to_tracing_peer, trusted_parent
from trunkline.sip.message import Request, parse_message
from trunkline.sip.stack import Incoming

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _invite(*headers: str) -> Request:
    text = (
        "INVITE sip:+442071234567@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-1\r\n"
        "From: <sip:+14155550100@127.0.0.2>;tag=a\r\nTo: <sip:+442071234567@127.0.0.1>\r\n"
        "Call-ID: c1@127.0.0.2\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def test_a_well_formed_traceparent_and_its_tracestate_are_taken() -> None:
    assert accepted(_invite(f"traceparent: {GOOD}")) == (GOOD, None)
    assert accepted(_invite(f"Traceparent: {GOOD}", "tracestate: a=1", "tracestate: b=2")) == (
        GOOD,
        "a=1,b=2",
    )


@pytest.mark.parametrize(
    "headers",
    [
        (),
        ("traceparent: junk",),
        (f"traceparent: {GOOD.upper()}",),  # upper-case hex is not W3C
        (f"traceparent: 01{GOOD[2:]}",),  # a version we do not know
        (f"traceparent: ff{GOOD[2:]}",),
        (f"traceparent: {GOOD}-extra",),
        ("traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01",),  # zero trace id
        ("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",),  # zero span id
        (f"traceparent: {GOOD}", f"traceparent: {GOOD}"),  # two of them: invalid
        (f"traceparent: {GOOD[:20]}{'0' * 3000}",),  # oversized (the parser caps a line at 4 KiB)
    ],
)
def test_a_malformed_or_oversized_traceparent_is_ignored(headers: tuple[str, ...]) -> None:
    assert accepted(_invite(*headers)) is None


def test_an_oversized_tracestate_is_dropped_and_the_parent_kept() -> None:
    long_state = "tracestate: " + ",".join(f"k{i}=v" for i in range(40))
    assert accepted(_invite(f"traceparent: {GOOD}", long_state)) == (GOOD, None)
    assert accepted(_invite(f"traceparent: {GOOD}", "tracestate: " + "x" * 600)) == (GOOD, None)


def _trunk(name: str, acl: list[str], tracing: bool) -> Trunk:
    spec: dict[str, Any] = {"auth": {"ipAcl": acl}, "tracing": {"traceparentHeader": tracing}}
    return Trunk.model_validate({"metadata": {"name": name}, "spec": spec})


def _carrier(name: str, cidrs: list[str], tracing: bool) -> Carrier:
    spec = {"gateways": [{"uri": f"sip:{name}.example:5060"}], "inboundCidrs": cidrs,
            "tracing": {"traceparentHeader": tracing}}  # fmt: skip
    return Carrier.model_validate({"metadata": {"name": name}, "spec": spec})


def _directory(trunks: list[Trunk], carriers: list[Carrier]) -> Directory:
    config = ConfigSet()
    for trunk in trunks:
        config.trunks[trunk.key] = trunk
    for carrier in carriers:
        config.carriers[carrier.key] = carrier
    return Directory(config)


def test_only_a_peer_known_by_its_address_that_enables_it_is_trusted() -> None:
    directory = _directory(
        [_trunk("on", ["127.0.0.2/32"], True), _trunk("off", ["127.0.0.3/32"], False)],
        [_carrier("pstn", ["127.0.0.1/32"], True), _carrier("quiet", ["127.0.0.6/32"], False)],
    )

    def parent(source: str, *headers: str) -> object:
        return trusted_parent(directory, Incoming(_invite(*headers), (source, 5060), "udp", None))

    assert parent("127.0.0.2", f"traceparent: {GOOD}") == (GOOD, None)  # trunk by ACL, option on
    assert parent("127.0.0.1", f"traceparent: {GOOD}") == (GOOD, None)  # carrier by CIDR, option on
    assert parent("127.0.0.3", f"traceparent: {GOOD}") is None  # option off
    assert parent("127.0.0.6", f"traceparent: {GOOD}") is None
    assert parent("127.0.0.9", f"traceparent: {GOOD}") is None  # a stranger (digest, or nobody)
    assert parent("127.0.0.2", "traceparent: junk") is None
    # With credentials, a carrier's address does not make the sender the carrier (Edge._set_up).
    assert parent("127.0.0.1", f"traceparent: {GOOD}", "Proxy-Authorization: Digest username=x") is None


def test_an_invite_carries_trace_context_only_toward_a_peer_that_enables_it() -> None:
    on, off = _trunk("on", [], True), _trunk("off", [], False)
    carriers = [_carrier("pstn", [], True), _carrier("quiet", [], False)]

    def call(trunk: Trunk, direction: Direction) -> Call:
        invite = _invite()
        record = CallRecord(invite.call_id, trunk.name, direction, "+1", "+2", 0.0)
        return Call(trunk, direction, invite, Leg(("127.0.0.2", 5060), "udp", tag="t"), record)

    pstn, quiet = Target(uri="sip:pstn.example:5060"), Target(uri="sip:quiet.example:5060")
    pbx = Target(uri="sip:127.0.0.4:5060")
    assert sent_to_tracing_peer(call(off, Direction.OUTBOUND), carriers, pstn)  # the carrier decides
    assert not sent_to_tracing_peer(call(on, Direction.OUTBOUND), carriers, quiet)
    assert sent_to_tracing_peer(call(on, Direction.INBOUND), carriers, pbx)  # the trunk decides
    assert not sent_to_tracing_peer(call(off, Direction.INBOUND), carriers, pbx)
    assert not sent_to_tracing_peer(call(on, Direction.OUTBOUND), carriers, pbx)  # no carrier's gateway
