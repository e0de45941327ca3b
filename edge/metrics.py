"""The edge's Prometheus metrics: calls, SIP traffic, rejections, post-dial delay, durations, carrier
attempts, store latency. The rooms call these methods; /metrics serves the registry.

Bounded cardinality: labels only take values from configuration (trunk, carrier, gateway: the caller
passes configured names, never a number or an address) or from closed sets here (method, status
class, direction, outcome, rule, store operation); anything else becomes `other`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "UPDATE", "INFO", "PRACK", "REFER",
     "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH"}
)  # fmt: skip
DIRECTIONS = frozenset({"inbound", "outbound"})
SIP_DIRECTIONS = frozenset({"received", "sent"})
OUTCOMES = frozenset({"answered", "busy", "no_answer", "cancelled", "rejected", "failed"})
RULES = frozenset(
    {"acl", "digest", "lockout", "channels", "cps", "prefix", "caller-id", "store", "flood"}
)  # fmt: skip
ATTEMPT_OUTCOMES = frozenset({"answered", "rejected", "timeout", "unreachable", "cancelled"})
STORE_OPERATIONS = frozenset({"admit", "release", "dialog", "register", "nonce", "lockout", "other"})
PDD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _one_of(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 700 else "other"


def outcome_of(status: int) -> str:
    """A call's outcome from its final status toward the caller."""
    if 200 <= status < 300:
        return "answered"
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    if status == 487:
        return "cancelled"
    if status in (401, 403, 404, 407, 484, 488, 603):
        return "rejected"
    return "failed"


class Rejections(Collector):
    """`trunkline_rejections_total{rule}`: requests refused, by rule. Every rule of the closed set is
    served (0 until it moves), so a rate over any of them exists from the first scrape. `flood` is
    read from the flood guard's own counters at scrape time: the guard drops messages before parsing,
    and counting there costs nothing per packet."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(sorted(RULES | {"other"}), 0)
        self.flood: Callable[[], int] = lambda: 0  # messages the flood guard dropped (set by the edge)

    def add(self, rule: str) -> None:
        self.counts[_one_of(rule, RULES)] += 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("trunkline_rejections", "Requests refused, by rule", labels=["rule"])
        for rule, count in self.counts.items():
            family.add_metric([rule], count + (self.flood() if rule == "flood" else 0))
        yield family


class SipTraffic(Collector):
    """`trunkline_sip_requests_total{method,direction}` and `trunkline_sip_responses_total{method,
    status_class,direction}`: every message counts once, some fifteen times per call, so as plain
    integers read at scrape time, not Counter series (a lock and a value object per increment). Label
    values come from closed sets (`EdgeMetrics.request`, `.response`)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.responses: dict[tuple[str, str, str], int] = {}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "trunkline_sip_requests", "SIP requests, by method and direction (received, sent)",
            labels=["method", "direction"],
        )  # fmt: skip
        for labels, count in list(self.requests.items()):
            requests.add_metric(labels, count)
        yield requests
        responses = CounterMetricFamily(
            "trunkline_sip_responses", "SIP responses, by request method, status class and direction",
            labels=["method", "status_class", "direction"],
        )  # fmt: skip
        for key, count in list(self.responses.items()):
            responses.add_metric(key, count)
        yield responses


