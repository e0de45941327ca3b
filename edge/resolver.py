"""Locating SIP servers (RFC 3263 section 4): from a SIP/SIPS URI to the ordered list of
(address, port, transport) hops to try, via NAPTR, SRV (RFC 2782) and A/AAAA records.

The rules, in the order `Resolver.resolve` applies them:

1. The host is an IP address: that address; port from the URI, else the transport's default.
2. The URI has a port: A/AAAA of the host on that port, no NAPTR or SRV (RFC 3263 4.2).
3. The URI has a `transport` parameter: SRV for that transport, else A/AAAA on the default port.
4. Neither: NAPTR (4.1), each usable record's replacement looked up as SRV; without usable NAPTR,
   SRV for udp, tcp and tls (in that order, whichever exist); without any SRV, A/AAAA on the
   default port. (NAPTR records whose SRV chains give nothing also lead on to the SRV step: more
   lenient than RFC 3263, so a carrier's broken NAPTR set does not hide working SRV/A records.)

The ordering rules (`routing.weighted_order`, `select_naptr`, `uri_transport`) are pure functions; `Resolver`
does the DNS queries, caches the answers by their TTL and never raises on DNS trouble: what did not
resolve is logged and left out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.NAPTR import NAPTR
from dns.rdtypes.IN.SRV import SRV

from trunkline.core.logs import event
from trunkline.edge.routing import weighted_order
from trunkline.sip.uri import SipUri

log = logging.getLogger("trunkline.edge.resolver")

TRANSPORTS = ("udp", "tcp", "tls")
# RFC 3263 4.1: the NAPTR services for the transports we support.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
# RFC 3263 4.2 (and RFC 3261 19.1.2): the SRV owner name prefix for each transport.
SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
# How long a "no such record" answer is cached when the zone's SOA does not say less (RFC 2308).
NEGATIVE_TTL = 30.0
# The cache is cleaned of expired entries past this size, and emptied if that is not enough: the
# hosts we resolve may come from peers' messages, so the cache must not grow without bound.
CACHE_LIMIT = 10_000


@dataclass(frozen=True)
class Hop:
    host: str  # an IP address (v4 or v6, no brackets)
    port: int
    transport: str  # "udp" | "tcp" | "tls"


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str  # "." means the service is decidedly not available here (RFC 2782)


@dataclass(frozen=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


def default_port(transport: str) -> int:
    """RFC 3261 19.1.2: 5060 for UDP and TCP, 5061 for TLS."""
    return 5061 if transport == "tls" else 5060


def ip_literal(host: str) -> str | None:
    """The address when `host` is an IPv4 address or a bracketed (or bare) IPv6 reference."""
    try:
        return str(ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host))
    except ValueError:
        return None


def uri_transport(uri: SipUri, default_transport: str = "udp") -> str | None:
    """The transport the URI asks for, or None when it names one we cannot use.

    RFC 3263 4.1: the `transport` parameter if there is one; else UDP for sip: (here: the caller's
    default) and TLS over TCP for sips:. A sips: URI with transport=tcp means TLS over TCP; sips: over
    UDP is not possible (RFC 3261 26.2.2)."""
    param = uri.params.get("transport")
    secure = uri.scheme == "sips"
    if not param:
        return "tls" if secure else default_transport
    transport = param.lower()
    if secure and transport == "tcp":
        transport = "tls"
    if transport not in TRANSPORTS or (secure and transport == "udp"):
        return None
    return transport


def select_naptr(records: Sequence[Naptr], secure: bool) -> list[tuple[Naptr, str]]:
    """The usable NAPTR records with their transport, in order then preference (RFC 3403).

    RFC 3263 4.1: keep only services we support (SIP+D2U, SIP+D2T, SIPS+D2T); a sips: URI only
    SIPS+D2T. The "S" flag says the replacement is an SRV name, the only kind RFC 3263 uses; a
    replacement of "." leads nowhere."""
    usable = []
    for record in records:
        transport = NAPTR_SERVICES.get(record.service.upper())
        if transport is None or (secure and transport != "tls"):
            continue
        if record.flags.lower() != "s" or record.replacement in ("", "."):
            continue
        usable.append((record, transport))
    return sorted(usable, key=lambda item: (item[0].order, item[0].preference))


def srv_name(domain: str, transport: str) -> str:
    return f"{SRV_PREFIX[transport]}.{domain}"


def _unique(hops: Sequence[Hop]) -> list[Hop]:
    return list(dict.fromkeys(hops))


class Resolver:
    """RFC 3263 resolution with a TTL cache. `timeout` bounds a whole `resolve` call: each DNS query
    gets at most the time left of it, so a dead or silent nameserver cannot hold a call up longer."""

    def __init__(
        self,
        nameservers: list[tuple[str, int]] | None = None,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._clock = clock
        self._rng = random.Random()
        # (name, type) -> (expires at, records); a negative answer is an empty list.
        self._cache: dict[tuple[str, dns.rdatatype.RdataType], tuple[float, list[dns.rdata.Rdata]]] = {}
        if nameservers is None:
            try:
                self._dns = dns.asyncresolver.Resolver()  # /etc/resolv.conf, its search list included
            except dns.exception.DNSException as exc:
                event(log, logging.WARNING, "no usable resolv.conf: nothing will resolve", why=str(exc))
                self._dns = dns.asyncresolver.Resolver(configure=False)
                self._dns.nameservers = []
        else:
            self._dns = dns.asyncresolver.Resolver(configure=False)
            self._dns.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in nameservers]
            # Names are taken as they are: no search list, no domain guessed from the hostname.
            self._dns.domain = dns.name.root
            self._dns.search = []
        self._dns.timeout = timeout
        self._dns.lifetime = timeout

    async def resolve(self, uri: SipUri, default_transport: str = "udp") -> list[Hop]:
        """The hops to try for `uri`, in failover order; [] when nothing resolves."""
        if default_transport not in TRANSPORTS:
            raise ValueError(f"unsupported default transport {default_transport!r}")
        transport = uri_transport(uri, default_transport)
        if transport is None:
            event(log, logging.WARNING, "unsupported transport", uri=str(uri))
            return []
        address = ip_literal(uri.host)
        # Rule 1: an IP address needs no DNS.
        if address is not None:
            return [Hop(address, default_port(transport) if uri.port is None else uri.port, transport)]
        deadline = asyncio.get_running_loop().time() + self._timeout
        name = uri.host
        if uri.port is not None:
            # Rule 2 (RFC 3263 4.2): an explicit port means A/AAAA only.
            hops = await self._addresses(name, uri.port, transport, deadline)
        elif uri.params.get("transport"):
            # Rule 3 (4.2): the transport is known, so SRV for it; no SRV records, A/AAAA.
            srv = await self._srv(srv_name(name, transport), transport, deadline)
            hops = srv if srv is not None else await self._addresses(name, None, transport, deadline)
        else:
            hops = await self._naptr_srv_or_addresses(uri, name, transport, deadline)
        if not hops:
            event(log, logging.WARNING, "nothing resolves", uri=str(uri))
        return _unique(hops)

    async def _naptr_srv_or_addresses(
        self, uri: SipUri, name: str, transport: str, deadline: float
    ) -> list[Hop]:
        """Rule 4 (RFC 3263 4.1, 4.2)."""
        secure = uri.scheme == "sips"
        naptrs = select_naptr([_naptr(r) for r in await self._query(name, "NAPTR", deadline)], secure)
        if naptrs:
            # Each NAPTR's replacement is an SRV name; the results in NAPTR order are the failover list.
            chains = await asyncio.gather(*(self._srv(r.replacement, t, deadline) for r, t in naptrs))
            hops = [hop for chain in chains for hop in chain or []]
            if hops:
                return hops
            # RFC 3263 stops here; we go on to the SRV and A steps so a broken NAPTR set does not
            # leave a domain with working SRV or A records unreachable.
            event(log, logging.WARNING, "NAPTR records lead nowhere, trying SRV", domain=name)
        # No usable NAPTR: SRV for every transport we support, in our order of preference.
        transports = ("tls",) if secure else TRANSPORTS
        found = await asyncio.gather(*(self._srv(srv_name(name, t), t, deadline) for t in transports))
        if any(srv is not None for srv in found):
            return [hop for srv in found for hop in srv or []]
        # No SRV either: the host itself, on the transport's default port.
        return await self._addresses(name, None, transport, deadline)

    async def _srv(self, name: str, transport: str, deadline: float) -> list[Hop] | None:
        """The hops an SRV name leads to, in RFC 2782 order; None when there are no SRV records (the
        caller may then fall back), [] when there are but none is usable (target "." means the
        service is not offered, RFC 2782)."""
        records = [_srv(r) for r in await self._query(name, "SRV", deadline)]
        if not records:
            return None
        targets = [r for r in weighted_order(records, self._rng) if r.target not in ("", ".")]
        expanded = await asyncio.gather(
            *(self._addresses(r.target, r.port, transport, deadline) for r in targets)
        )
        return [hop for hops in expanded for hop in hops]

    async def _addresses(self, name: str, port: int | None, transport: str, deadline: float) -> list[Hop]:
        """The host's A then AAAA addresses, on `port` or the transport's default."""
        v4, v6 = await asyncio.gather(self._query(name, "A", deadline), self._query(name, "AAAA", deadline))
        port = port or default_port(transport)
        return [Hop(r.to_text(), port, transport) for r in [*v4, *v6]]

    async def _query(self, name: str, rdtype_text: str, deadline: float) -> list[dns.rdata.Rdata]:
        """The records of one type for a name, cached by TTL; [] on any trouble (logged)."""
        rdtype = dns.rdatatype.from_text(rdtype_text)
        key = (name.lower(), rdtype)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            event(log, logging.DEBUG, "DNS lookup skipped: out of time", name=name, type=rdtype_text)
            return []
        try:
            answer = await self._dns.resolve(
                name, rdtype, raise_on_no_answer=False, lifetime=left, search=True
            )
        except dns.resolver.NXDOMAIN as exc:
            # No such name: cache briefly, no longer than the zone's SOA allows (RFC 2308 section 5).
            event(log, logging.DEBUG, "DNS: no such name", name=name, type=rdtype_text)
            responses = exc.responses()  # type: ignore[no-untyped-call]  # dnspython leaves it unannotated
            self._store(key, now, _negative_ttl(responses.values()), [])
            return []
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            # Timeouts, SERVFAIL/REFUSED from every server, malformed replies or names. Not cached:
            # the next call asks again.
            event(log, logging.WARNING, "DNS lookup failed", name=name, type=rdtype_text, why=str(exc))
            return []
        if answer.rrset is None:  # the name exists but has no such records (NODATA)
            self._store(key, now, _negative_ttl([answer.response]), [])
            return []
        records = list(answer.rrset)
        # The smallest TTL along any CNAME chain, as the answer holds for no longer than that.
        self._store(key, now, answer.chaining_result.minimum_ttl, records)
        return records

    def _store(
        self, key: tuple[str, dns.rdatatype.RdataType], now: float, ttl: float, records: list[dns.rdata.Rdata]
    ) -> None:
        if ttl <= 0:
            return
        if len(self._cache) >= CACHE_LIMIT:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
        self._cache[key] = (now + ttl, records)


def _negative_ttl(responses: Iterable[dns.message.Message]) -> float:
    """NEGATIVE_TTL, or less when a response's SOA says so: min(SOA TTL, SOA minimum) (RFC 2308 5)."""
    ttl = NEGATIVE_TTL
    for response in responses:
        for rrset in response.authority:
            for rdata in rrset:
                if isinstance(rdata, SOA):
                    ttl = min(ttl, rrset.ttl, rdata.minimum)
    return ttl


def _srv(rdata: dns.rdata.Rdata) -> Srv:
    assert isinstance(rdata, SRV)
    return Srv(rdata.priority, rdata.weight, rdata.port, rdata.target.to_text())


def _naptr(rdata: dns.rdata.Rdata) -> Naptr:
    assert isinstance(rdata, NAPTR)
    return Naptr(
        rdata.order,
        rdata.preference,
        rdata.flags.decode("ascii", "replace"),
        rdata.service.decode("ascii", "replace"),
        rdata.replacement.to_text(),
    )
