"""Status of Trunks, DIDs and Carriers from plain data: conditions, reasons, transitions, drain."""

from __future__ import annotations

import datetime
from typing import Any

from trunkline.core.manifests import ConfigSet
from trunkline.core.models import DID, Carrier, Secret, Trunk
from trunkline.operator.status import (
    DRAIN_ANNOTATION,
    CallCounts,
    build_carrier_status,
    build_did_status,
    build_trunk_status,
    drain_deadline,
    drain_done,
    now_rfc3339,
    plan_statuses,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def meta(name: str, generation: int = 1, created: str = T0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "ns", "generation": generation, "creationTimestamp": created, **extra}


def trunk_body(name: str = "acme", prefixes: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    spec = {
        "auth": {"digest": {"credentialsSecret": f"{name}-creds"}},
        "outbound": {"allowedPrefixes": prefixes or []},
    }
    return {
        "apiVersion": "trunkline.io/v1alpha1",
        "kind": "Trunk",
        "metadata": meta(name, **extra),
        "spec": spec,
    }


def did_body(name: str, number: str, trunk: str = "acme", created: str = T0) -> dict[str, Any]:
    spec = {"number": number, "trunkRef": trunk}
    return {
        "apiVersion": "trunkline.io/v1alpha1",
        "kind": "DID",
        "metadata": meta(name, created=created),
        "spec": spec,
    }


def carrier_body(name: str, prefixes: list[str]) -> dict[str, Any]:
    spec = {"gateways": [{"uri": "sip:gw.example.net"}], "prefixes": prefixes}
    return {"apiVersion": "trunkline.io/v1alpha1", "kind": "Carrier", "metadata": meta(name), "spec": spec}


def secret_body(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "ns", "labels": {"trunkline.io/credentials": ""}},
        "stringData": data,
    }


def config(*bodies: dict[str, Any]) -> ConfigSet:
    cs = ConfigSet()
    for body in bodies:
        model = {"Trunk": Trunk, "DID": DID, "Carrier": Carrier, "Secret": Secret}[body["kind"]]
        cs.add(model.model_validate(body))
    return cs


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


CREDS = secret_body("acme-creds", username="acme", password="pw")


def test_a_complete_trunk_is_ready() -> None:
    trunk = Trunk.model_validate(trunk_body(prefixes=["+1415"]))
    status = build_trunk_status(trunk, config(CREDS, carrier_body("us", ["+1"])), now=T0)
    assert conditions(status) == {"Ready": ("True", "Reconciled"), "Degraded": ("False", "Reconciled")}
    assert status["observedGeneration"] == 1
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] == T0 for c in status["conditions"])
    # Live counts come from the shared store, written apart (see test_operator_live_counts.py).
    assert "activeCalls" not in status and "registeredContacts" not in status


def test_missing_secret_or_keys() -> None:
    trunk = Trunk.model_validate(trunk_body())
    status = build_trunk_status(trunk, config(), now=T0)
    assert conditions(status) == {"Ready": ("False", "MissingSecret"), "Degraded": ("True", "MissingSecret")}
    assert "Secret 'acme-creds' not found" in status["conditions"][0]["message"]
    status = build_trunk_status(trunk, config(secret_body("acme-creds", username="acme")), now=T0)
    assert "has no password" in status["conditions"][1]["message"]


def test_allowed_prefix_without_carrier() -> None:
    trunk = Trunk.model_validate(trunk_body(prefixes=["+1", "+44", "+4930"]))
    # "+49" serves "+4930"; nothing serves "+44"; "+1415" does not serve all of "+1".
    cs = config(CREDS, carrier_body("de", ["+49"]), carrier_body("sf", ["+1415"]))
    status = build_trunk_status(trunk, cs, now=T0)
    assert conditions(status)["Degraded"] == ("True", "NoCarrierForPrefix")
    message = status["conditions"][1]["message"]
    assert "+1" in message and "+44" in message and "+4930" not in message
    # A default route (no prefixes) serves everything.
    assert (
        conditions(build_trunk_status(trunk, config(CREDS, carrier_body("any", [])), now=T0))["Ready"][0]
        == "True"
    )


def test_did_claimed_twice_the_later_one_is_degraded() -> None:
    first = did_body("main", "+14155550100", created=T0)
    second = did_body("copy", "+14155550100", trunk="other", created=T1)
    cs = config(trunk_body(), trunk_body("other"), first, second)
    assert conditions(build_did_status(DID.model_validate(first), cs, now=T1))["Ready"] == (
        "True",
        "Reconciled",
    )
    status = build_did_status(DID.model_validate(second), cs, now=T1)
    assert conditions(status)["Degraded"] == ("True", "DuplicateDID")
    assert "already claimed by DID 'main'" in status["conditions"][0]["message"]


def test_did_of_a_missing_trunk() -> None:
    did = DID.model_validate(did_body("main", "+14155550100", trunk="gone"))
    status = build_did_status(did, config(), now=T0)
    assert conditions(status) == {"Ready": ("False", "TrunkNotFound"), "Degraded": ("True", "TrunkNotFound")}


