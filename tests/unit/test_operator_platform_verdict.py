"""The operator's verdict on the platform: recorded on its ConfigMap for `helm test`, and shown on every
Trunk as the PlatformReady condition; `trunkline platform-check` judges only a verdict on the current
content."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.unit.test_operator_status import CREDS, conditions, trunk_body
from trunkline.operator.handlers import api_error_message, refused_by_api_server
from trunkline.operator.platform_check import CheckFailed, judge, wait_applied
from trunkline.operator.status import plan_statuses
from trunkline.operator.verdict import STATUS_ANNOTATION, read_verdict, verdict, verdict_patch

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def platform_configmap(text: str = "{}\n", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta = {"name": "tl-platform", "namespace": "voice", "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"platform.yaml": text}}


def recorded(configmap: dict[str, Any], refusal: str | None) -> dict[str, Any]:
    patch = verdict_patch(configmap, verdict(configmap, refusal))
    assert patch is not None
    return platform_configmap(configmap["data"]["platform.yaml"], patch["metadata"]["annotations"])


def test_a_verdict_round_trips_and_is_written_once() -> None:
    refused = recorded(platform_configmap(), "edge: bad")
    found = read_verdict(refused)
    assert found is not None and not found.applied and found.reason == "PlatformRefused"
    assert found.message == "edge: bad"
    assert verdict_patch(refused, verdict(refused, "edge: bad")) is None  # the same: nothing to write
    assert verdict_patch(refused, verdict(refused, None)) is not None


@pytest.mark.parametrize("text", ["not json", "[]", '{"applied": "yes"}', '{"applied": true, "reason": 1}'])
def test_a_mangled_annotation_is_no_verdict(text: str) -> None:
    assert read_verdict(platform_configmap(annotations={STATUS_ANNOTATION: text})) is None


def test_the_check_judges_the_current_content_only() -> None:
    assert judge(recorded(platform_configmap(), None), "voice/tl-platform") is True
    with pytest.raises(CheckFailed, match="refused by the operator: API server says no"):
        judge(recorded(platform_configmap(), "API server says no"), "voice/tl-platform")
    # An upgrade changed the content since: no verdict on it yet, whatever the old one said.
    stale = recorded(platform_configmap(), "API server says no")
    stale["data"]["platform.yaml"] = "logLevel: debug\n"
    assert judge(stale, "voice/tl-platform") is False
    assert judge(platform_configmap(), "voice/tl-platform") is False
    # What the model refuses fails at once, operator or not, in the operator's words.
    bad = platform_configmap("edge: {autoscaling: {minReplicas: 5, maxReplicas: 3}}\n")
    with pytest.raises(CheckFailed, match="maxReplicas must be >= minReplicas"):
        judge(bad, "voice/tl-platform")
    with pytest.raises(CheckFailed, match="not found"):
        judge(None, "voice/tl-platform")


def test_every_trunk_shows_the_platform_verdict() -> None:
    objects: dict[str, list[dict[str, Any]]] = {"Trunk": [trunk_body()], "DID": [], "Carrier": []}
    cm = platform_configmap()
    (update,) = plan_statuses(objects, [CREDS], now=T0, platform=verdict(cm, "edge.resources: bad quantity"))
    assert conditions(update.status)["PlatformReady"] == ("False", "PlatformRefused")
    assert conditions(update.status)["Ready"] == ("True", "Reconciled")  # the old data plane still runs
    [platform] = [c for c in update.status["conditions"] if c["type"] == "PlatformReady"]
    assert platform["message"] == "platform settings refused: edge.resources: bad quantity"
    objects["Trunk"][0]["status"] = update.status
    assert plan_statuses(objects, [CREDS], now=T1, platform=verdict(cm, "edge.resources: bad quantity")) == []
    (fixed,) = plan_statuses(objects, [CREDS], now=T1, platform=verdict(cm, None))
    assert conditions(fixed.status)["PlatformReady"] == ("True", "Applied")
    assert [c["lastTransitionTime"] for c in fixed.status["conditions"]] == [T0, T0, T1]
    # An operator without --platform judges none: no such condition.
    (none,) = plan_statuses(objects, [CREDS], now=T1)
    assert "PlatformReady" not in conditions(none.status)


@pytest.mark.parametrize(
    ("status", "message", "refused"),
    [
        (422, 'Service "x" is invalid: metadata.annotations: Invalid value', True),
        (400, "bad request", True),
        (500, "failed to convert new object (ns/x; apps/v1, Kind=Deployment) to proper version", True),
        (500, "etcdserver: request timed out", False),  # the server's trouble: no verdict on the platform
        (403, "forbidden", False),
    ],
)
def test_which_api_errors_are_the_platforms_fault(status: int, message: str, refused: bool) -> None:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"kind": "Status", "message": message})
    assert refused_by_api_server(exc) is refused
    assert api_error_message(exc) == message


def test_no_verdict_on_the_current_content_in_time_is_a_failure_that_says_so() -> None:
    with pytest.raises(CheckFailed, match="has not applied platform voice/tl-platform as it is now"):
        wait_applied(lambda: platform_configmap(), "voice/tl-platform", deadline=time.monotonic())
    wait_applied(lambda: recorded(platform_configmap(), None), "voice/tl-platform", deadline=time.monotonic())
