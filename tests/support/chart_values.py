"""Every chart value set to something other than its default, and where each must show up: shared by
the unit test (helm template + the operator's builders) and the e2e test (what the operator writes)."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.helm import render
from trunkline.core import pki
from trunkline.operator.builders import build_data_plane
from trunkline.operator.grpc_certs import cert_manager_certificates, certificate_updates
from trunkline.operator.network_policies import build_network_policies
from trunkline.operator.nonce import nonce_secret_update
from trunkline.operator.platform import parse_platform

# Every leaf value, not its default. Values that hide others (autoscaling off hides min/max, Sentinel
# hides the URL, live counts off hide their interval) are set in SECOND, rendered on their own.
FIRST: dict[str, Any] = {
    "fullnameOverride": "voip",
    "image.repository": "registry.example/tl",
    "image.tag": "9.9.9",
    "image.pullPolicy": "Always",
    "imagePullSecrets": ["pull-me"],
    "operator.scope": "namespace",
    "operator.drainGracePeriodSeconds": 31,
    "operator.resyncSeconds": 32,
    "operator.liveCounts.intervalSeconds": 33,
    "operator.verbose": True,
    "operator.healthPort": 8181,
    "operator.resources.requests": {"cpu": 1, "memory": "111Mi"},
    "operator.resources.limits": {"memory": "222Mi"},
    "operator.nodeSelector": {"pool": "ops"},
    "operator.tolerations": [{"key": "ops", "operator": "Exists"}],
    "operator.affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z9"]}]}
                ]
            }
        }
    },
    "httpPort": 8282,
    "logLevel": "debug",
    "redis.url": "redis://cache.example:6380/3",
    "redis.sentinel.masterName": "primary9",
    "redis.passwordSecret.name": "redis-auth9",
    "redis.passwordSecret.key": "pw9",
    "redis.caSecret.name": "redis-ca9",
    "redis.caSecret.key": "ca9",
    "control.replicas": 5,
    "control.port": 9010,
    "control.resources.requests": {"cpu": "101m"},
    "control.resources.limits": {"memory": "301Mi"},
    "edge.sipPort": 5070,
    "edge.advertise": "sip.example.net:5080",
    "edge.tls.enabled": True,
    "edge.tls.port": 5071,
    "edge.tls.servicePort": 5091,
    "edge.tls.secretName": "edge-cert9",
    "edge.udpService.type": "LoadBalancer",
    "edge.udpService.port": 5062,
    "edge.udpService.externalTrafficPolicy": "Cluster",
    "edge.udpService.annotations": {"lb.example/udp": "yes"},
    "edge.tcpService.type": "NodePort",
    "edge.tcpService.port": 5063,
    "edge.tcpService.externalTrafficPolicy": "Cluster",
    "edge.tcpService.annotations": {"lb.example/tcp": "yes"},
    "edge.autoscaling.minReplicas": 3,
    "edge.autoscaling.maxReplicas": 7,
    "edge.autoscaling.targetCPUUtilizationPercentage": 55,
    "edge.autoscaling.metric": "activeCalls",
    "edge.autoscaling.activeCallsPerPod": 41,
    "edge.resources.requests": {"cpu": 2},
    "edge.resources.limits": {"memory": "777Mi"},
    "edge.nonceKeyRotationHours": 5,
    "edge.emergency.countries": ["UK", "AU"],
    "edge.emergency.numbers": ["9911", "19112"],
    "edge.trunkDefaults.channels": 31,
    "edge.trunkDefaults.callsPerSecond": 6.5,
    "edge.trunkDefaults.allowedPrefixes": ["+49", "+33"],
    "media.kind": "DaemonSet",
    "media.port": 9011,
    "media.portRange.start": 30000,
    "media.portRange.end": 30999,
    "media.resources.requests": {"cpu": "0.5"},
    "media.resources.limits": {"memory": "555Mi"},
    "media.advertise": "nodeAnnotation:example.net/public-ip",
    "mediaDenyCidrs": ["10.42.0.0/16", "fd00:42::/64"],
    "cdr.replicas": 3,
    "cdr.stream": "billing:cdr9",
    "cdr.batch": 77,
    "cdr.claimIdleSeconds": 61,
    "cdr.jsonl": False,
    "cdr.postgresDsnSecret.key": "dsn9",
    "cdr.webhook.secretRef.key": "sig9",
    "cdr.resources.requests": {"cpu": "51m"},
    "cdr.resources.limits": {"memory": "129Mi"},
    "telemetry.otlpProtocol": "http/protobuf",
    "telemetry.sampler": "traceidratio",
    "telemetry.samplerArg": 0.25,
    "telemetry.resourceAttributes": {"deployment.environment.name": "staging9"},
    "telemetry.logFormat": "text",
    "telemetry.scrapeAnnotations": False,
    "internalTls.certificateLifetimeSeconds": 86400,
    "networkPolicies.redisPodSelector": {"app": "redis9"},
    "metrics.serviceMonitor.enabled": True,  # the e2e cluster gets a ServiceMonitor CRD for it
    "metrics.serviceMonitor.interval": "17s",
    "metrics.serviceMonitor.labels": {"release": "prom9"},
}
# Required fields (no default, so not in the coverage list) that FIRST's values need beside them.
COMPANIONS: dict[str, Any] = {
    "cdr.postgresDsnSecret.name": "pg9",
    "cdr.webhook.url": "https://billing.example/cdr",
    "cdr.webhook.secretRef.name": "hook9",
    "telemetry.otlpEndpoint": "http://jaeger.example:4317",  # checked with otlpProtocol
}
FIRST.update(COMPANIONS)
SECOND: dict[str, Any] = {
    "operator.liveCounts.enabled": False,
    "redis.sentinel.addresses": ["s1.example:26379"],
    "edge.replicas": 4,
    "edge.autoscaling.enabled": False,
    "media.kind": "Deployment",
    "media.advertise": "192.0.2.9",  # a literal address: one relay (a node mode needs the DaemonSet)
    "media.replicas": 1,
    "cdr.enabled": False,
    "operator.namespaces": ["tenant9"],  # not in FIRST: the e2e installs FIRST, without that namespace
    "internalTls.issuer": "cert-manager",  # the e2e cluster has no cert-manager
    "internalTls.certManagerIssuer.name": "ca-issuer9",
    "internalTls.certManagerIssuer.kind": "Issuer",
    "internalTls.certManagerIssuer.group": "example.io",
    "networkPolicies.enabled": False,
}
NS = "voice"


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def objects(flat: dict[str, Any], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """`Kind/name` -> object, of what helm renders and what the operator builds from its platform."""
    values = tmp_path / f"values-{len(flat)}.yaml"
    values.write_text(yaml.safe_dump(nested(flat)))
    docs = render(namespace=NS, values=values)
    found = {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}
    platform = parse_platform(next(d for d in docs if d["metadata"]["name"].endswith("-platform"))["data"])
    found.update({f"{o['kind']}/{o['metadata']['name']}": o for o in build_data_plane(platform, NS)})
    # What the operator writes besides (operator/reconcile.py): NetworkPolicies, cert-manager Certificates.
    lifetime = datetime.timedelta(seconds=platform.internalTls.certificateLifetimeSeconds)
    extra = []
    if platform.networkPolicies.enabled:
        extra += build_network_policies(platform, NS, platform.networkPolicies.redisPodSelector)
    if (issuer := platform.internalTls.certManagerIssuer) is not None:
        extra += cert_manager_certificates(platform, NS, issuer.model_dump(), lifetime)
    else:
        extra += certificate_updates(
            platform, NS, lambda _: None, lifetime, datetime.datetime.now(datetime.UTC)
        )
    found.update({f"{o['kind']}/{o['metadata']['name']}": o for o in extra})
    found["Platform/"] = platform.model_dump(mode="json")
    secret = nonce_secret_update(platform, NS, {"metadata": {"annotations": {
        "trunkline.io/nonce-key-rotated-at": "0"}}, "data": {"keys": "azE="}}, now=6 * 3600.0)  # fmt: skip
    found["NonceDueAfter6h/"] = {"due": secret is not None}
    return found


def matches(node: Any, wanted: Any) -> bool:
    """`node` is `wanted`, or a dict holding at least `wanted`'s keys with matching values."""
    if isinstance(wanted, dict) and isinstance(node, dict):
        return all(key in node and matches(node[key], value) for key, value in wanted.items())
    return bool(node == wanted)


