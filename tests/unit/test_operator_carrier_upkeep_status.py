"""A Carrier's Registered and Degraded conditions from the upkeep state the edges keep in the store."""

from __future__ import annotations

from typing import Any

from tests.unit.test_operator_status import T0, T1, carrier_body, conditions, config
from trunkline.core.models import Carrier
from trunkline.operator.status import (
    CarrierUpkeep,
    GatewaySeen,
    build_carrier_status,
    carrier_upkeep,
    plan_statuses,
)

NOW = 1_800_000_000.0


def registering(**registration: Any) -> dict[str, Any]:
    body = carrier_body("pstn", [])
    body["spec"]["registration"] = {"enabled": True, **registration}
    return body


def test_the_stored_state_reads_defensively() -> None:
    registered = {"registered_until": NOW + 60, "status": 200, "registrar_uri": "sip:reg.example.net"}
    seen = carrier_upkeep(registered, None, NOW)
    assert seen.registered is True and "sip:reg.example.net until 2027-01-15T08:01:00Z" in seen.registration
    failing = {
        "registered_until": 0.0,
        "status": 403,
        "reason": "Forbidden",
        "failures": 3,
        "registrar_uri": "x",
    }
    seen = carrier_upkeep(failing, None, NOW)
    assert seen.registered is False and "403 Forbidden (3 failure(s) in a row" in seen.registration
    assert carrier_upkeep({"registered_until": "soon", "status": "?"}, None, NOW) == CarrierUpkeep()
    health = {"gateways": {"sip:b": {"up": False}, "sip:a": {"up": False}, "sip:c": {"up": True}, "sip:d": 1}}
    assert carrier_upkeep(None, health, NOW).down == ("sip:a", "sip:b")
    assert carrier_upkeep(None, {"gateways": ["junk"]}, NOW).down == ()


def test_registered_condition_follows_the_registration() -> None:
    carrier = Carrier.model_validate(registering())
    unknown = conditions(build_carrier_status(carrier, config(), now=T0))
    assert unknown["Registered"] == ("Unknown", "NotReported") and unknown["Degraded"][0] == "False"
    ok = CarrierUpkeep(True, "registered at sip:reg until later")
    status = build_carrier_status(carrier, config(), now=T0, upkeep=ok)
    assert conditions(status)["Registered"] == ("True", "Registered")
    failed = CarrierUpkeep(False, "last REGISTER to sip:reg: 403 Forbidden")
    later = Carrier.model_validate({**registering(), "status": status})
    status = build_carrier_status(later, config(), now=T1, upkeep=failed)
    found = conditions(status)
    assert found["Registered"] == ("False", "RegistrationFailed")
    assert found["Degraded"] == ("True", "RegistrationFailed") and found["Ready"] == ("True", "Reconciled")
    registered = next(c for c in status["conditions"] if c["type"] == "Registered")
    assert registered["lastTransitionTime"] == T1 and "403 Forbidden" in registered["message"]
    # A carrier that does not register has no such condition.
    assert "Registered" not in conditions(
        build_carrier_status(Carrier.model_validate(carrier_body("x", [])), config(), now=T0)
    )


def test_a_down_gateway_degrades_the_carrier_through_the_sweep() -> None:
    objects: dict[str, list[dict[str, Any]]] = {"Carrier": [carrier_body("pstn", [])]}
    down = {("ns", "pstn"): CarrierUpkeep(gateways=(GatewaySeen("sip:gw.example.net", False),))}
    (update,) = plan_statuses(objects, [], now=T0, upkeep=down)
    assert conditions(update.status)["Degraded"] == ("True", "GatewaysDown")
    assert conditions(update.status)["Ready"] == ("True", "Reconciled")
    assert "gateways down: sip:gw.example.net" in update.status["conditions"][1]["message"]
    objects["Carrier"][0]["status"] = update.status
    assert plan_statuses(objects, [], now=T1, upkeep=down) == []  # nothing new: nothing written
    (back,) = plan_statuses(objects, [], now=T1, upkeep={})
    assert conditions(back.status)["Degraded"] == ("False", "Reconciled")


def test_status_lists_each_probed_gateway() -> None:
    body = carrier_body("pstn", [])
    body["spec"]["gateways"] = [{"uri": "sip:gw1"}, {"uri": "sip:gw2"}, {"uri": "sip:gw3"}]
    body["spec"]["health"] = {"interval": 5}
    health = {"gateways": {
        "sip:gw2": {"up": True, "changed_at": 0.0, "status": 200, "latency": 0.0123},
        "sip:gw1": {"up": False, "changed_at": NOW, "status": 408, "latency": 0.02},
        "sip:gone": {"up": True},
    }}  # fmt: skip
    status = build_carrier_status(Carrier.model_validate(body), config(), now=T0,
                                  upkeep=carrier_upkeep(None, health, NOW))  # fmt: skip
    assert status["gateways"] == [
        {"uri": "sip:gw1", "state": "Down", "lastTransitionTime": "2027-01-15T08:00:00Z", "lastStatus": 408,
         "latencyMs": 20},
        {"uri": "sip:gw2", "state": "Up", "lastStatus": 200, "latencyMs": 12},
    ]  # fmt: skip
    Carrier.model_validate({**body, "status": status})  # the model (and so the CRD) takes it
    quicker = {
        "gateways": {**health["gateways"], "sip:gw2": {**health["gateways"]["sip:gw2"], "latency": 0.001}}
    }
    assert carrier_upkeep(None, quicker, NOW).significant() == carrier_upkeep(None, health, NOW).significant()
    no_probes = build_carrier_status(Carrier.model_validate(carrier_body("x", [])), config(), now=T0)
    assert no_probes["gateways"] is None


