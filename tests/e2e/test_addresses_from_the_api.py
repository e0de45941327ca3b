"""Addresses and autoscaling as the operator writes them into a real kube-apiserver (issue 17).

The chart with a LoadBalancer UDP Service, no `edge.advertise`, relays on the nodes' network that
advertise the Node's ExternalIP, and the edge HPA on active calls; the operator runs with the chart's
RBAC. No cloud controller runs here, so the test writes the Service's load-balancer address through
its status subresource, as one would, and the Nodes' addresses as a kubelet would; then:

- until the Service has an address, no edge Deployment and `SipAddressReady=False` on the Trunk; with
  one, the edges advertise it, and a changed one rolls them (their pod template changes);
- a Node without an ExternalIP is `MediaAddressReady=False` on the Trunk, naming the Node;
- the HPA has the Pods metric `trunkline_active_calls` the API server accepts; both the edges and the
  relays (a DaemonSet here) have a PodDisruptionBudget.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import wait_for

from .cluster import ControlPlane
from .test_media_address_from_the_node import put_node
from .test_operator_lifecycle import EXAMPLES, PREFIX, Cluster, assert_clean_log, install, run_operator

TIMEOUT = 90  # a resync is 5 s here; a loaded machine may need several
NODE = f"addr-{secrets.token_hex(3)}"
EDGE, UDP = f"{PREFIX}-edge", f"{PREFIX}-edge-udp"


@pytest.fixture(scope="module")
def installed(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Path]]:
    put_node(control_plane, NODE, {"InternalIP": "127.0.0.20"})  # no ExternalIP yet
    cluster = install(
        control_plane, "operator.resyncSeconds=5", "operator.liveCounts.enabled=false",
        "edge.udpService.type=LoadBalancer", "media.kind=DaemonSet", "media.advertise=nodeExternalIP",
        "edge.autoscaling.metric=activeCalls", "edge.autoscaling.activeCallsPerPod=40",
    )  # fmt: skip
    cluster.apply((EXAMPLES / "trunk.yaml").read_text())
    workdir = tmp_path_factory.mktemp("addresses")
    with run_operator(cluster, workdir) as log:
        yield cluster, log


@pytest.fixture
def k(installed: tuple[Cluster, Path]) -> Cluster:
    return installed[0]


def condition(k: Cluster, type_: str) -> tuple[str, str, str] | None:
    trunk = k.get("trunk", "acme") or {}
    for c in trunk.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return (c["status"], c["reason"], c["message"])
    return None


def wait_condition(k: Cluster, type_: str, status: str, reason: str) -> str:
    """The condition's message, once it has that status and reason."""
    found = wait_for(
        lambda: (c := condition(k, type_)) and c[:2] == (status, reason) and c,
        f"{type_}={status} ({reason}) on Trunk acme",
        timeout=TIMEOUT,
    )
    return found[2]


def set_ingress(k: Cluster, ingress: list[dict[str, str]] | None) -> None:
    """Write the Service's load-balancer status, as a cloud controller does."""
    patch = {"status": {"loadBalancer": {"ingress": ingress}}}
    k.cp.kubectl("patch", "service", UDP, "-n", k.ns, "--subresource=status", "--type=merge",
                 "-p", json.dumps(patch))  # fmt: skip


def events(k: Cluster, reason: str) -> list[dict[str, Any]]:
    """The Warning Events of that reason on the platform ConfigMap."""
    out = k.cp.kubectl("get", "events", "-n", k.ns, "-o", "json").stdout
    return [e for e in json.loads(out)["items"]
            if e["reason"] == reason and e["involvedObject"]["name"] == f"{PREFIX}-platform"]  # fmt: skip


def advertised(k: Cluster) -> str | None:
    edge = k.get("deployment", EDGE)
    if edge is None:
        return None
    env = edge["spec"]["template"]["spec"]["containers"][0]["env"]
    return next((e["value"] for e in env if e["name"] == "TRUNKLINE_EDGE_ADVERTISE"), None)


def test_without_a_load_balancer_address_no_edge_is_deployed_and_the_trunk_says_why(k: Cluster) -> None:
    message = wait_condition(k, "SipAddressReady", "False", "ServiceAddressPending")
    assert f"Service {UDP} has no load-balancer address yet" in message
    service = k.get("service", UDP)
    assert service is not None and service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"  # the chart's default: callers' addresses
    assert k.get("deployment", EDGE) is None  # never an internal name advertised to the outside
    assert k.get("deployment", f"{PREFIX}-control") is not None  # the rest is deployed
    # `kubectl get events` says it too, once (not at every resync).
    [event] = wait_for(lambda: events(k, "ServiceAddressPending"), "the Event on the platform", TIMEOUT)
    assert event["type"] == "Warning" and f"Service {UDP} has no load-balancer address" in event["message"]


