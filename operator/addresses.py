"""Where peers reach the data plane, as the operator reads it from the API: the edges' SIP address
(the UDP Service's load balancer, with `edge.advertise: serviceExternal`) and whether every node a
relay runs on gives it a media address (the node-based `media.advertise` modes).

Pure: the reconciler fetches the Service and the Nodes, these functions judge them. What a cloud
controller or a user wrote there is hostile input: only an IP address or a DNS name is taken, bounded,
and a problem is a message, never an exception out of here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from trunkline.core import media_advertise
from trunkline.core.addresses import BROADCAST
from trunkline.core.media_advertise import AdvertiseMode, UnusableAddress
from trunkline.operator.platform import MediaKind, Platform

# The Trunk conditions these become (operator/status.py), and their reasons.
SIP_ADDRESS_READY = "SipAddressReady"
MEDIA_ADDRESS_READY = "MediaAddressReady"
CONFIGURED = "Configured"  # an address written in the values
CLUSTER_NAME = "ClusterName"  # the UDP Service's cluster DNS name: peers inside the cluster only
LOAD_BALANCER = "LoadBalancer"  # read from the Service's status
SERVICE_ADDRESS_PENDING = "ServiceAddressPending"
SERVICE_ADDRESS_UNUSABLE = "ServiceAddressUnusable"
POD_IP = "PodIP"
NODE_ADDRESSES = "NodeAddresses"
NODE_ADDRESS_MISSING = "NodeAddressMissing"
NO_NODES = "NoNodes"
NODES_UNREADABLE = "NodesUnreadable"

MAX_HOSTNAME = 253
MAX_IP_TEXT = 64
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
HOSTNAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")
MAX_NODES = 10000  # looked at (a cluster has at most 5000)
NODES_NAMED = 5  # in a message; the rest are counted
# Taints a DaemonSet's pods tolerate by themselves (the DaemonSet controller adds these tolerations):
# a node carrying only these still runs a relay.
DAEMONSET_TOLERATED = frozenset({
    "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure", "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable", "node.kubernetes.io/network-unavailable",
})  # fmt: skip
# What media binds (builders: --media-listen 0.0.0.0): the address family a node must give.
MEDIA_IP_VERSION = 4
# While the edges wait for their load balancer's address, the platform is re-applied this often (at
# most), so they are deployed soon after the cloud writes it rather than at the next resync.
ADDRESS_RECHECK = 10.0


@dataclass(frozen=True)
class AddressCheck:
    """One condition: `ready` None when the operator cannot tell."""

    ready: bool | None
    reason: str
    message: str


@dataclass(frozen=True)
class Addresses:
    """What the operator found at its last platform reconcile."""

    sip: AddressCheck
    media: AddressCheck

    def next_apply(self, resync: float) -> float:
        """Seconds until the platform is applied again."""
        waiting = self.sip.reason in (SERVICE_ADDRESS_PENDING, SERVICE_ADDRESS_UNUSABLE)
        return min(resync, ADDRESS_RECHECK) if waiting else resync


def cluster_address(platform: Platform, namespace: str) -> str:
    return f"{platform.name}-edge-udp.{namespace}.svc:{platform.edge.udpService.port}"


def ingress_host(service: dict[str, Any] | None) -> str:
    """The first load-balancer ingress of the Service (its IP, else its host name), normalised;
    UnusableAddress saying why there is none."""
    status = (service or {}).get("status")
    balancer = status.get("loadBalancer") if isinstance(status, dict) else None
    entries = balancer.get("ingress") if isinstance(balancer, dict) else None
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise LookupError("no load-balancer address yet (status.loadBalancer.ingress is empty)")
    first = entries[0]
    ip, hostname = first.get("ip"), first.get("hostname")
    if isinstance(ip, str) and ip:
        return _reachable_ip(ip[:MAX_IP_TEXT])
    if isinstance(hostname, str) and hostname:
        if len(hostname) > MAX_HOSTNAME or not HOSTNAME.match(hostname):
            raise UnusableAddress(f"its load-balancer host name {hostname[:64]!r} is not a DNS name")
        return hostname.rstrip(".").lower()
    raise UnusableAddress("its load-balancer ingress has neither an ip nor a hostname")


def _reachable_ip(text: str) -> str:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise UnusableAddress(f"its load-balancer IP {text!r} is not an IP address") from None
    if address.is_unspecified or address.is_multicast or address == BROADCAST:
        raise UnusableAddress(f"its load-balancer IP {address} cannot be reached (unspecified or multicast)")
    return str(address)


def with_port(host: str, port: int) -> str:
    """HOST:PORT as the edge's --advertise takes it ([V6]:PORT for an IPv6 address)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass  # a host name
    return f"{host}:{port}"


