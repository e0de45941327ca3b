"""Where peers reach the data plane: the edges' address from the UDP Service's load balancer, the
relays' from their Nodes, as the operator judges them (operator/addresses.py), the Trunk conditions
they become, and the HPA on active calls."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trunkline.core.manifests import ConfigSet
from trunkline.core.models import Trunk
from trunkline.operator.addresses import (
    AddressCheck,
    Addresses,
    ingress_host,
    media_address,
    relay_nodes,
    sip_address,
)
from trunkline.operator.builders import build_data_plane, build_edge_hpa
from trunkline.operator.platform import Platform
from trunkline.operator.status import build_trunk_status

NS = "voice"
NOW = "2026-01-01T00:00:00Z"


def platform(**overrides: Any) -> Platform:
    return Platform.model_validate(overrides)


def balanced(advertise: str | None = None, port: int = 5060) -> Platform:
    edge: dict[str, Any] = {"udpService": {"type": "LoadBalancer", "port": port}}
    if advertise is not None:
        edge["advertise"] = advertise
    return platform(edge=edge)


def service(*ingress: dict[str, Any]) -> dict[str, Any]:
    return {"status": {"loadBalancer": {"ingress": list(ingress)}}}


def node(name: str, addresses: dict[str, str], taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"taints": taints or []},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addresses.items()]},
    }


def test_a_load_balancer_without_advertise_advertises_its_ingress_ip_or_name() -> None:
    address, check = sip_address(balanced(port=5080), NS, service({"ip": "192.0.2.10"}))
    assert address == "192.0.2.10:5080"
    assert check == AddressCheck(True, "LoadBalancer", "192.0.2.10:5080, from Service trunkline-edge-udp")
    address, _ = sip_address(balanced("serviceExternal"), NS, service({"hostname": "LB-1.Example.NET."}))
    assert address == "lb-1.example.net:5060"
    address, _ = sip_address(balanced(), NS, service({"ip": "2001:db8::5"}, {"ip": "192.0.2.11"}))
    assert address == "[2001:db8::5]:5060"  # the first ingress, bracketed for HOST:PORT


@pytest.mark.parametrize(
    ("found", "reason", "words"),
    [
        (None, "ServiceAddressPending", "no load-balancer address yet"),
        ({"status": {}}, "ServiceAddressPending", "no load-balancer address yet"),
        (service(), "ServiceAddressPending", "status.loadBalancer.ingress is empty"),
        ({"status": {"loadBalancer": {"ingress": "x"}}}, "ServiceAddressPending", "no load-balancer"),
        (service({"ip": "0.0.0.0"}), "ServiceAddressUnusable", "cannot be reached"),
        (service({"ip": "not-an-ip"}), "ServiceAddressUnusable", "is not an IP address"),
        (service({"ip": "1" * 10000}), "ServiceAddressUnusable", "is not an IP address"),
        (service({"hostname": "bad_name..x"}), "ServiceAddressUnusable", "is not a DNS name"),
        (service({"hostname": "a" * 300}), "ServiceAddressUnusable", "is not a DNS name"),
        (service({"ports": [{"port": 1}]}), "ServiceAddressUnusable", "neither an ip nor a hostname"),
    ],
)
def test_no_usable_ingress_means_no_address_and_a_reason(found: Any, reason: str, words: str) -> None:
    address, check = sip_address(balanced(), NS, found)
    assert address is None
    assert check.ready is False and check.reason == reason and words in check.message
    assert "Service trunkline-edge-udp" in check.message and len(check.message) < 400


def test_without_a_load_balancer_the_platform_alone_decides() -> None:
    assert sip_address(platform(), NS, None) == (
        "trunkline-edge-udp.voice.svc:5060",
        AddressCheck(
            True, "ClusterName", "trunkline-edge-udp.voice.svc:5060: reached from inside the cluster only"
        ),
    )
    explicit = balanced("sip.example.net:5060")  # a LoadBalancer, but the value wins
    assert sip_address(explicit, NS, service())[0] == "sip.example.net:5060"
    assert sip_address(explicit, NS, service())[1].reason == "Configured"


def test_service_external_needs_a_load_balancer() -> None:
    with pytest.raises(ValidationError, match=r"serviceExternal needs edge\.udpService\.type LoadBalancer"):
        platform(edge={"advertise": "serviceExternal", "udpService": {"type": "NodePort"}})


def test_the_edge_deployment_waits_for_the_address_and_carries_it() -> None:
    pending = build_data_plane(balanced(), NS)
    assert "Deployment/trunkline-edge" not in {f"{o['kind']}/{o['metadata']['name']}" for o in pending}
    assert {"Service", "HorizontalPodAutoscaler"} <= {o["kind"] for o in pending}  # the Service is made

    def edge_env(address: str) -> tuple[list[dict[str, Any]], str]:
        [edge] = [o for o in build_data_plane(balanced(), NS, edge_address=address)
                  if o["kind"] == "Deployment" and o["metadata"]["name"] == "trunkline-edge"]  # fmt: skip
        template = edge["spec"]["template"]
        return template["spec"]["containers"][0]["env"], template["metadata"]["annotations"][
            "checksum/config"
        ]

    first_env, first_sum = edge_env("192.0.2.10:5060")
    second_env, second_sum = edge_env("lb.example.net:5060")
    assert {"name": "TRUNKLINE_EDGE_ADVERTISE", "value": "192.0.2.10:5060"} in first_env
    assert {"name": "TRUNKLINE_EDGE_ADVERTISE", "value": "lb.example.net:5060"} in second_env
    # The pod template changes (a rolling update of the edges) but not the runtime ConfigMap: the
    # other components do not restart for a new load-balancer address.
    assert first_sum == second_sum


def test_media_address_by_mode() -> None:
    assert media_address(platform(), None).reason == "PodIP"
    assert (
        media_address(platform(media={"advertise": "192.0.2.9", "replicas": 1}), None).reason == "Configured"
    )
    daemon = platform(media={"kind": "DaemonSet", "advertise": "nodeExternalIP", "serviceAccountName": "m"})
    assert media_address(daemon, None) == AddressCheck(
        None, "NodesUnreadable", "the operator could not list the Nodes"
    )
    assert media_address(daemon, []).reason == "NoNodes"
    good = [node("n1", {"InternalIP": "10.0.0.1", "ExternalIP": "192.0.2.1"})]
    assert media_address(daemon, good) == AddressCheck(
        True, "NodeAddresses", "nodeExternalIP on each of 1 node(s)"
    )


def test_nodes_without_the_address_are_named_and_counted() -> None:
    daemon = platform(media={"kind": "DaemonSet", "advertise": "nodeExternalIP", "serviceAccountName": "m"})
    nodes = [node("ok", {"ExternalIP": "192.0.2.1"}), node("v6-only", {"ExternalIP": "2001:db8::1"})]
    nodes += [node(f"bare-{i}", {"InternalIP": f"10.0.0.{i}"}) for i in range(7)]
    check = media_address(daemon, nodes)
    assert check.ready is False and check.reason == "NodeAddressMissing"
    assert check.message.startswith("8 of 9 node(s) give no media address for nodeExternalIP")
    assert "node v6-only has no usable ExternalIP (2001:db8::1 is not IPv4)" in check.message
    assert (
        "bare-3" in check.message and "bare-4" not in check.message and check.message.endswith("and 3 more")
    )


def test_only_nodes_a_relay_runs_on_count() -> None:
    tainted = node(
        "control-plane", {}, [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    )
    cordoned = node("cordoned", {}, [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}])
    preferring = node("soft", {}, [{"key": "x", "effect": "PreferNoSchedule"}])
    junk: Any = ["not a node", {"spec": {"taints": "junk"}}]
    kept = relay_nodes([tainted, cordoned, preferring, *junk])
    assert [n.get("metadata", {}).get("name") for n in kept] == ["cordoned", "soft", None]


def test_ingress_host_reads_only_the_first_entry() -> None:
    assert ingress_host(service({"ip": " 192.0.2.3 "}, {"ip": "junk"})) == "192.0.2.3"


def trunk() -> Trunk:
    metadata = {"name": "acme", "namespace": NS, "generation": 1}
    return Trunk.model_validate(
        {"apiVersion": "trunkline.io/v1alpha1", "kind": "Trunk", "metadata": metadata, "spec": {}}
    )


def test_the_checks_become_trunk_conditions() -> None:
    found = Addresses(
        AddressCheck(False, "ServiceAddressPending", "Service x has no load-balancer address yet"),
        AddressCheck(True, "PodIP", "each relay advertises its pod's own address"),
    )
    status = build_trunk_status(trunk(), ConfigSet(), now=NOW, addresses=found)
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["SipAddressReady"]["status"] == "False"
    assert by_type["SipAddressReady"]["reason"] == "ServiceAddressPending"
    assert by_type["MediaAddressReady"]["status"] == "True"
    assert by_type["Ready"]["status"] == "True"  # the trunk's own configuration is fine
    assert "SipAddressReady" not in {
        c["type"] for c in build_trunk_status(trunk(), ConfigSet(), now=NOW)["conditions"]
    }
    unknown = Addresses(found.sip, AddressCheck(None, "NodesUnreadable", "x" * 5000))
    media = {
        c["type"]: c
        for c in build_trunk_status(trunk(), ConfigSet(), now=NOW, addresses=unknown)["conditions"]
    }
    assert (
        media["MediaAddressReady"]["status"] == "Unknown"
        and len(media["MediaAddressReady"]["message"]) == 1024
    )


def test_the_hpa_scales_on_active_calls_beside_cpu() -> None:
    cpu = build_edge_hpa(platform(), NS)
    assert cpu is not None and [m["type"] for m in cpu["spec"]["metrics"]] == ["Resource"]
    calls = build_edge_hpa(
        platform(edge={"autoscaling": {"metric": "activeCalls", "activeCallsPerPod": 30}}), NS
    )
    assert calls is not None
    pods, resource = calls["spec"]["metrics"]
    assert pods == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "trunkline_active_calls"},
            "target": {"type": "AverageValue", "averageValue": "30"},
        },
    }
    assert resource["resource"]["name"] == "cpu"
    with pytest.raises(ValidationError):
        platform(edge={"autoscaling": {"metric": "memory"}})
    with pytest.raises(ValidationError):
        platform(edge={"autoscaling": {"activeCallsPerPod": 0}})


def test_the_platform_is_applied_again_sooner_while_the_edges_wait_for_their_address() -> None:
    media = AddressCheck(True, "PodIP", "")
    waiting = Addresses(AddressCheck(False, "ServiceAddressPending", ""), media)
    assert waiting.next_apply(60.0) == 10.0 and waiting.next_apply(5.0) == 5.0
    assert Addresses(AddressCheck(False, "ServiceAddressUnusable", ""), media).next_apply(60.0) == 10.0
    assert Addresses(AddressCheck(True, "LoadBalancer", ""), media).next_apply(60.0) == 60.0
    nodes_missing = Addresses(AddressCheck(True, "LoadBalancer", ""), AddressCheck(False, "NoNodes", ""))
    assert nodes_missing.next_apply(60.0) == 60.0  # the relays recheck their Node themselves
