"""The SIP edge's RFC 3263 resolver against a real DNS server (dnsmasq on a loopback port): NAPTR ->
SRV -> A/AAAA chains, SRV priority and weight, transport and port rules, fallbacks, failures, cache."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import pytest

from tests.support.dns_server import DnsServer
from tests.support.ports import free_port
from trunkline.edge.resolver import Hop, Resolver
from trunkline.sip.uri import SipUri, parse_uri

pytestmark = pytest.mark.integration

RECORDS = [
    # naptr.test: NAPTR -> SRV -> A/AAAA. The E2U record has the lowest order but is not for SIP.
    "naptr-record=naptr.test,5,10,u,E2U+sip,!^.*$!sip:x@naptr.test!,",
    "naptr-record=naptr.test,10,50,s,SIP+D2T,,_sip._tcp.naptr.test",
    "naptr-record=naptr.test,10,40,s,SIPS+D2T,,_sips._tcp.naptr.test",
    "naptr-record=naptr.test,20,10,s,SIP+D2U,,_sip._udp.naptr.test",
    "srv-host=_sips._tcp.naptr.test,tls.naptr.test,5061,0,0",
    "srv-host=_sip._tcp.naptr.test,tcp.naptr.test,5060,0,0",
    "srv-host=_sip._udp.naptr.test,udp.naptr.test,5062,0,0",
    "host-record=tls.naptr.test,127.0.0.11,::1",
    "host-record=tcp.naptr.test,127.0.0.12",
    "host-record=udp.naptr.test,127.0.0.13",
    # srv.test: no NAPTR; SRV for udp (two priorities, weighted) and tcp; an A record of its own.
    "srv-host=_sip._udp.srv.test,heavy.srv.test,5070,10,90",
    "srv-host=_sip._udp.srv.test,light.srv.test,5071,10,10",
    "srv-host=_sip._udp.srv.test,backup.srv.test,5072,20,0",
    "srv-host=_sip._tcp.srv.test,heavy.srv.test,5080,10,0",
    "host-record=heavy.srv.test,127.0.0.21",
    "host-record=light.srv.test,127.0.0.22",
    "host-record=backup.srv.test,127.0.0.23",
    "host-record=srv.test,127.0.0.20",
    # plain.test: only addresses.
    "host-record=plain.test,127.0.0.30,::1",
    # refused.test: an SRV record with target "." (no target given): no SIP over UDP here.
    "srv-host=_sip._udp.refused.test",
    "host-record=refused.test,127.0.0.50",
    # short.test: an A record with a 5 s TTL.
    "host-record=short.test,127.0.0.40,5",
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[DnsServer]:
    with DnsServer(tmp_path / "dns", RECORDS) as server:
        yield server


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def resolver_for(server: DnsServer, clock: FakeClock | None = None, timeout: float = 2.0) -> Resolver:
    return Resolver([server.address], timeout=timeout, clock=clock or FakeClock())


async def test_naptr_srv_address_chain(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server)
    # NAPTR order then preference: SIPS+D2T (10/40), SIP+D2T (10/50), SIP+D2U (20); E2U skipped.
    # Each SRV target expands to its A then AAAA addresses.
    assert await resolver.resolve(sip("sip:alice@naptr.test")) == [
        Hop("127.0.0.11", 5061, "tls"),
        Hop("::1", 5061, "tls"),
        Hop("127.0.0.12", 5060, "tcp"),
        Hop("127.0.0.13", 5062, "udp"),
    ]
    # sips: takes only the SIPS+D2T record.
    assert await resolver.resolve(sip("sips:alice@naptr.test")) == [
        Hop("127.0.0.11", 5061, "tls"),
        Hop("::1", 5061, "tls"),
    ]


async def test_srv_priority_then_weight(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server)
    firsts: Counter[Hop] = Counter()
    for _ in range(200):  # one round of DNS queries, then the cache; the order is drawn every time
        hops = await resolver.resolve(sip("sip:srv.test"))
        # No NAPTR: SRV udp then tcp (no _sips._tcp). Priority 10 before 20 within udp.
        assert sorted(hops[:2], key=lambda h: h.port) == [
            Hop("127.0.0.21", 5070, "udp"),
            Hop("127.0.0.22", 5071, "udp"),
        ]
        assert hops[2:] == [Hop("127.0.0.23", 5072, "udp"), Hop("127.0.0.21", 5080, "tcp")]
        firsts[hops[0]] += 1
    # Weights 90 and 10: the heavy target leads about 90% of the time.
    assert firsts[Hop("127.0.0.21", 5070, "udp")] > 150
    assert firsts[Hop("127.0.0.22", 5071, "udp")] > 0
    assert dns_server.queries().count(("SRV", "_sip._udp.srv.test")) == 1


async def test_transport_param_means_srv_for_that_transport(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server)
    assert await resolver.resolve(sip("sip:srv.test;transport=tcp")) == [Hop("127.0.0.21", 5080, "tcp")]
    # No NAPTR was asked for, and only the tcp SRV name.
    assert [q for q in dns_server.queries() if q[0] in ("NAPTR", "SRV")] == [("SRV", "_sip._tcp.srv.test")]
    # No SRV for the transport: the host's addresses on the transport's default port.
    assert await resolver.resolve(sip("sip:plain.test;transport=tls")) == [
        Hop("127.0.0.30", 5061, "tls"),
        Hop("::1", 5061, "tls"),
    ]


async def test_srv_target_dot_means_no_service(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server)
    # RFC 2782: the service is decidedly not available, so no fallback to the host's A record.
    assert await resolver.resolve(sip("sip:refused.test;transport=udp")) == []
    assert ("SRV", "_sip._udp.refused.test") in dns_server.queries()
    # Another transport has no SRV records at all: that one does fall back to the address.
    assert await resolver.resolve(sip("sip:refused.test;transport=tcp")) == [Hop("127.0.0.50", 5060, "tcp")]


async def test_explicit_port_means_addresses_only(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server)
    # srv.test has SRV records, but a port in the URI skips NAPTR and SRV (RFC 3263 4.2).
    assert await resolver.resolve(sip("sip:srv.test:5099")) == [Hop("127.0.0.20", 5099, "udp")]
    assert await resolver.resolve(sip("sip:srv.test:5099;transport=tcp")) == [Hop("127.0.0.20", 5099, "tcp")]
    assert {t for t, _ in dns_server.queries()} == {"A", "AAAA"}


async def test_no_naptr_no_srv_falls_back_to_addresses(dns_server: DnsServer) -> None:
    resolver = resolver_for(dns_server)
    assert await resolver.resolve(sip("sip:plain.test")) == [
        Hop("127.0.0.30", 5060, "udp"),
        Hop("::1", 5060, "udp"),
    ]
    assert await resolver.resolve(sip("sips:plain.test")) == [
        Hop("127.0.0.30", 5061, "tls"),
        Hop("::1", 5061, "tls"),
    ]
    asked = set(dns_server.queries())
    assert {
        ("NAPTR", "plain.test"),
        ("SRV", "_sip._udp.plain.test"),
        ("SRV", "_sip._tcp.plain.test"),
        ("SRV", "_sips._tcp.plain.test"),
        ("A", "plain.test"),
        ("AAAA", "plain.test"),
    } == asked


async def test_nxdomain_gives_nothing_and_is_cached_briefly(dns_server: DnsServer) -> None:
    clock = FakeClock()
    resolver = resolver_for(dns_server, clock)
    assert await resolver.resolve(sip("sip:missing.test")) == []
    assert await resolver.resolve(sip("sip:missing.test:5060")) == []
    asked = len(dns_server.queries())
    assert asked == 6  # NAPTR, 3 SRV, A, AAAA; the second call came from the negative cache
    clock.now += 31  # past the negative TTL
    assert await resolver.resolve(sip("sip:missing.test:5060")) == []
    assert len(dns_server.queries()) == asked + 2


async def test_answers_are_cached_by_ttl(dns_server: DnsServer) -> None:
    clock = FakeClock()
    resolver = resolver_for(dns_server, clock, timeout=1.0)
    chain = await resolver.resolve(sip("sip:naptr.test"))
    assert len(chain) == 4
    # short.test's A record lives 5 s, its (missing) AAAA is a negative answer cached 30 s.
    assert await resolver.resolve(sip("sip:short.test:5060")) == [Hop("127.0.0.40", 5060, "udp")]
    asked = len(dns_server.queries())
    clock.now += 6
    assert await resolver.resolve(sip("sip:short.test:5060")) == [Hop("127.0.0.40", 5060, "udp")]
    assert dns_server.queries()[asked:] == [("A", "short.test")]
    # With the server gone, what is still within its TTL (300 s here) resolves from the cache alone.
    dns_server.stop()
    assert await resolver.resolve(sip("sip:naptr.test")) == chain
    clock.now += 301
    assert await resolver.resolve(sip("sip:naptr.test")) == []


async def test_dead_nameserver_gives_nothing_within_the_timeout() -> None:
    # Nothing listens on the port: every query is refused (dnspython retries until out of time).
    resolver = Resolver([("127.0.0.1", free_port())], timeout=1.0)
    started = time.monotonic()
    assert await resolver.resolve(sip("sip:naptr.test")) == []
    assert time.monotonic() - started < 1.5


async def test_silent_nameserver_gives_nothing_within_the_timeout() -> None:
    # A socket that takes queries and never answers: the timeout bounds the whole resolve().
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver([silent.getsockname()], timeout=0.5)
        started = time.monotonic()
        assert await resolver.resolve(sip("sip:naptr.test")) == []
        assert await resolver.resolve(sip("sip:naptr.test;transport=udp")) == []
        assert time.monotonic() - started < 2.0


class Scripted(asyncio.DatagramProtocol):
    """A UDP 'nameserver' that answers every query with SERVFAIL, or with bytes that are no DNS."""

    def __init__(self, garbage: bool) -> None:
        self.garbage = garbage
        self.count = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.count += 1
        if self.garbage:
            self.transport.sendto(data[:2] + b"\x81\x80garbage", addr)  # right id, then nonsense
            return
        response = dns.message.make_response(dns.message.from_wire(data))
        response.set_rcode(dns.rcode.SERVFAIL)
        response.flags |= dns.flags.RA
        self.transport.sendto(response.to_wire(), addr)


@pytest.mark.parametrize("garbage", [False, True], ids=["servfail", "garbage"])
async def test_servfail_and_garbage_give_nothing_and_are_not_cached(garbage: bool) -> None:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: Scripted(garbage), local_addr=("127.0.0.1", 0)
    )
    try:
        resolver = Resolver([transport.get_extra_info("sockname")], timeout=1.0)
        started = time.monotonic()
        assert await resolver.resolve(sip("sip:plain.test:5060")) == []
        first = server.count
        assert first >= 2  # A and AAAA
        assert await resolver.resolve(sip("sip:plain.test:5060")) == []
        assert server.count > first  # a failure is asked again, not cached
        assert time.monotonic() - started < 3.0
    finally:
        transport.close()