def holds(node: Any, wanted: Any) -> bool:
    """`wanted` is somewhere in `node` (a value, a substring, or a part of a sub-object)."""
    if matches(node, wanted) or (isinstance(wanted, str) and isinstance(node, str) and wanted in node):
        return True
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return any(holds(child, wanted) for child in children)


Check = tuple[str, Any]  # (Kind/name of the object, what must be in it)
OP, EDGE, CTL = "Deployment/voip-operator", "Deployment/voip-edge", "Deployment/voip-control"
MEDIA_DS = "DaemonSet/voip-media"
CDR = "Deployment/voip-cdr"
WORKLOADS = (OP, EDGE, CTL, MEDIA_DS)
CHECKS: dict[str, Check | Callable[[dict[str, dict[str, Any]]], bool]] = {
    "fullnameOverride": ("Deployment/voip-control", "voip-control"),
    "image.repository": (EDGE, "registry.example/tl:9.9.9"),
    "image.tag": (OP, "registry.example/tl:9.9.9"),
    "image.pullPolicy": lambda o: all('"imagePullPolicy": "Always"' in json.dumps(o[k]) for k in WORKLOADS),
    "imagePullSecrets": lambda o: all(holds(o[k], [{"name": "pull-me"}]) for k in WORKLOADS),
    "operator.scope": lambda o: (
        "Role/voice-voip-operator" in o and "ClusterRole/voice-voip-operator" not in o
    ),
    "operator.drainGracePeriodSeconds": (OP, "--drain-grace=31"),
    "operator.resyncSeconds": (OP, "--resync=32"),
    "operator.liveCounts.intervalSeconds": (OP, "--counts-interval=33"),
    "operator.verbose": (OP, "--verbose"),
    "operator.healthPort": (OP, "--liveness=http://0.0.0.0:8181/healthz"),
    "operator.resources.requests": (OP, {"cpu": 1, "memory": "111Mi"}),
    "operator.resources.limits": (OP, {"memory": "222Mi"}),
    "operator.nodeSelector": (OP, {"pool": "ops"}),
    "operator.tolerations": (OP, [{"key": "ops", "operator": "Exists"}]),
    "operator.affinity": (OP, "z9"),
    "httpPort": (EDGE, {"name": "http", "containerPort": 8282, "protocol": "TCP"}),
    "logLevel": lambda o: holds(o[OP], "--log-level=debug") and holds(o["ConfigMap/voip-runtime"], "debug"),
    "redis.url": ("ConfigMap/voip-runtime", "redis://cache.example:6380/3"),
    "redis.passwordSecret.name": (EDGE, {"name": "redis-auth9", "key": "pw9"}),
    "redis.passwordSecret.key": (MEDIA_DS, {"name": "redis-auth9", "key": "pw9"}),
    "redis.caSecret.name": (EDGE, {"secretName": "redis-ca9"}),
    "redis.caSecret.key": (MEDIA_DS, {"items": [{"key": "ca9", "path": "ca.crt"}]}),
    "internalTls.certificateLifetimeSeconds": lambda o: (
        (
            pki.validity(_secret_file(o["Secret/voip-grpc-edge"], "tls.crt"))[1]
            - pki.validity(_secret_file(o["Secret/voip-grpc-edge"], "tls.crt"))[0]
        ).total_seconds()
        < 86400 * 1.2
    ),
    "networkPolicies.redisPodSelector": (
        "NetworkPolicy/voip-redis",
        {"podSelector": {"matchLabels": {"app": "redis9"}}},
    ),
    "control.replicas": (CTL, {"replicas": 5}),
    "control.port": (CTL, "0.0.0.0:9010"),
    "control.resources.requests": (CTL, {"cpu": "101m"}),
    "control.resources.limits": (CTL, {"memory": "301Mi"}),
    "edge.sipPort": (EDGE, "0.0.0.0:5070"),
    "edge.advertise": (EDGE, {"name": "TRUNKLINE_EDGE_ADVERTISE", "value": "sip.example.net:5080"}),
    "edge.tls.enabled": (EDGE, "--tls-listen"),
    "edge.tls.port": (EDGE, "0.0.0.0:5071"),
    "edge.tls.servicePort": ("Service/voip-edge-tcp", 5091),
    "edge.tls.secretName": (EDGE, {"secretName": "edge-cert9"}),
    "edge.udpService.type": ("Service/voip-edge-udp", "LoadBalancer"),
    "edge.udpService.port": ("Service/voip-edge-udp", 5062),
    "edge.udpService.externalTrafficPolicy": ("Service/voip-edge-udp", {"externalTrafficPolicy": "Cluster"}),
    "edge.udpService.annotations": ("Service/voip-edge-udp", {"lb.example/udp": "yes"}),
    "edge.tcpService.type": ("Service/voip-edge-tcp", "NodePort"),
    "edge.tcpService.port": ("Service/voip-edge-tcp", 5063),
    "edge.tcpService.externalTrafficPolicy": ("Service/voip-edge-tcp", {"externalTrafficPolicy": "Cluster"}),
    "edge.tcpService.annotations": ("Service/voip-edge-tcp", {"lb.example/tcp": "yes"}),
    "edge.autoscaling.minReplicas": ("HorizontalPodAutoscaler/voip-edge", {"minReplicas": 3}),
    "edge.autoscaling.maxReplicas": ("HorizontalPodAutoscaler/voip-edge", 7),
    "edge.autoscaling.targetCPUUtilizationPercentage": ("HorizontalPodAutoscaler/voip-edge", 55),
    "edge.autoscaling.metric": (
        "HorizontalPodAutoscaler/voip-edge",
        {"type": "Pods", "pods": {"metric": {"name": "trunkline_active_calls"}}},
    ),
    "edge.autoscaling.activeCallsPerPod": (
        "HorizontalPodAutoscaler/voip-edge",
        {"target": {"type": "AverageValue", "averageValue": "41"}},
    ),
    "edge.resources.requests": (EDGE, {"cpu": "2"}),
    "edge.resources.limits": (EDGE, {"memory": "777Mi"}),
    "edge.nonceKeyRotationHours": ("NonceDueAfter6h/", {"due": True}),  # 5 h, not 24 h
    "edge.emergency.countries": lambda o: '"--emergency-countries", "UK,AU"' in json.dumps(o[EDGE]),
    "edge.emergency.numbers": lambda o: all(
        f'"--emergency-number", "{n}"' in json.dumps(o[EDGE]) for n in ("9911", "19112")
    ),
    "edge.trunkDefaults.channels": lambda o: '"--default-channels", "31"' in json.dumps(o[EDGE]),
    "edge.trunkDefaults.callsPerSecond": lambda o: (
        '"--default-calls-per-second", "6.5"' in json.dumps(o[EDGE])
    ),
    "edge.trunkDefaults.allowedPrefixes": lambda o: all(  # each prefix as one flag
        f'"--default-allowed-prefix", "{prefix}"' in json.dumps(o[EDGE]) for prefix in ("+49", "+33")
    ),
    "media.kind": (MEDIA_DS, {"hostNetwork": True}),
    "media.port": (MEDIA_DS, "$(POD_IP):9011"),  # host network: the pod's address only
    "media.portRange.start": (MEDIA_DS, "30000-30999"),
    "media.portRange.end": (MEDIA_DS, "30000-30999"),
    "media.resources.requests": (MEDIA_DS, {"cpu": "0.5"}),
    "media.resources.limits": (MEDIA_DS, {"memory": "555Mi"}),
    "media.advertise": lambda o: (  # read from the Node: a token, its name, the right to get nodes
        '"--advertise", "nodeAnnotation:example.net/public-ip"' in json.dumps(o[MEDIA_DS])
        and holds(o[MEDIA_DS], {"serviceAccountName": "voip-media", "automountServiceAccountToken": True})
        and holds(o[MEDIA_DS], {"fieldRef": {"fieldPath": "spec.nodeName"}})
        and holds(o["ClusterRole/voice-voip-media"], {"resources": ["nodes"], "verbs": ["get"]})
        and holds(o["ClusterRoleBinding/voice-voip-media"], {"name": "voip-media", "namespace": "voice"})
        and "ServiceAccount/voip-media" in o
    ),
    "mediaDenyCidrs": lambda o: all(  # each network as one flag, for the edge and the relay
        f'"--media-deny-cidr", "{cidr}"' in json.dumps(o[k])
        for k in (EDGE, MEDIA_DS)
        for cidr in ("10.42.0.0/16", "fd00:42::/64")
    ),
    "cdr.replicas": (CDR, {"replicas": 3}),
    "cdr.stream": lambda o: (
        holds(o[CDR], "billing:cdr9") and holds(o["ConfigMap/voip-runtime"], "billing:cdr9")
    ),
    "cdr.batch": lambda o: (
        "--batch 77" in " ".join(o[CDR]["spec"]["template"]["spec"]["containers"][0]["args"])
    ),
    "cdr.claimIdleSeconds": lambda o: (
        "--claim-idle 61" in " ".join(o[CDR]["spec"]["template"]["spec"]["containers"][0]["args"])
    ),
    "cdr.jsonl": lambda o: not holds(o[CDR], "--jsonl"),
    "cdr.postgresDsnSecret.key": (CDR, {"name": "pg9", "key": "dsn9"}),
    "cdr.webhook.secretRef.key": (CDR, {"name": "hook9", "key": "sig9"}),
    "cdr.resources.requests": (CDR, {"cpu": "51m"}),
    "cdr.resources.limits": (CDR, {"memory": "129Mi"}),
    "telemetry.otlpProtocol": (
        "ConfigMap/voip-runtime",
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger.example:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        },
    ),
    "telemetry.sampler": ("ConfigMap/voip-runtime", {"OTEL_TRACES_SAMPLER": "traceidratio"}),
    "telemetry.samplerArg": ("ConfigMap/voip-runtime", {"OTEL_TRACES_SAMPLER_ARG": "0.25"}),
    "telemetry.resourceAttributes": ("ConfigMap/voip-runtime", "deployment.environment.name=staging9"),
    "telemetry.logFormat": ("ConfigMap/voip-runtime", {"TRUNKLINE_LOG_FORMAT": "text"}),
    "metrics.serviceMonitor.enabled": lambda o: "ServiceMonitor/voip" in o and "Service/voip-metrics" in o,
    "metrics.serviceMonitor.interval": ("ServiceMonitor/voip", {"interval": "17s"}),
    "metrics.serviceMonitor.labels": ("ServiceMonitor/voip", {"labels": {"release": "prom9"}}),
    "telemetry.scrapeAnnotations": lambda o: (
        not any(holds(o[k], "prometheus.io/scrape") for k in (EDGE, CTL, MEDIA_DS))
    ),
}
SECOND_CHECKS: dict[str, Callable[[dict[str, dict[str, Any]]], bool]] = {
    "operator.liveCounts.enabled": lambda o: (
        not holds(o[OP], "--counts-interval") and not holds(o[OP], "--redis")
    ),
    "redis.sentinel.addresses": lambda o: (
        holds(o["ConfigMap/voip-runtime"], "s1.example:26379")
        and not holds(o["ConfigMap/voip-runtime"], "cache.example")
    ),
    "redis.sentinel.masterName": lambda o: holds(o["ConfigMap/voip-runtime"], "primary9"),
    "edge.replicas": lambda o: o[EDGE]["spec"]["replicas"] == 4,
    "edge.autoscaling.enabled": lambda o: "HorizontalPodAutoscaler/voip-edge" not in o,
    "media.replicas": lambda o: o["Deployment/voip-media"]["spec"]["replicas"] == 1,
    # A literal address: written as is, no token, no right to read nodes.
    "media.advertise": lambda o: (
        '"--advertise", "192.0.2.9"' in json.dumps(o["Deployment/voip-media"])
        and holds(o["Deployment/voip-media"], {"automountServiceAccountToken": False})
        and "ClusterRole/voice-voip-media" not in o
    ),
    "cdr.enabled": lambda o: CDR not in o and not holds(o["ConfigMap/voip-runtime"], "TRUNKLINE_CDR_STREAM"),
    "operator.namespaces": lambda o: (
        o["Role/voice-voip-operator"]["metadata"]["namespace"] == "tenant9"
        and o["Role/voice-voip-control"]["metadata"]["namespace"] == "tenant9"
        and holds(o[OP], "--namespace=tenant9")
        and holds(o[CTL], "tenant9")
    ),
    "internalTls.issuer": lambda o: "Certificate/voip-grpc-edge" in o and "Secret/voip-grpc-edge" not in o,
    "internalTls.certManagerIssuer.name": lambda o: holds(
        o["Certificate/voip-grpc-media"], {"name": "ca-issuer9"}
    ),
    "internalTls.certManagerIssuer.kind": lambda o: holds(
        o["Certificate/voip-grpc-control"], {"kind": "Issuer"}
    ),
    "internalTls.certManagerIssuer.group": lambda o: holds(
        o["Certificate/voip-grpc-edge"], {"group": "example.io"}
    ),
    "networkPolicies.enabled": lambda o: not any(k.startswith("NetworkPolicy/") for k in o),
}


def _secret_file(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])
