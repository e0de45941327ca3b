"""NetworkPolicies of the data plane (`networkPolicies.enabled`, on by default): who may reach what.

- control: gRPC only from edges, relays and the operator; /metrics and probes (http) from anywhere.
- media: gRPC only from edges and the operator (Drain); RTP/RTCP (UDP, the port range) from anywhere.
- edge: SIP (UDP, TCP, TLS) and http from anywhere; nothing else.
- Redis (when `networkPolicies.redisPodSelector` names its pods, in the same namespace): only from
  trunkline pods of this installation (its operator included) and from Redis's own pods.
Each policy selects its pods and lists what they accept (Ingress); anything else is dropped by the
cluster's network plugin, if it enforces NetworkPolicies. Pods on the host network (the media
DaemonSet) are not subject to NetworkPolicies: there the relay's mTLS is what guards its gRPC.
"""

from __future__ import annotations

from typing import Any

from trunkline.operator.builders import MANAGER, Manifest, object_name, selector_labels
from trunkline.operator.platform import Platform


def _peer(platform: Platform, component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": selector_labels(platform, component)}}


def _port(port: int, protocol: str = "TCP", end: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"protocol": protocol, "port": port}
    if end is not None and end != port:
        rule["endPort"] = end
    return rule


def _policy(
    platform: Platform,
    namespace: str,
    name: str,
    selected: dict[str, str],
    ingress: list[dict[str, Any]],
    owner: dict[str, Any] | None,
) -> Manifest:
    metadata: dict[str, Any] = {
        "name": object_name(platform, name),
        "namespace": namespace,
        "labels": {**selector_labels(platform, "network-policy"), "app.kubernetes.io/managed-by": MANAGER},
    }
    if owner:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {"podSelector": {"matchLabels": selected}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


POLICIES = ("control", "media", "edge", "redis")


def stale_policies(platform: Platform, namespace: str) -> list[tuple[str, str, str, str]]:
    """The policies a platform without them (or without a Redis selector) leaves behind."""
    names: tuple[str, ...] = ()
    if not platform.networkPolicies.enabled:
        names = POLICIES
    elif not platform.networkPolicies.redisPodSelector:
        names = ("redis",)
    return [("networking.k8s.io/v1", "NetworkPolicy", namespace, object_name(platform, n)) for n in names]


def build_network_policies(
    platform: Platform,
    namespace: str,
    redis_pod_selector: dict[str, str] | None = None,
    owner: dict[str, Any] | None = None,
) -> list[Manifest]:
    http = {"ports": [_port(platform.httpPort)]}  # probes and scraping, from anywhere
    control = _policy(
        platform, namespace, "control", selector_labels(platform, "control"),
        [{"from": [_peer(platform, c) for c in ("edge", "media", "operator")],
          "ports": [_port(platform.control.port)]}, http],
        owner,
    )  # fmt: skip
    media = platform.media
    relay = _policy(
        platform, namespace, "media", selector_labels(platform, "media"),
        [{"from": [_peer(platform, c) for c in ("edge", "operator")], "ports": [_port(media.port)]},
         {"ports": [_port(media.portRange.start, "UDP", media.portRange.end)]}, http],
        owner,
    )  # fmt: skip
    edge = platform.edge
    sip = [_port(edge.sipPort, "UDP"), _port(edge.sipPort)]
    if edge.tls:
        sip.append(_port(edge.tls.port))
    edges = _policy(
        platform, namespace, "edge", selector_labels(platform, "edge"), [{"ports": sip}, http], owner
    )
    policies = [control, relay, edges]
    if redis_pod_selector:
        ours = {"app.kubernetes.io/name": "trunkline", "app.kubernetes.io/instance": platform.name}
        # Redis's own pods (replicas, sentinels) still reach each other.
        peers = [
            {"podSelector": {"matchLabels": ours}},
            {"podSelector": {"matchLabels": dict(redis_pod_selector)}},
        ]
        only_ours = [{"from": peers}]
        policies.append(_policy(platform, namespace, "redis", dict(redis_pod_selector), only_ours, owner))
    return policies
