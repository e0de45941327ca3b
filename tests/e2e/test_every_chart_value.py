"""Every documented chart value set to a non-default (the unit test's values): the operator, with the
chart's RBAC, writes data-plane objects into the real API server that carry each value."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.chart_values import CHECKS, FIRST, holds, nested
from tests.support.wait import wait_for

from .cluster import ControlPlane
from .test_operator_lifecycle import CHART, RELEASE, Cluster, run_operator

# The objects the operator writes (the API server normalises quantities, so resources are compared in
# the unit test; here they must only be there).
WRITTEN = (
    "Deployment/voip-edge", "Deployment/voip-control", "DaemonSet/voip-media", "Service/voip-edge-udp",
    "Service/voip-edge-tcp", "HorizontalPodAutoscaler/voip-edge", "ConfigMap/voip-runtime",
)  # fmt: skip


# A quick resync for the test; no live counts (no Redis here): their values are checked in the unit test.
OVERRIDDEN = {"operator.resyncSeconds": 5, "operator.liveCounts.enabled": False}
HIDDEN = {"operator.resyncSeconds", "operator.liveCounts.intervalSeconds"}


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("every-value")
    values = workdir / "values.yaml"
    values.write_text(yaml.safe_dump(nested({**FIRST, **OVERRIDDEN})))
    namespace = f"trunkline-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.helm(
        "install", RELEASE, str(CHART), "-n", namespace, "--values", str(workdir / "values.yaml")
    )
    cluster = Cluster(control_plane, namespace)
    with run_operator(cluster, workdir, prefix="voip"):
        yield cluster


def written(cluster: Cluster) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for key in WRITTEN:
        kind, name = key.split("/")
        found[key] = wait_for(lambda kind=kind, name=name: cluster.get(kind.lower(), name), key, timeout=60)
    found["Deployment/voip-operator"] = cluster.get("deployment", "voip-operator") or {}
    return found


def test_the_written_objects_carry_every_value(cluster: Cluster) -> None:
    found = written(cluster)
    checked = []
    for path, check in CHECKS.items():
        if callable(check) or ".resources." in path or path in HIDDEN or check[0] not in found:
            continue
        key, wanted = check
        assert holds(found[key], wanted), (path, key, wanted)
        checked.append(path)
    assert len(checked) >= 30, checked
    nonce = wait_for(lambda: cluster.get("secret", "voip-nonce"), "the nonce Secret")
    assert nonce["data"]["keys"]
    for key in ("Deployment/voip-edge", "Deployment/voip-control", "DaemonSet/voip-media"):
        assert holds(found[key], [{"name": "pull-me"}]) and holds(found[key], {"imagePullPolicy": "Always"})
        assert found[key]["spec"]["template"]["spec"]["containers"][0]["resources"], key
