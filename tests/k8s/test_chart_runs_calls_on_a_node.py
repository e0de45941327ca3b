"""The chart on a real node: the image built from this repo, helm install, a Redis, the examples;
operator, control, two edges, a relay and the CDR exporter get Ready through their real probes; a PBX
on the node calls through the edge's Services (UDP ClusterIP and NodePort, TCP) to a carrier on the
node, with audio both ways through the relay; an edge pod force-deleted mid-call leaves the call to
the other edge; `helm test` passes; `helm uninstall` leaves nothing of the data plane."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.wait import wait_for
from trunkline.sip.message import Response
from trunkline.sip.ua import UserAgent

from .node import NODE_IP, Node
from .platform import (
    CALLEE,
    CALLER,
    CARRIER_IP,
    CARRIER_PORT,
    NAMESPACE,
    PBX_IP,
    PREFIX,
    READY_TIMEOUT,
    RELEASE,
    Platform,
    call_with_audio,
    cdrs_of,
    edge_pod_of,
    is_ready,
    sdp_for,
)


def test_the_data_plane_is_ready_through_its_real_probes(platform: Platform, node: Node) -> None:
    for component in ("operator", "control", "edge", "media", "cdr"):
        for pod in platform.pods(component):
            assert is_ready(pod), pod["status"]
            spec = pod["spec"]["containers"][0]
            if component != "operator":
                assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert spec["image"] == node.image
            assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    print(f"node up in {node.startup_seconds:.1f} s")


@pytest.mark.parametrize("service", ["udp-clusterip", "udp-nodeport", "tcp-clusterip"])
async def test_a_pbx_on_the_node_calls_a_carrier_with_audio_both_ways(
    platform: Platform, node: Node, service: str
) -> None:
    target, transport = {
        "udp-clusterip": ((platform.udp_ip, 5060), "udp"),
        "udp-nodeport": ((NODE_IP, platform.udp_node_port), "udp"),
        "tcp-clusterip": ((platform.tcp_ip, 5060), "tcp"),
    }[service]
    try:
        result = await call_with_audio(target, transport)
    except BaseException:
        print(node.diagnostics(NAMESPACE))
        raise
    assert result["status"] == 200, node.diagnostics(NAMESPACE)
    relay_ips = {p["status"]["podIP"] for p in platform.pods("media")}
    (to_pbx, to_carrier) = result["relay"]
    assert to_pbx[0] in relay_ips and to_carrier[0] in relay_ips  # media through the relay pod
    assert result["carrier_heard"] == result["pbx_sent"]  # every packet, both ways, byte for byte
    assert result["pbx_heard"] == result["carrier_sent"]
    assert PBX_IP.encode() not in result["invite_to_carrier"]  # the PBX's address stays hidden
    assert result["carrier_byes"] == 1


@pytest.mark.parametrize("hangs_up", ["pbx", "carrier"])
async def test_an_edge_pod_force_deleted_mid_call_leaves_the_call_to_the_other_edge(
    platform: Platform, node: Node, hangs_up: str
) -> None:
    carrier = UserAgent(host=CARRIER_IP, sdp=sdp_for(40000))
    pbx = UserAgent(host=PBX_IP, sdp=sdp_for(40002))
    seen: dict[str, Any] = {}
    target = (platform.udp_ip, 5060)

    async def kill_the_edge_then_hang_up(answer: Response) -> None:
        [(call_id, _, _)] = pbx.dialogs
        seen["call_id"] = call_id
        victim = edge_pod_of(platform, pbx.stack.local_address("udp")[1])  # type: ignore[index]
        seen["victim"] = victim
        victim_ip = next(
            p["status"]["podIP"] for p in platform.pods("edge") if p["metadata"]["name"] == victim
        )
        await asyncio.to_thread(
            node.kubectl,
            "delete",
            "pod",
            "-n",
            NAMESPACE,
            victim,
            "--grace-period=0",
            "--force",
            "--wait=false",
        )

        def gone_from_the_service() -> bool:
            slices = node.get(
                "endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={PREFIX}-edge-udp"
            )
            addresses = {a for s in slices["items"] for e in s.get("endpoints") or [] for a in e["addresses"]}
            return victim_ip not in addresses and bool(addresses)

        await asyncio.to_thread(wait_for, gone_from_the_service, "the dead edge out of the UDP Service", 120)
        if hangs_up == "carrier":
            [dialog] = carrier.dialogs.values()
            bye = dialog.create_request("BYE", carrier._via("udp"))
            carrier.dialogs.clear()
            # The carrier reaches the edges where their Record-Route points: the Service.
            seen["carrier_bye"] = (await carrier.request(bye, target, "udp")).status

    try:
        await carrier.start(CARRIER_PORT)
        await pbx.start(0)
        status = await pbx.call(
            f"sip:{CALLEE}@{target[0]}:{target[1]}", target, "udp", from_user=CALLER,
            during=kill_the_edge_then_hang_up,
        )  # fmt: skip
        if hangs_up == "pbx":
            wait_deadline = time.monotonic() + 20
            while not carrier.byes and time.monotonic() < wait_deadline:
                await asyncio.sleep(0.1)
    except BaseException:
        print(node.diagnostics(NAMESPACE))
        raise
    finally:
        await carrier.close()
        await pbx.close()
    assert status == 200
    if hangs_up == "pbx":
        assert [s.what for s in pbx.seen][-1] == "200 BYE", pbx.seen  # answered by the surviving edge
        assert carrier.byes == 1
    else:
        assert seen["carrier_bye"] == 200
        assert pbx.byes == 1
    # Billed once: the CDR exporter's pod log (its JSON lines sink) has exactly one record of the call.
    wait_for(lambda: cdrs_of(platform, node, seen["call_id"]), "the call's CDR from the exporter pod", 120)
    time.sleep(3)  # a duplicate would come with the same batch or the next one
    assert len(found := cdrs_of(platform, node, seen["call_id"])) == 1, found
    wait_for(lambda: platform.ready("edge", 2), "the edge Deployment back to 2 Ready pods", READY_TIMEOUT)


def test_helm_test_passes(platform: Platform, node: Node) -> None:
    out = node.helm("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "5m")
    assert "Phase:          Succeeded" in out or "Succeeded" in out, out


@pytest.mark.k8s_uninstalls
def test_deleting_the_trunk_and_uninstalling_leave_nothing(platform: Platform, node: Node) -> None:
    node.kubectl("delete", "-n", NAMESPACE, "trunks.trunkline.io", "acme", "--timeout=300s")
    assert node.get("trunks.trunkline.io", "-n", NAMESPACE)["items"] == []
    node.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m")
    kinds = (
        "deployments,daemonsets,services,configmaps,secrets,hpa,pdb,pods,serviceaccounts,roles,rolebindings"
    )

    def leftovers() -> list[str]:
        items = node.get(kinds, "-n", NAMESPACE, "-l", "app.kubernetes.io/name=trunkline")["items"]
        names = [f"{i['kind']}/{i['metadata']['name']}" for i in items]
        return names

    wait_for(lambda: not leftovers() or None, "nothing of the release left", READY_TIMEOUT)