def test_events_for_each_gateway_and_registration_change() -> None:
    from trunkline.operator.status import upkeep_changes

    up, down = GatewaySeen("sip:gw1", True, status=200), GatewaySeen("sip:gw1", False, status=408)
    other = GatewaySeen("sip:gw2", True)
    before = CarrierUpkeep(True, "registered", (up, other))
    assert upkeep_changes(before, before) == []
    after = CarrierUpkeep(False, "last REGISTER: 403 Forbidden", (down, other))
    assert upkeep_changes(before, after) == [
        ("Warning", "GatewayDown", "gateway sip:gw1 is down (last status 408)"),
        ("Warning", "RegistrationFailed", "last REGISTER: 403 Forbidden"),
    ]
    assert upkeep_changes(after, before) == [
        ("Normal", "GatewayUp", "gateway sip:gw1 answers its probes again"),
        ("Normal", "Registered", "registered"),
    ]
    # Probes start from up: a gateway first reported down went down; one first reported up did not move.
    assert upkeep_changes(CarrierUpkeep(), CarrierUpkeep(gateways=(down, other))) == [
        ("Warning", "GatewayDown", "gateway sip:gw1 is down (last status 408)")
    ]


def test_status_shows_each_gateways_answer_seizure_ratio_and_post_dial_delay() -> None:
    body = carrier_body("pstn", [])
    body["spec"]["gateways"] = [{"uri": "sip:gw1"}, {"uri": "sip:gw2"}, {"uri": "sip:gw3"}]
    now_minute = {"sip:gw1 a": 4, "sip:gw1 s": 3, "sip:gw1 p": 4, "sip:gw1 d": 2000, "sip:other a": 9}
    old_minute = {"sip:gw2 a": 2, "sip:gw2 p": 1, "sip:gw2 d": 4000, "sip:gw1 a": 6, "junk": 1}
    figures = [now_minute, {}, {}, {}, {}, {}, old_minute]  # gw2's attempts are 6 minutes old
    live = carrier_upkeep(None, None, NOW, figures)
    status = build_carrier_status(Carrier.model_validate(body), config(), now=T0, upkeep=live)
    assert status["gateways"] == [  # no probes: no state; gw3 had no attempts: not shown
        {"uri": "sip:gw1", "attempts5m": 4, "asr5m": 0.75, "pdd5m": 0.5,
         "attempts60m": 10, "asr60m": 0.3, "pdd60m": 0.5},
        {"uri": "sip:gw2", "attempts5m": 0, "attempts60m": 2, "asr60m": 0.0, "pdd60m": 4.0},
    ]  # fmt: skip
    Carrier.model_validate({**body, "status": status})  # the model (and so the CRD) takes it
    # New figures of gateways already shown wait for the resync; a gateway newly shown does not.
    more = carrier_upkeep(None, None, NOW, [{**now_minute, "sip:gw1 a": 40}, *figures[1:]])
    assert more.significant() == live.significant()
    assert carrier_upkeep(None, None, NOW, [now_minute]).significant() != live.significant()
    # With probes, each entry has both.
    body["spec"]["health"] = {"interval": 5}
    health = {"gateways": {"sip:gw1": {"up": True, "status": 200}}}
    both = build_carrier_status(Carrier.model_validate(body), config(), now=T0,
                                upkeep=carrier_upkeep(None, health, NOW, figures))  # fmt: skip
    assert both["gateways"][0] == {
        "uri": "sip:gw1",
        "state": "Up",
        "lastStatus": 200,
        **status["gateways"][0],
    }
    # With the histogram the edges write, the 90th percentile too.
    timed = [{"sip:gw1 a": 2, "sip:gw1 p": 2, "sip:gw1 d": 900, "sip:gw1 h2": 2}]
    live = carrier_upkeep(None, None, NOW, timed)
    (entry,) = build_carrier_status(Carrier.model_validate(body), config(), now=T0, upkeep=live)["gateways"]
    assert (entry["pdd5m"], entry["pdd5mP90"], entry["pdd60mP90"]) == (0.45, 1.0, 1.0)
    Carrier.model_validate({**body, "status": {"gateways": [entry]}})


def test_figures_of_a_hostile_store_stay_bounded() -> None:
    junk = [{f"sip:gw{i} a": 1 for i in range(500)} | {"x" * 600 + " a": 1, " a": 5}]
    live = carrier_upkeep(None, None, NOW, junk)
    assert len(live.quality) == 64 and all(len(q.uri) <= 512 and q.uri for q in live.quality)
