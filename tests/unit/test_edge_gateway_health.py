"""Gateway health hysteresis and routing around down gateways (pure logic)."""

from __future__ import annotations

import random

from trunkline.core.models import Carrier, CarrierHealth
from trunkline.edge.gateway_health import GatewayHealth, answered, down_gateways
from trunkline.edge.routing import outbound_targets

SPEC = CarrierHealth(interval=1, timeout=1, failuresToDown=3, successesToUp=2)


def test_failures_in_a_row_take_a_gateway_down_and_successes_bring_it_back() -> None:
    g = GatewayHealth()
    assert not g.observe(408, 0, 1.0, SPEC) and not g.observe(503, 0, 2.0, SPEC)
    assert not g.observe(200, 0.01, 3.0, SPEC)  # an answer in between starts the count again
    assert [g.observe(408, 0, t, SPEC) for t in (4.0, 5.0, 6.0)] == [False, False, True]
    assert not g.up and g.changed_at == 6.0 and g.status == 408
    assert not g.observe(200, 0.02, 7.0, SPEC) and not g.up
    assert g.observe(404, 0.03, 8.0, SPEC) and g.up  # any answer says it is there
    assert g.latency == 0.03 and g.changed_at == 8.0


def test_which_statuses_count_as_answers() -> None:
    assert answered(200) and answered(405) and answered(404) and answered(483)
    assert not answered(408) and not answered(500) and not answered(503) and not answered(0)


def test_stored_state_round_trips_and_bad_state_reads_as_up() -> None:
    g = GatewayHealth(up=False, failures=3, changed_at=5.0, status=408)
    assert GatewayHealth.from_state(g.to_state()) == g
    assert GatewayHealth.from_state("junk") == GatewayHealth()
    assert GatewayHealth.from_state({"up": False, "unknown": 1}).up is False
    state = {"gateways": {"sip:a": g.to_state(), "sip:b": GatewayHealth().to_state(), "sip:c": 7}}
    assert down_gateways(state) == {"sip:a"}
    assert down_gateways(None) == frozenset() and down_gateways({"gateways": []}) == frozenset()


def carrier(name: str, *uris: str, prefixes: list[str] | None = None) -> Carrier:
    gateways = [{"uri": u, "priority": 10 * (i + 1)} for i, u in enumerate(uris)]
    return Carrier.model_validate(
        {"metadata": {"name": name}, "spec": {"gateways": gateways, "prefixes": prefixes or []}}
    )


def test_routing_skips_down_gateways_and_tries_all_when_all_are_down() -> None:
    pstn = carrier("pstn", "sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3")
    rng = random.Random(1)
    uris = [t.uri for t in outbound_targets("+14155550100", [pstn], rng, {pstn.key: {"sip:10.0.0.1"}})]
    assert uris == ["sip:10.0.0.2", "sip:10.0.0.3"]
    every = {pstn.key: {"sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"}}
    assert [t.uri for t in outbound_targets("+14155550100", [pstn], rng, every)] == [
        "sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3"
    ]  # fmt: skip
    other = carrier("other", "sip:10.0.0.1")  # the same address under another carrier is not down
    assert [t.uri for t in outbound_targets("+1", [other], rng, {pstn.key: {"sip:10.0.0.1"}})] == [
        "sip:10.0.0.1"
    ]
