"""RFC 3263 / RFC 2782 rules of the SIP edge's resolver that need no DNS: SRV ordering, NAPTR
selection, default ports and transports, IP-literal hosts."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.support.ports import free_port
from trunkline.edge.resolver import (
    Hop,
    Naptr,
    Resolver,
    Srv,
    default_port,
    ip_literal,
    select_naptr,
    srv_name,
    uri_transport,
)
from trunkline.edge.routing import weighted_order
from trunkline.sip.uri import SipUri, parse_uri


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


# -- SRV order (RFC 2782) -------------------------------------------------------------------------


def test_srv_lower_priority_always_first() -> None:
    records = [Srv(20, 100, 5060, "c."), Srv(10, 0, 5060, "a."), Srv(10, 0, 5060, "b."), Srv(30, 5, 1, "d.")]
    for seed in range(50):
        ordered = weighted_order(records, random.Random(seed))
        assert [r.priority for r in ordered] == [10, 10, 20, 30]


def test_srv_weights_share_first_place_in_proportion() -> None:
    records = [Srv(10, 90, 5060, "heavy."), Srv(10, 10, 5060, "light.")]
    rng = random.Random(7)
    firsts = Counter(weighted_order(records, rng)[0].target for _ in range(2000))
    # RFC 2782: chance of first place is weight / sum (plus the draw of 0, 1 in 101 here).
    assert 1700 < firsts["heavy."] < 1900
    assert firsts["heavy."] + firsts["light."] == 2000


def test_srv_order_is_reproducible_with_a_seeded_rng() -> None:
    records = [Srv(10, w, 5060, f"t{w}.") for w in (5, 10, 20, 40)]
    assert weighted_order(records, random.Random(42)) == weighted_order(records, random.Random(42))
    orders = {tuple(r.target for r in weighted_order(records, random.Random(s))) for s in range(40)}
    assert len(orders) > 1  # and it does vary, which is what spreads the load


def test_srv_weight_zero_comes_first_only_by_small_chance() -> None:
    records = [Srv(10, 0, 5060, "zero."), Srv(10, 50, 5060, "some.")]
    rng = random.Random(1)
    firsts = Counter(weighted_order(records, rng)[0].target for _ in range(1000))
    assert 0 < firsts["zero."] < 60  # only when 0 is drawn: 1 in 51
    # All weights zero: every record still comes out, once, in the given order.
    zeros = [Srv(10, 0, 5060, "a."), Srv(10, 0, 5060, "b."), Srv(10, 0, 5060, "c.")]
    assert weighted_order(zeros, random.Random(3)) == zeros


def test_srv_order_keeps_every_record() -> None:
    records = [
        Srv(p, w, 5060 + i, f"h{i}.") for i, (p, w) in enumerate([(1, 0), (1, 3), (2, 9), (1, 3), (2, 0)])
    ]
    assert sorted(weighted_order(records, random.Random(5)), key=records.index) == records
    assert weighted_order([], random.Random(0)) == []


# -- NAPTR selection (RFC 3263 4.1, RFC 3403) -----------------------------------------------------


NAPTRS = [
    Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.example.com."),
    Naptr(10, 50, "s", "SIP+D2T", "_sip._tcp.example.com."),
    Naptr(10, 40, "S", "sips+d2t", "_sips._tcp.example.com."),  # flags and service are case-blind
    Naptr(5, 10, "s", "SIP+D2S", "_sip._sctp.example.com."),  # SCTP: not supported here
    Naptr(5, 10, "u", "E2U+sip", "."),  # ENUM, not for us
    Naptr(1, 10, "", "SIP+D2U", "_sip._udp.other.com."),  # no "s" flag: not an SRV name
    Naptr(1, 10, "s", "SIP+D2U", "."),  # replacement "." leads nowhere
]


def test_naptr_keeps_supported_services_in_order_then_preference() -> None:
    selected = select_naptr(NAPTRS, secure=False)
    assert [(r.replacement, t) for r, t in selected] == [
        ("_sips._tcp.example.com.", "tls"),  # order 10, preference 40
        ("_sip._tcp.example.com.", "tcp"),  # order 10, preference 50
        ("_sip._udp.example.com.", "udp"),  # order 20
    ]


def test_naptr_for_sips_keeps_only_sips_d2t() -> None:
    selected = select_naptr(NAPTRS, secure=True)
    assert [(r.replacement, t) for r, t in selected] == [("_sips._tcp.example.com.", "tls")]
    assert select_naptr([Naptr(1, 1, "s", "SIP+D2U", "_sip._udp.x.")], secure=True) == []


# -- transports and ports (RFC 3263 4.1, 4.2; RFC 3261 19.1.2) ------------------------------------


@pytest.mark.parametrize(
    ("uri", "default", "transport"),
    [
        ("sip:a.example.com", "udp", "udp"),
        ("sip:a.example.com", "tcp", "tcp"),  # the caller's default for sip:
        ("sips:a.example.com", "udp", "tls"),  # sips: is TLS whatever the default
        ("sip:a.example.com;transport=TCP", "udp", "tcp"),
        ("sip:a.example.com;transport=tls", "udp", "tls"),
        ("sips:a.example.com;transport=tcp", "udp", "tls"),  # TLS over TCP
        ("sips:a.example.com;transport=udp", "udp", None),  # SIPS over UDP is not a thing
        ("sip:a.example.com;transport=sctp", "udp", None),  # not supported here
        ("sip:a.example.com;transport=ws", "udp", None),
    ],
)
def test_uri_transport(uri: str, default: str, transport: str | None) -> None:
    assert uri_transport(sip(uri), default) == transport


def test_default_ports_and_srv_names() -> None:
    assert (default_port("udp"), default_port("tcp"), default_port("tls")) == (5060, 5060, 5061)
    assert srv_name("example.com", "udp") == "_sip._udp.example.com"
    assert srv_name("example.com", "tcp") == "_sip._tcp.example.com"
    assert srv_name("example.com", "tls") == "_sips._tcp.example.com"


def test_ip_literal() -> None:
    assert ip_literal("192.0.2.1") == "192.0.2.1"
    assert ip_literal("[::1]") == "::1"
    assert ip_literal("[2001:DB8:0:0::1]") == "2001:db8::1"
    assert ip_literal("example.com") is None
    assert ip_literal("999.1.1.1") is None  # looks numeric, is a (bad) name
    assert ip_literal("[example]") is None


# -- IP-literal URIs through Resolver.resolve: no DNS at all --------------------------------------


@pytest.mark.parametrize(
    ("uri", "default", "hops"),
    [
        ("sip:192.0.2.1", "udp", [Hop("192.0.2.1", 5060, "udp")]),
        ("sip:192.0.2.1", "tcp", [Hop("192.0.2.1", 5060, "tcp")]),
        ("sip:192.0.2.1:5080", "udp", [Hop("192.0.2.1", 5080, "udp")]),
        ("sip:192.0.2.1;transport=tls", "udp", [Hop("192.0.2.1", 5061, "tls")]),
        ("sips:alice@192.0.2.1", "udp", [Hop("192.0.2.1", 5061, "tls")]),
        ("sips:192.0.2.1:6000;transport=tcp", "udp", [Hop("192.0.2.1", 6000, "tls")]),
        ("sip:[::1]", "udp", [Hop("::1", 5060, "udp")]),
        ("sip:bob@[::1]:5070;transport=tcp", "udp", [Hop("::1", 5070, "tcp")]),
        ("sips:[2001:db8::7]", "udp", [Hop("2001:db8::7", 5061, "tls")]),
        ("sip:192.0.2.1;transport=sctp", "udp", []),
    ],
)
async def test_ip_literal_uris_resolve_without_dns(uri: str, default: str, hops: list[Hop]) -> None:
    # A nameserver port nobody listens on: any query would fail, and none is made.
    resolver = Resolver([("127.0.0.1", free_port())], timeout=0.5)
    assert await resolver.resolve(sip(uri), default) == hops


async def test_unknown_default_transport_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="sctp"):
        await Resolver([("127.0.0.1", free_port())]).resolve(sip("sip:192.0.2.1"), "sctp")
