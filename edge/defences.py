"""Settings of the signalling defences (docs/security.md), from the edge's flags and the configuration.

`SignallingLimits` gathers what the flags set; `flood_rules` turns trunks' ipAcl and carriers'
inboundCidrs into per-network flood budgets (exempt by default: known peers).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trunkline.core.models import Carrier, FloodLimits, Trunk
from trunkline.sip.flood import Budget, FloodCounters, FloodGuard, FloodRule
from trunkline.sip.transport import SipTransport, StreamLimits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SignallingLimits:
    flood: Budget = field(default_factory=Budget)
    stream: StreamLimits = field(default_factory=StreamLimits)
    contact_deny: tuple[Network, ...] = ()  # REGISTER Contacts inside these are refused

    @classmethod
    def build(
        cls,
        *,
        flood: Budget,
        max_connections_per_source: int,
        header_deadline: float,
        idle_timeout: float,
        contact_deny: Iterable[str],
    ) -> SignallingLimits:
        """Raises ValueError naming the bad value."""
        nets: list[Network] = []
        for text in contact_deny:
            try:
                nets.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ValueError(f"--contact-deny: {text!r} is not a CIDR") from None
        stream = StreamLimits(max_connections_per_source, header_deadline, idle_timeout)
        return cls(flood, stream, tuple(nets))

    def guard(self, trunks: Iterable[Trunk] = (), carriers: Iterable[Carrier] = ()) -> FloodGuard:
        return FloodGuard(self.flood, flood_rules(trunks, carriers, self.flood.cooldown))


def budget_of(limits: FloodLimits, cooldown: float) -> Budget:
    if limits.exempt:
        return Budget(exempt=True)
    return Budget(limits.messagesPerSecond, float(limits.bytesPerSecond), cooldown)


def flood_rules(
    trunks: Iterable[Trunk], carriers: Iterable[Carrier], cooldown: float
) -> tuple[FloodRule, ...]:
    """One rule per trunk/carrier with networks. Where networks overlap the most specific wins
    (FloodGuard); for the same network, an exempt rule is listed first and so wins."""
    rules = [
        FloodRule(tuple(t.spec.auth.ipAcl), budget_of(t.spec.flood, cooldown))
        for t in trunks
        if t.spec.auth.ipAcl
    ]
    rules += [
        FloodRule(tuple(c.spec.inboundCidrs), budget_of(c.spec.flood, cooldown))
        for c in carriers
        if c.spec.inboundCidrs
    ]
    return tuple(sorted(rules, key=lambda r: not r.budget.exempt))


class DefenceCollector(Collector):
    """The defences' counters for /metrics, read from the transport when scraped:
    `registry.register(DefenceCollector(lambda: stack.transport, lambda: stack.core_failures))`.
    `message_failures`: messages the stack dropped because the SIP core failed on them (our bug, not
    the peer's error: each is logged only at the 1st, 2nd, 4th... so the count is here)."""

    def __init__(
        self, transport_of: Callable[[], SipTransport | None], message_failures: Callable[[], int]
    ) -> None:
        self.transport_of, self.message_failures = transport_of, message_failures

    def collect(self) -> Iterator[Metric]:
        transport = self.transport_of()
        if transport is None:
            return
        flood = CounterMetricFamily(
            "trunkline_sip_flood_messages", "Messages the flood guard saw, by verdict", labels=["verdict"]
        )
        counters = transport.flood.counters if transport.flood is not None else FloodCounters()
        flood.add_metric(["admitted"], counters.admitted)
        flood.add_metric(["dropped_rate"], counters.dropped_rate)
        flood.add_metric(["dropped_cooldown"], counters.dropped_cooldown)
        yield flood
        yield CounterMetricFamily(
            "trunkline_sip_flood_cooldowns", "Sources put in a flood cool-down", value=counters.cooldowns
        )
        yield GaugeMetricFamily(
            "trunkline_sip_flood_tracked_sources",
            "Sources the flood guard tracks",
            value=transport.flood.tracked if transport.flood is not None else 0,
        )
        closed = CounterMetricFamily(
            "trunkline_sip_connections_refused", "TCP/TLS connections closed by a limit", labels=["limit"]
        )
        closed.add_metric(["per_source"], transport.refused_connections)
        closed.add_metric(["header_deadline"], transport.deadline_closes)
        yield closed
        failed = CounterMetricFamily(
            "trunkline_sip_core_failures", "Messages dropped and connections closed because the SIP core "
            "failed on them (a bug to report, not a peer's error)", labels=["where"],
        )  # fmt: skip
        failed.add_metric(["message"], self.message_failures())
        failed.add_metric(["stream"], transport.core_failures)
        yield failed
