"""Routing and policy rules of the edge, as pure functions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from trunkline.core.models import DID, Carrier, Numbering, Target, Trunk
from trunkline.core.trunk_defaults import TrunkDefaults
from trunkline.edge.numbers import to_e164
from trunkline.edge.policy import check_caller_id, check_destination, source_in
from trunkline.edge.routing import Next, after_final_response, carriers_for, inbound_targets, order_targets


def carrier(name: str, prefixes: list[str], *gateways: str) -> Carrier:
    uris = gateways or ("sip:gw.example.net",)
    spec = {"prefixes": prefixes, "gateways": [{"uri": uri} for uri in uris]}
    return Carrier.model_validate({"metadata": {"name": name}, "spec": spec})


def trunk(**spec: object) -> Trunk:
    return Trunk.model_validate({"metadata": {"name": "acme"}, "spec": spec})


@pytest.mark.parametrize(
    ("user", "plan", "expected"),
    [
        ("+14155550100", None, "+14155550100"),
        ("+1 (415) 555-0100", None, "+14155550100"),
        ("+44.20.7123.4567", None, "+442071234567"),
        ("14155550100", None, "+14155550100"),
        ("+14155550100;phone-context=+1", None, "+14155550100"),
        ("004420712345678", Numbering(countryCode="49"), "+4420712345678"),
        ("030123456", Numbering(countryCode="49"), "+4930123456"),
        ("4155550100", Numbering(countryCode="1", nationalPrefix=""), "+14155550100"),
        ("alice", None, None),
        ("+0123", None, None),
        ("+1234567890123456", None, None),
        ("", None, None),
    ],
)
def test_numbers_normalise_to_e164(user: str, plan: Numbering | None, expected: str | None) -> None:
    assert to_e164(user, plan) == expected


def test_longest_prefix_wins_and_empty_prefixes_are_the_default_route() -> None:
    default, uk, london = carrier("default", []), carrier("uk", ["+44"]), carrier("london", ["+4420", "+44"])
    every = [default, uk, london]
    assert carriers_for("+442071234567", every) == [london]
    assert carriers_for("+441612345678", every) == [uk, london]  # a tie keeps both, in order
    assert carriers_for("+14155550100", every) == [default]
    assert carriers_for("+14155550100", [uk, london]) == []


def test_targets_ordered_by_priority_then_weight() -> None:
    targets = [Target(uri="sip:c", priority=20), Target(uri="sip:a", priority=10, weight=90),
               Target(uri="sip:b", priority=10, weight=10)]  # fmt: skip
    firsts: Counter[str] = Counter()
    rng = random.Random(7)
    for _ in range(2000):
        order = [t.uri for t in order_targets(targets, rng)]
        assert order[2] == "sip:c" and set(order[:2]) == {"sip:a", "sip:b"}
        firsts[order[0]] += 1
    assert 0.85 < firsts["sip:a"] / 2000 < 0.95  # weight 90 of 100


def test_weight_zero_is_tried_last_almost_always() -> None:
    targets = [Target(uri="sip:zero", weight=0), Target(uri="sip:one", weight=100)]
    rng = random.Random(1)
    lasts = Counter(order_targets(targets, rng)[-1].uri for _ in range(1000))
    assert lasts["sip:zero"] > 980


def test_did_origination_overrides_the_trunks() -> None:
    t = trunk(origination=[{"uri": "sip:pbx1.example.com"}])
    own_spec = {
        "number": "+14155550100",
        "trunkRef": "acme",
        "origination": [{"uri": "sip:pbx2.example.com"}],
    }
    own = DID.model_validate({"metadata": {"name": "d"}, "spec": own_spec})
    plain = DID.model_validate(
        {"metadata": {"name": "e"}, "spec": {"number": "+14155550101", "trunkRef": "acme"}}
    )
    assert [x.uri for x in inbound_targets(t, own)] == ["sip:pbx2.example.com"]
    assert [x.uri for x in inbound_targets(t, plain)] == ["sip:pbx1.example.com"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, Next.TRY_NEXT), (502, Next.TRY_NEXT), (503, Next.TRY_NEXT), (408, Next.TRY_NEXT),
     (302, Next.TRY_NEXT), (486, Next.RELAY), (600, Next.RELAY), (603, Next.RELAY),
     (404, Next.RELAY), (480, Next.RELAY),
     (484, Next.RELAY), (604, Next.RELAY), (606, Next.RELAY)],
)  # fmt: skip
def test_which_answers_fail_over(status: int, expected: Next) -> None:
    assert after_final_response(status) is expected


@pytest.mark.parametrize(
    ("address", "cidrs", "inside"),
    [("127.0.0.2", ["127.0.0.2/32"], True), ("127.0.0.3", ["127.0.0.2/32"], False),
     ("10.1.2.3", ["10.0.0.0/8"], True), ("::ffff:10.1.2.3", ["10.0.0.0/8"], True),
     ("2001:db8::5", ["2001:db8::/32"], True), ("[2001:db8::5]", ["2001:db8::/32"], True),
     ("2001:db9::5", ["2001:db8::/32"], False), ("10.1.2.3", ["2001:db8::/32"], False),
     ("not-an-ip", ["0.0.0.0/0"], False), ("1.2.3.4", [], False)],
)  # fmt: skip
def test_ip_acl(address: str, cidrs: list[str], inside: bool) -> None:
    assert source_in(address, cidrs) is inside


def test_geo_permissions() -> None:
    t = trunk(outbound={"allowedPrefixes": ["+1", "+44"]})
    assert check_destination(t, "+442071234567") is None
    rejection = check_destination(t, "+881612345678")
    assert rejection is not None and rejection.status == 403 and rejection.rule == "allowedPrefixes"
    # Unset: the platform's default list, which is empty unless given: no number at all.
    unset = check_destination(trunk(), "+14155550100")
    assert unset is not None and unset.status == 403 and "may call no number" in unset.detail
    home = TrunkDefaults(allowedPrefixes=["+1"])
    assert check_destination(trunk(), "+14155550100", home) is None
    assert check_destination(trunk(), "+442071234567", home) is not None
    # Written down: "+" is any number, [] none, whatever the platform's default.
    assert check_destination(trunk(outbound={"allowedPrefixes": ["+"]}), "+881612345678") is None
    assert check_destination(trunk(outbound={"allowedPrefixes": []}), "+14155550100", home) is not None


def test_caller_id_policy() -> None:
    dids = ["+14155550100", "+14155550101"]
    strict = trunk()
    assert check_caller_id(strict, "+14155550101", dids) == ("+14155550101", None)
    presented, rejection = check_caller_id(strict, "+19995550100", dids)
    assert presented is None and rejection is not None and rejection.rule == "callerId"
    replace = trunk(outbound={"callerIdAction": "replace"})
    assert check_caller_id(replace, "+19995550100", dids) == ("+14155550100", None)
    assert check_caller_id(replace, None, dids) == ("+14155550100", None)
    anyone = trunk(outbound={"callerId": "any"})
    assert check_caller_id(anyone, "+19995550100", dids) == ("+19995550100", None)
