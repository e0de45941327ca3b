"""Gateway health (Carrier `spec.health`): the up/down hysteresis of each gateway, pure.

A gateway starts up; `failuresToDown` failed probes in a row take it down (so do that many calls in
a row that it failed with 408 or 5xx or left unanswered), `successesToUp` answered probes in a row
bring it back. Any final response to OPTIONS is an answer (the gateway is there, even a
405 or 404 says so) except 408 and 5xx; no answer within `timeout` is a failure. The state is plain
data for the shared store (`to_state` / `from_state`), so every edge routes on the prober's view.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from trunkline.core.models import CarrierHealth
from trunkline.sip.headers import NameAddr
from trunkline.sip.ids import new_call_id, new_tag
from trunkline.sip.message import Request
from trunkline.sip.uri import SipUri

NO_ANSWER = 408  # the status a probe without an answer counts as


@dataclass
class GatewayHealth:
    up: bool = True
    failures: int = 0  # in a row
    successes: int = 0  # in a row
    changed_at: float = 0.0  # store clock seconds of the last up/down change (0: never)
    status: int = 0  # the last probe's final status (408: no answer)
    latency: float = 0.0  # the last answered probe's round trip, seconds

    def observe(self, status: int, latency: float, now: float, spec: CarrierHealth) -> bool:
        """Count one probe's outcome; True when the gateway went up or down because of it."""
        self.status = status
        if answered(status):
            self.latency = latency
            self.successes, self.failures = self.successes + 1, 0
            if not self.up and self.successes >= spec.successesToUp:
                self.up, self.changed_at = True, now
                return True
            return False
        self.failures, self.successes = self.failures + 1, 0
        if self.up and self.failures >= spec.failuresToDown:
            self.up, self.changed_at = False, now
            return True
        return False

    def take_down(self, now: float) -> bool:
        """Calls failed `failuresToDown` times in a row: down as if its probes had failed; probes
        bring it back. True when it was up."""
        if not self.up:
            return False
        self.up, self.changed_at, self.successes = False, now, 0
        return True

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: object) -> GatewayHealth:
        if not isinstance(state, Mapping):
            return cls()
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in state.items() if k in names})
        except TypeError:
            return cls()


def answered(status: int) -> bool:
    return 100 <= status < 700 and status != NO_ANSWER and not 500 <= status < 600


def down_gateways(state: Mapping[str, Any] | None) -> frozenset[str]:
    """The gateway URIs a carrier's stored health state says are down."""
    gateways = state.get("gateways") if state else None
    if not isinstance(gateways, Mapping):
        return frozenset()
    return frozenset(uri for uri, g in gateways.items() if not GatewayHealth.from_state(g).up)


def usable(uris: Collection[str], down: Collection[str]) -> list[str]:
    """The URIs routing tries: the ones not down, or all of them when every one is down (better to
    try a gateway the probes doubt than to fail the call at once)."""
    alive = [u for u in uris if u not in down]
    return alive or list(uris)


def options_request(target: SipUri, contact_host: str, contact_port: int) -> Request:
    """A probe of `target` (the driver adds Via), from the edges' Contact address."""
    request = Request("OPTIONS", target)
    request.add("Max-Forwards", "70")
    me = SipUri("sip", "", "trunkline", None, contact_host, contact_port, {})
    request.add("From", str(NameAddr(me, None, {"tag": new_tag()})))
    request.add("To", str(NameAddr(target)))
    request.add("Call-ID", new_call_id())
    request.add("CSeq", "1 OPTIONS")
    return request