def sip_address(
    platform: Platform, namespace: str, service: dict[str, Any] | None
) -> tuple[str | None, AddressCheck]:
    """What the edges advertise (None: nothing yet; the edge Deployment waits) and the condition.
    `service`: the UDP Service as read from the API (None: not there, or not read)."""
    edge = platform.edge
    if not edge.advertise_from_service:
        if edge.advertise:
            return edge.advertise, AddressCheck(True, CONFIGURED, f"edge.advertise {edge.advertise}")
        name = cluster_address(platform, namespace)
        return name, AddressCheck(True, CLUSTER_NAME, f"{name}: reached from inside the cluster only")
    service_name = f"Service {platform.name}-edge-udp"
    try:
        host = ingress_host(service)
    except LookupError as exc:
        return None, AddressCheck(
            False, SERVICE_ADDRESS_PENDING,
            f"{service_name} has {exc}: the edges are not deployed or changed until it has one",
        )  # fmt: skip
    except UnusableAddress as exc:
        return None, AddressCheck(
            False, SERVICE_ADDRESS_UNUSABLE,
            f"{service_name}: {exc}: the edges are not deployed or changed until it gives a usable one",
        )  # fmt: skip
    address = with_port(host, edge.udpService.port)
    return address, AddressCheck(True, LOAD_BALANCER, f"{address}, from {service_name}")


def relay_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Nodes a relay DaemonSet (which has no tolerations of its own) runs on."""
    found = []
    for node in nodes[:MAX_NODES]:
        taints = (node.get("spec") or {}).get("taints") if isinstance(node, dict) else None
        repelled = any(
            isinstance(t, dict)
            and t.get("effect") in ("NoSchedule", "NoExecute")
            and t.get("key") not in DAEMONSET_TOLERATED
            for t in (taints if isinstance(taints, list) else [])
        )
        if isinstance(node, dict) and not repelled:
            found.append(node)
    return found


def media_address(platform: Platform, nodes: list[dict[str, Any]] | None) -> AddressCheck:
    """Whether every relay gets an address for SDP. `nodes`: the cluster's Nodes, read only for a
    node-based `media.advertise` (None there: they could not be read)."""
    spec = media_advertise.parse(platform.media.advertise)
    if spec.mode is AdvertiseMode.POD_IP:
        where = "node's" if platform.media.kind is MediaKind.DAEMON_SET else "pod's"
        return AddressCheck(True, POD_IP, f"each relay advertises its {where} own address")
    if spec.mode is AdvertiseMode.ADDRESS:
        return AddressCheck(True, CONFIGURED, f"media.advertise {spec}")
    if nodes is None:
        return AddressCheck(None, NODES_UNREADABLE, "the operator could not list the Nodes")
    candidates = relay_nodes(nodes)
    if not candidates:
        return AddressCheck(False, NO_NODES, "no Node a relay can run on")
    problems = []
    for node in candidates:
        try:
            media_advertise.resolve(spec, node, None, MEDIA_IP_VERSION)
        except UnusableAddress as exc:
            problems.append(str(exc))
    if not problems:
        return AddressCheck(True, NODE_ADDRESSES, f"{spec} on each of {len(candidates)} node(s)")
    named = "; ".join(problems[:NODES_NAMED])
    more = f"; and {len(problems) - NODES_NAMED} more" if len(problems) > NODES_NAMED else ""
    return AddressCheck(
        False, NODE_ADDRESS_MISSING,
        f"{len(problems)} of {len(candidates)} node(s) give no media address for {spec} (their relays "
        f"refuse sessions): {named}{more}",
    )  # fmt: skip
