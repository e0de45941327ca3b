"""A platform the chart's schema lets through but the operator refuses (maxReplicas below minReplicas:
JSON Schema cannot compare two values) is a Warning Event on the platform ConfigMap, and no data plane
is deployed (so `helm test`, which waits for control, fails)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.wait import wait_for

from .cluster import ControlPlane
from .test_operator_lifecycle import PREFIX, Cluster, install, run_operator


@pytest.fixture(scope="module")
def refused(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Path]]:
    cluster = install(
        control_plane, "operator.resyncSeconds=5", "operator.liveCounts.enabled=false",
        "edge.autoscaling.minReplicas=5", "edge.autoscaling.maxReplicas=3",
    )  # fmt: skip
    with run_operator(cluster, tmp_path_factory.mktemp("operator")) as log:
        yield cluster, log


def refusals(k: Cluster) -> list[dict[str, object]]:
    out = k.cp.kubectl("get", "events", "-n", k.ns, "-o", "json").stdout
    return [
        e for e in json.loads(out)["items"]
        if e.get("reason") == "PlatformRefused" and e["involvedObject"]["name"] == f"{PREFIX}-platform"
    ]  # fmt: skip


def test_a_refused_platform_is_a_warning_event_on_its_configmap(refused: tuple[Cluster, Path]) -> None:
    k, log = refused
    [event] = wait_for(lambda: refusals(k), "a PlatformRefused Event", timeout=60)
    assert event["type"] == "Warning"
    assert "maxReplicas must be >= minReplicas" in str(event["message"])
    assert k.get("deployment", f"{PREFIX}-control") is None  # nothing deployed: helm test cannot pass
    # Reported once per reason, not at every resync (5 s here): two more refusals, still one Event.
    wait_for(lambda: log.read_text().count("not applied") >= 3, "three refusals logged", timeout=60)
    assert len(refusals(k)) == 1
