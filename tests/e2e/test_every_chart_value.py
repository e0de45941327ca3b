"""Every documented chart value set to a non-default (the unit test's values): the operator, with the
chart's RBAC, writes data-plane objects into the real API server that carry each value."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.chart_values import CHECKS, FIRST, holds, nested
from tests.support.wait import wait_for

from .cluster import ControlPlane
from .service_monitor_crd import NAME as CRD_NAME
from .service_monitor_crd import service_monitor_crd
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
    # metrics.serviceMonitor.enabled: the chart writes a ServiceMonitor, so the cluster needs its CRD.
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(service_monitor_crd()))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
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


def test_the_service_monitor_is_stored_as_rendered_and_lists_the_written_pods(cluster: Cluster) -> None:
    monitor = cluster.get("servicemonitor", "voip")
    assert monitor is not None, "no ServiceMonitor voip"
    assert monitor["metadata"]["labels"]["release"] == "prom9"
    spec = monitor["spec"]  # nothing pruned: every field the chart writes is one the API knows
    assert spec["endpoints"] == [{
        "port": "http", "path": "/metrics", "interval": "17s",
        "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                         "targetLabel": "component"}],
    }]  # fmt: skip
    assert spec["namespaceSelector"] == {"matchNames": [cluster.ns]}
    service = cluster.get("service", "voip-metrics")
    assert service is not None and service["spec"]["clusterIP"] == "None"
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # The Service lists the pods of every workload the operator wrote, by their http port.
    selector = service["spec"]["selector"].items()
    found = written(cluster)
    for key in ("Deployment/voip-edge", "Deployment/voip-control", "DaemonSet/voip-media"):
        template = found[key]["spec"]["template"]
        assert selector <= template["metadata"]["labels"].items(), key
        assert "http" in {p["name"] for p in template["spec"]["containers"][0]["ports"]}, key