def test_carrier_with_missing_credentials() -> None:
    body = carrier_body("us", ["+1"])
    body["spec"]["auth"] = {"credentialsSecret": "us-creds"}
    assert conditions(build_carrier_status(Carrier.model_validate(body), config(), now=T0))["Ready"] == (
        "False",
        "MissingSecret",
    )
    no_password = config(secret_body("us-creds", username="u"))
    status = build_carrier_status(Carrier.model_validate(body), no_password, now=T0)
    assert conditions(status)["Ready"] == ("False", "MissingSecret")
    ok = config(secret_body("us-creds", username="u", password="p"))
    assert conditions(build_carrier_status(Carrier.model_validate(body), ok, now=T0))["Ready"][0] == "True"


def test_transition_time_changes_only_with_the_status() -> None:
    body = trunk_body()
    first = build_trunk_status(Trunk.model_validate(body), config(), now=T0)  # MissingSecret
    # Same result later, new generation: times kept, observedGeneration follows.
    body = {**trunk_body(generation=2), "status": first}
    again = build_trunk_status(Trunk.model_validate(body), config(), now=T1)
    assert [c["lastTransitionTime"] for c in again["conditions"]] == [T0, T0]
    assert again["observedGeneration"] == 2 and again["conditions"][0]["observedGeneration"] == 2
    # Fixed: both conditions flip, so both get the new time.
    fixed = build_trunk_status(Trunk.model_validate(body), config(CREDS), now=T1)
    assert [c["lastTransitionTime"] for c in fixed["conditions"]] == [T1, T1]


def test_draining_trunk_is_not_ready_but_not_degraded() -> None:
    trunk = Trunk.model_validate(trunk_body(annotations={DRAIN_ANNOTATION: T1}))
    status = build_trunk_status(trunk, config(CREDS), now=T0)
    assert conditions(status) == {"Ready": ("False", "Draining"), "Degraded": ("False", "Reconciled")}
    assert T1 in status["conditions"][0]["message"]


def test_plan_statuses_for_a_namespace() -> None:
    deleting = trunk_body("old", deletionTimestamp=T1)
    objects = {
        "Trunk": [trunk_body(), deleting],
        "DID": [did_body("main", "+14155550100"), did_body("orphan", "+14155550199", trunk="old")],
        "Carrier": [carrier_body("any", [])],
    }
    updates = {(u.kind, u.name): conditions(u.status) for u in plan_statuses(objects, [CREDS], now=T0)}
    assert updates[("Trunk", "acme")]["Ready"] == ("True", "Reconciled")
    # The same Secret without the credentials label is one control never reads: missing.
    unlabelled = {**CREDS, "metadata": {"name": "acme-creds", "namespace": "ns"}}
    again = {(u.kind, u.name): u.status for u in plan_statuses(objects, [unlabelled], now=T0)}
    assert conditions(again[("Trunk", "acme")])["Ready"] == ("False", "MissingSecret")
    assert "trunkline.io/credentials" in again[("Trunk", "acme")]["conditions"][0]["message"]
    assert updates[("DID", "main")]["Ready"] == ("True", "Reconciled")
    # The DIDs of a trunk being deleted lose it at once.
    assert updates[("DID", "orphan")]["Ready"] == ("False", "TrunkNotFound")
    assert updates[("Carrier", "any")]["Ready"] == ("True", "Reconciled")


def test_plan_statuses_writes_nothing_when_nothing_changed() -> None:
    objects: dict[str, list[dict[str, Any]]] = {"Trunk": [trunk_body()], "DID": [], "Carrier": []}
    (update,) = plan_statuses(objects, [CREDS], now=T0)
    # Counts written by the live-counts daemon are no business of the sweep's: left as they are.
    objects["Trunk"][0]["status"] = {**update.status, "activeCalls": 3, "registeredContacts": 1}
    assert plan_statuses(objects, [CREDS], now=T1) == []


def test_object_the_model_rejects_is_reported_not_fatal() -> None:
    # E.g. created while an older, laxer CRD was installed.
    bad = did_body("bad", "+14155550100")
    bad["spec"]["number"] = "0800-FLOWERS"
    (update,) = plan_statuses({"DID": [bad]}, [], now=T0)
    assert (update.kind, update.name) == ("DID", "bad")
    assert conditions(update.status)["Ready"] == ("False", "Invalid")
    assert "spec.number" in update.status["conditions"][0]["message"]


def test_drain_deadline_and_completion() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    deadline = drain_deadline({}, now, 300)
    assert deadline == now + datetime.timedelta(seconds=300)
    # An existing deadline is kept across retries (and restarts of the operator).
    assert (
        drain_deadline({DRAIN_ANNOTATION: now_rfc3339(deadline)}, now + datetime.timedelta(seconds=60), 300)
        == deadline
    )
    assert drain_deadline({DRAIN_ANNOTATION: "garbage"}, now, 10) == now + datetime.timedelta(seconds=10)
    assert drain_done(CallCounts(active_calls=0), deadline, now)
    assert not drain_done(CallCounts(active_calls=2), deadline, now)
    assert drain_done(CallCounts(active_calls=2), deadline, deadline)
    # The store cannot say (Redis down): only the deadline ends the drain.
    assert not drain_done(None, deadline, now)
    assert drain_done(None, deadline, deadline)