def test_the_edges_advertise_the_services_address_and_roll_when_it_changes(k: Cluster) -> None:
    set_ingress(k, [{"ip": "127.0.0.31"}])
    wait_for(lambda: advertised(k) == "127.0.0.31:5060", "the edges advertising the LB's IP", TIMEOUT)
    assert wait_condition(k, "SipAddressReady", "True", "LoadBalancer").startswith("127.0.0.31:5060")
    edge = k.get("deployment", EDGE) or {}
    assert edge["spec"]["strategy"]["type"] == "RollingUpdate"
    generation = edge["metadata"]["generation"]
    control_template = (k.get("deployment", f"{PREFIX}-control") or {})["spec"]["template"]

    set_ingress(k, [{"hostname": "sip-lb.example.net"}])
    wait_for(lambda: advertised(k) == "sip-lb.example.net:5060", "the edges advertising its name", TIMEOUT)
    assert (k.get("deployment", EDGE) or {})["metadata"]["generation"] > generation  # a new template: rolled
    # Only the edges roll: the other components' pods do not carry the address.
    assert (k.get("deployment", f"{PREFIX}-control") or {})["spec"]["template"] == control_template

    # The address goes away (the balancer is being replaced): the edges keep the last one, the Trunk says.
    set_ingress(k, None)
    wait_condition(k, "SipAddressReady", "False", "ServiceAddressPending")
    assert advertised(k) == "sip-lb.example.net:5060"
    wait_for(lambda: len(events(k, "ServiceAddressPending")) == 2, "a new Event for a new outage", TIMEOUT)


def test_a_node_without_an_external_ip_is_a_media_address_condition(k: Cluster) -> None:
    message = wait_condition(k, "MediaAddressReady", "False", "NodeAddressMissing")
    assert f"node {NODE} has no usable ExternalIP" in message
    [event] = wait_for(lambda: events(k, "NodeAddressMissing"), "the Event on the platform", TIMEOUT)
    assert f"node {NODE} has no usable ExternalIP" in event["message"]
    put_node(k.cp, NODE, {"InternalIP": "127.0.0.20", "ExternalIP": "127.0.0.21"})

    def ours_resolved() -> tuple[str, str, str] | None:
        found = condition(k, "MediaAddressReady")
        return found if found and NODE not in found[2] else None

    status, reason, message = wait_for(ours_resolved, f"node {NODE} out of MediaAddressReady", TIMEOUT)
    # Other tests' Nodes share this API server: the condition is True unless one of them lacks it too.
    nodes = json.loads(k.cp.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    others = [n for n in nodes if "ExternalIP" not in json.dumps(n.get("status", {}).get("addresses"))]
    if others:
        first_other = others[0]["metadata"]["name"]
        assert (status, reason) == ("False", "NodeAddressMissing") and first_other in message, message
    else:
        assert (status, reason) == ("True", "NodeAddresses"), message


def test_the_hpa_scales_on_active_calls_and_both_workloads_have_a_budget(k: Cluster) -> None:
    hpa = wait_for(lambda: k.get("horizontalpodautoscaler", EDGE), "the edge HPA", TIMEOUT)
    metrics: list[dict[str, Any]] = hpa["spec"]["metrics"]
    assert metrics[0] == {
        "type": "Pods",
        "pods": {"metric": {"name": "trunkline_active_calls"},
                 "target": {"type": "AverageValue", "averageValue": "40"}},
    }  # fmt: skip
    assert metrics[1]["resource"]["name"] == "cpu"
    media = wait_for(lambda: k.get("daemonset", f"{PREFIX}-media"), "the relay DaemonSet", TIMEOUT)
    service = k.get("service", UDP) or {}
    relay_labels = media["spec"]["template"]["metadata"]["labels"]
    for name, pod_labels in ((EDGE, service["spec"]["selector"]), (f"{PREFIX}-media", relay_labels)):
        budget = wait_for(lambda name=name: k.get("poddisruptionbudget", name), f"PDB {name}", TIMEOUT)
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), name
        assert budget["metadata"]["ownerReferences"][0]["name"] == f"{PREFIX}-platform"


def test_the_operator_needed_no_more_rights(installed: tuple[Cluster, Path]) -> None:
    assert_clean_log(installed[1])
