"""Per-source flood guard in front of parsing (the role of Kamailio's `pike`, OpenSIPS' `ratelimit`).

Sans-I/O: the transport calls `admit(source_ip, size, now)` for every datagram or stream chunk before
parsing it, and drops it unanswered when the answer is False. Each source (an IPv4 address, or an
IPv6 /64: one customer usually owns a whole /64) has two token buckets, messages/s and bytes/s. A
source that empties either is ignored for a cool-down, so a flood costs one dict lookup per packet.

Networks we trust (trunk ACLs, carrier CIDRs) are either exempt or get their own, larger budget
(`FloodRule`); everyone else gets the default budget. At most `max_sources` sources are tracked
(least recently seen forgotten first), so a spoofed-source flood cannot grow memory.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

DEFAULT_RATE: Final = 50.0  # messages/s per source: a busy PBX sends well under 20
DEFAULT_BYTES: Final = 200_000.0  # bytes/s per source
DEFAULT_COOLDOWN: Final = 30.0  # seconds a source over budget is ignored
DEFAULT_MAX_SOURCES: Final = 100_000
BURST_SECONDS: Final = 2.0  # a bucket holds this many seconds of its rate


def source_group(source_ip: str) -> str:
    """The key a source is counted under: the IPv4 address, or the IPv6 /64 ("2001:db8:1:2::/64").

    An IPv4-mapped IPv6 address counts as its IPv4 address. Unparseable text is its own group.
    """
    if ":" not in source_ip:
        return source_ip
    try:
        addr = ipaddress.IPv6Address(source_ip.split("%", 1)[0].strip("[]"))
    except ValueError:
        return source_ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return f"{ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)).network_address}/64"


@dataclass(frozen=True)
class Budget:
    """Sustained rates; a bucket holds BURST_SECONDS of them. `exempt`: never limited."""

    rate: float = DEFAULT_RATE
    bytes_per_second: float = DEFAULT_BYTES
    cooldown: float = DEFAULT_COOLDOWN
    exempt: bool = False

    def __post_init__(self) -> None:
        if not self.exempt and (self.rate <= 0 or self.bytes_per_second <= 0 or self.cooldown < 0):
            raise ValueError("flood budget: rate and bytes must be > 0, cooldown >= 0")


@dataclass(frozen=True)
class FloodRule:
    """A budget for the sources inside some networks (most specific network wins)."""

    cidrs: tuple[str, ...]
    budget: Budget


@dataclass
class FloodCounters:
    """Totals for /metrics."""

    admitted: int = 0
    dropped_rate: int = 0  # dropped because a bucket ran out (the source then starts a cool-down)
    dropped_cooldown: int = 0  # dropped because the source is cooling down
    cooldowns: int = 0  # cool-downs started
    evicted: int = 0  # sources forgotten to stay under max_sources


@dataclass
class _Source:
    budget: Budget
    messages: float
    octets: float
    seen: float
    blocked_until: float = 0.0


@dataclass
class FloodGuard:
    default: Budget = field(default_factory=Budget)
    rules: tuple[FloodRule, ...] = ()
    max_sources: int = DEFAULT_MAX_SOURCES
    counters: FloodCounters = field(default_factory=FloodCounters)

    def __post_init__(self) -> None:
        if self.max_sources < 1:
            raise ValueError("max_sources must be >= 1")
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        # Budget per source address, so exempt peers (carriers: most of the traffic) cost one lookup.
        self._budgets: dict[str, Budget] = {}
        # (network, budget), longest prefix first, so the first match is the most specific.
        nets = [(ipaddress.ip_network(c, strict=False), r.budget) for r in self.rules for c in r.cidrs]
        self._nets = sorted(nets, key=lambda nb: -nb[0].prefixlen)

    def with_rules(self, rules: Iterable[FloodRule]) -> FloodGuard:
        """A guard with new rules (trunks/carriers changed), same default, counters kept."""
        return FloodGuard(self.default, tuple(rules), self.max_sources, self.counters)

    @property
    def tracked(self) -> int:
        return len(self._sources)

    def budget_of(self, source_ip: str) -> Budget:
        if self._nets:
            try:
                addr = ipaddress.ip_address(source_ip.split("%", 1)[0].strip("[]"))
            except ValueError:
                return self.default
            for net, budget in self._nets:
                if addr.version == net.version and addr in net:
                    return budget
        return self.default

    def admit(self, source_ip: str, size: int, now: float) -> bool:
        """Should this message (of `size` bytes from `source_ip`, at monotonic time `now`) be parsed?"""
        key = source_group(source_ip)
        sources = self._sources
        src = sources.get(key)
        counters = self.counters
        if src is None:
            budget = self._budgets.get(source_ip)
            if budget is None:
                budget = self.budget_of(source_ip)
                if len(self._budgets) >= self.max_sources:
                    self._budgets.clear()  # rare: a spoofed-source flood; rebuilt on demand
                self._budgets[source_ip] = budget
            if budget.exempt:
                counters.admitted += 1
                return True
            src = _Source(budget, budget.rate * BURST_SECONDS, budget.bytes_per_second * BURST_SECONDS, now)
            sources[key] = src
            if len(sources) > self.max_sources:
                sources.popitem(last=False)
                counters.evicted += 1
        else:
            sources.move_to_end(key)
        budget = src.budget
        if now < src.blocked_until:
            counters.dropped_cooldown += 1
            return False
        elapsed = max(0.0, now - src.seen)
        src.seen = now
        src.messages = min(budget.rate * BURST_SECONDS, src.messages + elapsed * budget.rate)
        src.octets = min(
            budget.bytes_per_second * BURST_SECONDS, src.octets + elapsed * budget.bytes_per_second
        )
        if src.messages < 1 or src.octets < size:
            src.blocked_until = now + budget.cooldown
            # A source comes back from its cool-down with full buckets.
            src.messages, src.octets = budget.rate * BURST_SECONDS, budget.bytes_per_second * BURST_SECONDS
            src.seen = src.blocked_until
            counters.dropped_rate += 1
            counters.cooldowns += 1
            return False
        src.messages -= 1
        src.octets -= size
        counters.admitted += 1
        return True