class SpoolFigures(Collector):
    """The CDR spool (edge/spool.py), read at scrape time: ends waiting on disk for the store, and
    ends dropped to keep the file under its cap (each one a CDR lost)."""

    def __init__(self, pending: Callable[[], int], dropped: Callable[[], int]) -> None:
        self.pending, self.dropped = pending, dropped

    def collect(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily("trunkline_cdr_spool_pending", "Call ends spooled, not yet in the store")
        waiting.add_metric([], self.pending())
        yield waiting
        lost = CounterMetricFamily("trunkline_cdr_spool_dropped", "Spooled call ends dropped (spool full)")
        lost.add_metric([], self.dropped())
        yield lost


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calls = Counter(
            "trunkline_calls", "Calls ended, by trunk, direction and outcome",
            ["trunk", "direction", "outcome"], registry=registry,
        )  # fmt: skip
        self.active = Gauge(
            "trunkline_active_calls", "Calls in progress, by trunk", ["trunk"], registry=registry
        )
        self.registrations = Gauge(
            "trunkline_registrations", "Registered contacts, by trunk", ["trunk"], registry=registry
        )
        self._registered: set[str] = set()  # trunks with a registrations series
        self.traffic = SipTraffic()
        registry.register(self.traffic)
        self.emergency = Counter(
            "trunkline_emergency_calls", "Emergency calls ended, by trunk and outcome",
            ["trunk", "outcome"], registry=registry,
        )  # fmt: skip
        self.rejections = Rejections()
        registry.register(self.rejections)
        self.pdd = Histogram(
            "trunkline_post_dial_delay_seconds", "INVITE sent to the first ringing or final response",
            ["trunk"], buckets=PDD_BUCKETS, registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "trunkline_call_duration_seconds", "Answered calls, answer to hang-up",
            ["trunk", "direction"], buckets=DURATION_BUCKETS, registry=registry,
        )  # fmt: skip
        self.attempts = Counter(
            "trunkline_carrier_attempts", "INVITEs sent to a carrier gateway, by outcome",
            ["carrier", "gateway", "outcome"], registry=registry,
        )  # fmt: skip
        self.store_latency = Histogram(
            "trunkline_store_operation_seconds", "Shared store round trips, by operation",
            ["operation"], buckets=STORE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.store_errors = Counter(
            "trunkline_store_errors", "Shared store operations that failed", ["operation"], registry=registry
        )
        self.figures_dropped = Counter(
            "trunkline_gateway_figures_dropped", "Attempts left out of the store's gateway figures "
            "(store failing or too slow)", registry=registry,
        )  # fmt: skip
        self.spool_write = Histogram(
            "trunkline_cdr_spool_write_seconds", "A call end appended to the CDR spool and fsynced",
            buckets=STORE_BUCKETS, registry=registry,
        )  # fmt: skip
        # Carrier upkeep (edge/upkeep.py), as the shared store says: the same on every edge.
        self.carrier_registered = Gauge(
            "trunkline_carrier_registered", "1 while the carrier holds our registration", ["carrier"],
            registry=registry,
        )  # fmt: skip
        self.gateway_up = Gauge(
            "trunkline_gateway_up", "1 while the gateway answers its health probes", ["carrier", "gateway"],
            registry=registry,
        )  # fmt: skip
        self.gateway_probe = Gauge(
            "trunkline_gateway_probe_seconds", "Round trip of the gateway's last answered OPTIONS probe",
            ["carrier", "gateway"], registry=registry,
        )  # fmt: skip

    def call_started(self, trunk: str) -> None:
        self.active.labels(trunk).inc()

    def call_ended(self, trunk: str, direction: str, status: int, answered_for: float | None = None) -> None:
        """A call is over: `status` is its final status toward the caller; `answered_for` the seconds
        from answer to hang-up (None: never answered)."""
        self.active.labels(trunk).dec()
        direction = _one_of(direction, DIRECTIONS)
        self.calls.labels(trunk, direction, outcome_of(status)).inc()
        if answered_for is not None:
            self.duration.labels(trunk, direction).observe(max(0.0, answered_for))

    def emergency_ended(self, trunk: str, status: int) -> None:
        self.emergency.labels(trunk, outcome_of(status)).inc()

    def request(self, method: str, direction: str) -> None:
        key = (_one_of(method, METHODS), _one_of(direction, SIP_DIRECTIONS))
        counts = self.traffic.requests
        counts[key] = counts.get(key, 0) + 1

    def response(self, method: str, status: int, direction: str) -> None:
        key = (_one_of(method, METHODS), status_class(status), _one_of(direction, SIP_DIRECTIONS))
        counts = self.traffic.responses
        counts[key] = counts.get(key, 0) + 1

    def rejected(self, rule: str) -> None:
        self.rejections.add(rule)

    def post_dial_delay(self, trunk: str, seconds: float) -> None:
        self.pdd.labels(trunk).observe(max(0.0, seconds))

    def attempt(self, carrier: str, gateway: str, outcome: str) -> None:
        self.attempts.labels(carrier, gateway, _one_of(outcome, ATTEMPT_OUTCOMES)).inc()

    def figure_dropped(self) -> None:
        self.figures_dropped.inc()

    def store(self, operation: str, seconds: float, ok: bool = True) -> None:
        operation = _one_of(operation, STORE_OPERATIONS)
        self.store_latency.labels(operation).observe(max(0.0, seconds))
        if not ok:
            self.store_errors.labels(operation).inc()

    def upkeep_seen(
        self, carrier: str, registered: bool | None, gateways: dict[str, tuple[bool, float]] | None
    ) -> None:
        """A carrier's registration (None: not registering) and gateways' (up, probe seconds)."""
        if registered is not None:
            self.carrier_registered.labels(carrier).set(1.0 if registered else 0.0)
        else:  # not registering (any more)
            try:
                self.carrier_registered.remove(carrier)
            except KeyError:
                pass
        for gateway, (up, seconds) in (gateways or {}).items():
            self.gateway_up.labels(carrier, gateway).set(1.0 if up else 0.0)
            self.gateway_probe.labels(carrier, gateway).set(max(0.0, seconds))

    def forget_carrier(self, carrier: str, gateways: list[str]) -> None:
        """A carrier (or its registration or probes) left the configuration: drop its series."""
        series: list[tuple[Gauge, tuple[str, ...]]] = [(self.carrier_registered, (carrier,))]
        series += [(m, (carrier, g)) for g in gateways for m in (self.gateway_up, self.gateway_probe)]
        for gauge, labels in series:
            try:
                gauge.remove(*labels)
            except KeyError:
                pass

    def count_spool(self, pending: Callable[[], int], dropped: Callable[[], int]) -> None:
        self.registry.register(SpoolFigures(pending, dropped))

    def count_flood_drops(self, read: Callable[[], int]) -> None:
        """`rule="flood"` reads the flood guard's dropped messages from `read` at each scrape."""
        self.rejections.flood = read

    def set_registrations(self, counts: dict[str, int]) -> None:
        """Registered contacts of each trunk with registration on (edge/registrations.py counts them);
        a trunk no longer among them loses its series, so the label set follows the configuration."""
        for trunk in self._registered - counts.keys():
            self.registrations.remove(trunk)
        for trunk, count in counts.items():
            self.registrations.labels(trunk).set(count)
        self._registered = set(counts)

    def set_registered(self, trunk: str, count: int) -> None:
        """One trunk's registered contacts (just after a REGISTER changed them)."""
        self._registered.add(trunk)
        self.registrations.labels(trunk).set(count)

    def forget_trunk(self, trunk: str) -> None:
        """A trunk left the configuration: drop its gauge series (counters stay until restart)."""
        self._registered.discard(trunk)
        for gauge in (self.active, self.registrations):
            try:
                gauge.remove(trunk)
            except KeyError:
                pass
