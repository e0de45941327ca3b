"""Desired state of the data plane: pure functions from a Platform to manifest dicts.

Nothing here talks to the API server; handlers fetch, call these, and apply the result.

Restarts: every pod reads its runtime settings (Redis, control address, log level) from environment
variables of the `<name>-runtime` ConfigMap (`envFrom`). A running pod never sees a changed
ConfigMap, so the pod template carries `checksum/config`, the hash of that ConfigMap's data: a change
rolls the pods, and nothing else does. Trunk, DID and Carrier data is deliberately NOT in it: edges
and relays get it from the control service's config watch while they run.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from trunkline.core import media_advertise
from trunkline.core.media_advertise import AdvertiseMode
from trunkline.core.trunk_defaults import TrunkDefaults
from trunkline.operator.addresses import cluster_address
from trunkline.operator.platform import (
    ACTIVE_CALLS_METRIC,
    MediaKind,
    Platform,
    Resources,
    ServiceSettings,
    ServiceType,
)

Manifest = dict[str, Any]

MANAGER = "trunkline-operator"
RUN_AS = 10001  # the image's non-root user (Dockerfile)
TMP_VOLUME = {"name": "tmp", "emptyDir": {}}
CHECKSUM_ANNOTATION = "checksum/config"
GRPC_MOUNT = "/etc/trunkline/grpc"  # the component's certificate Secret (operator/grpc_certs.py)
GRPC_FILES = {
    "TRUNKLINE_GRPC_CA": "ca.crt",
    "TRUNKLINE_GRPC_CERT": "tls.crt",
    "TRUNKLINE_GRPC_KEY": "tls.key",
}
GRPC_COMPONENTS = ("control", "edge", "media")  # the ones that serve or dial the internal gRPC
REDIS_CA_MOUNT = "/etc/trunkline/redis-ca"


NONCE_MOUNT = "/etc/trunkline/nonce"  # the nonce Secret in edge pods
# The edges' CDR spool (edge/spool.py): an emptyDir outlives a container restart, so the next process
# in the pod replays the call ends its killed predecessor could not hand to the store (docs/cdr.md).
CDR_SPOOL_MOUNT = "/var/spool/trunkline"
CDR_SPOOL_VOLUME = {"name": "cdr-spool", "emptyDir": {"sizeLimit": "64Mi"}}  # the spool caps itself at 16 MiB
NONCE_FILE = "keys"  # its one key: the digest nonce keys, newest first, one a line


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    # No blockOwnerDeletion: setting it needs rights on the owner's finalizers, and nothing needs it.
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}


def selector_labels(platform: Platform, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "trunkline",
        "app.kubernetes.io/instance": platform.name,
        "app.kubernetes.io/component": component,
    }


def object_metadata(
    platform: Platform, namespace: str, name: str, component: str, owner: dict[str, Any] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**selector_labels(platform, component), "app.kubernetes.io/managed-by": MANAGER},
    }
    if owner:
        meta["ownerReferences"] = [owner]
    return meta


def object_name(platform: Platform, component: str) -> str:
    return f"{platform.name}-{component}"


def control_address(platform: Platform, namespace: str) -> str:
    return f"{object_name(platform, 'control')}.{namespace}.svc:{platform.control.port}"


def edge_advertise(platform: Platform, namespace: str) -> str | None:
    """What the edges advertise by the platform alone: edge.advertise, or the UDP Service's cluster name;
    None when it is the Service's load-balancer address, which only the API knows (operator/addresses.py)."""
    if platform.edge.advertise_from_service:
        return None
    return platform.edge.advertise or cluster_address(platform, namespace)


# ---------------------------------------------------------------- runtime settings


def runtime_env(platform: Platform, namespace: str) -> dict[str, str]:
    """What every component reads at start (and so needs a restart to change)."""
    env = {
        "TRUNKLINE_CONTROL_ADDRESS": control_address(platform, namespace),
        "TRUNKLINE_HTTP_LISTEN": f"0.0.0.0:{platform.httpPort}",
        "TRUNKLINE_LOG_LEVEL": platform.logLevel,
        # What a CDR says it came from (core/cdr.py), and where the edges write CDRs as calls end.
        "TRUNKLINE_INSTALLATION": platform.name,
        "TRUNKLINE_NAMESPACE": namespace,
    }
    env.update({variable: f"{GRPC_MOUNT}/{file}" for variable, file in GRPC_FILES.items()})
    if platform.cdr.enabled:
        env["TRUNKLINE_CDR_STREAM"] = platform.cdr.stream
    env.update(telemetry_env(platform))
    redis = platform.redis
    if redis.caSecret:
        env["TRUNKLINE_REDIS_CA"] = f"{REDIS_CA_MOUNT}/ca.crt"
    if redis.url:
        env["TRUNKLINE_REDIS_URL"] = redis.url
    if redis.sentinel:
        env["TRUNKLINE_REDIS_SENTINELS"] = ",".join(redis.sentinel.addresses)
        env["TRUNKLINE_REDIS_SENTINEL_MASTER"] = redis.sentinel.masterName
    return env


SCRAPE_ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics"}


def telemetry_env(platform: Platform) -> dict[str, str]:
    """The standard OTEL_* variables (core/telemetry.py reads them) and the log format."""
    telemetry = platform.telemetry
    env: dict[str, str] = {"TRUNKLINE_LOG_FORMAT": telemetry.logFormat}
    if telemetry.otlpEndpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = telemetry.otlpEndpoint
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = telemetry.otlpProtocol
        env["OTEL_TRACES_SAMPLER"] = telemetry.sampler
        env["OTEL_TRACES_SAMPLER_ARG"] = repr(telemetry.samplerArg)
    if telemetry.resourceAttributes:
        attrs = telemetry.resourceAttributes
        env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(
            f"{k}={quote(v, safe='')}" for k, v in sorted(attrs.items())
        )
    return env


def config_checksum(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def build_runtime_configmap(
    platform: Platform, namespace: str, owner: dict[str, Any] | None = None
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(platform, namespace, object_name(platform, "runtime"), "runtime", owner),
        "data": runtime_env(platform, namespace),
    }


# ---------------------------------------------------------------- pods


def _resources(resources: Resources) -> dict[str, Any]:
    return {k: v for k, v in (("requests", resources.requests), ("limits", resources.limits)) if v}


def _probe(path: str, period: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2}


def _container(
    platform: Platform,
    namespace: str,
    component: str,
    args: list[str],
    ports: list[dict[str, Any]],
    resources: Resources,
) -> dict[str, Any]:
    # POD_NAME, POD_NAMESPACE: the k8s.* resource attributes of the pod's traces.
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for name, path in (("POD_IP", "status.podIP"), ("POD_NAME", "metadata.name"),
                           ("POD_NAMESPACE", "metadata.namespace"))
    ]  # fmt: skip
    secret = platform.redis.passwordSecret
    if secret:
        # A password never goes into the runtime ConfigMap.
        ref = {"name": secret.name, "key": secret.key}
        env.append({"name": "TRUNKLINE_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": ref}})
    container: dict[str, Any] = {
        "name": component,
        "image": platform.image,
        "imagePullPolicy": platform.imagePullPolicy,
        "args": [component, *args],
        "env": env,
        "envFrom": [{"configMapRef": {"name": object_name(platform, "runtime")}}],
        "ports": [*ports, {"name": "http", "containerPort": platform.httpPort, "protocol": "TCP"}],
        "readinessProbe": _probe("/readyz", 5),
        # Up to 3 minutes to start on a busy node before liveness counts (a slow start is not a hang).
        "startupProbe": {**_probe("/healthz", 5), "failureThreshold": 36},
        "livenessProbe": {**_probe("/healthz", 10), "failureThreshold": 3},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            # Container ports are >= 1024 (platform schema): not even NET_BIND_SERVICE is needed.
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if resources.requests or resources.limits:
        container["resources"] = _resources(resources)
    return container


def _pod_template(
    platform: Platform,
    namespace: str,
    component: str,
    container: dict[str, Any],
    *,
    service_account: str | None = None,
    host_network: bool = False,
    volumes: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    checksum = config_checksum(runtime_env(platform, namespace))
    if component in GRPC_COMPONENTS:
        # Each speaks mTLS with its own certificate; rotated files reach it without a restart.
        grpc_secret = object_name(platform, f"grpc-{component}")
        volumes = (*volumes, {"name": "grpc-tls", "secret": {"secretName": grpc_secret}})
        container["volumeMounts"] = [
            *container["volumeMounts"],
            {"name": "grpc-tls", "mountPath": GRPC_MOUNT, "readOnly": True},
        ]
    if platform.redis.caSecret:
        ca = platform.redis.caSecret
        only_ca = {"secretName": ca.name, "items": [{"key": ca.key, "path": "ca.crt"}]}
        volumes = (*volumes, {"name": "redis-ca", "secret": only_ca})
        container["volumeMounts"].append({"name": "redis-ca", "mountPath": REDIS_CA_MOUNT, "readOnly": True})
    spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [TMP_VOLUME, *volumes],
        # Only control (and relays with a node-based advertise) read the API; the others carry no token.
        "automountServiceAccountToken": service_account is not None,
        # Edges drain their dialogs (they live in Redis, any pod can take them over) before they go.
        "terminationGracePeriodSeconds": 60,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if platform.imagePullSecrets:
        spec["imagePullSecrets"] = [{"name": name} for name in platform.imagePullSecrets]
    annotations = {CHECKSUM_ANNOTATION: checksum}
    if platform.telemetry.scrapeAnnotations:
        annotations.update(SCRAPE_ANNOTATIONS)
        annotations["prometheus.io/port"] = str(platform.httpPort)
    return {
        "metadata": {"labels": selector_labels(platform, component), "annotations": annotations},
        "spec": spec,
    }


def _workload(
    platform: Platform,
    namespace: str,
    kind: str,
    component: str,
    template: dict[str, Any],
    owner: dict[str, Any] | None,
    replicas: int | None,
) -> Manifest:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(platform, component)},
        "template": template,
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": object_metadata(platform, namespace, object_name(platform, component), component, owner),
        "spec": spec,
    }


def _port(name: str, port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"name": name, "containerPort": port, "protocol": protocol}


# ---------------------------------------------------------------- control


def build_control_deployment(
    platform: Platform, namespace: str, owner: dict[str, Any] | None = None
) -> Manifest:
    ctl = platform.control
    namespaces = platform.watchNamespaces or ([platform.watchNamespace] if platform.watchNamespace else [])
    scope = [arg for ns in namespaces for arg in ("--namespace", ns)] or ["--all-namespaces"]
    container = _container(
        platform, namespace, "control", ["--listen", f"0.0.0.0:{ctl.port}", *scope],
        [_port("grpc", ctl.port)], ctl.resources,
    )  # fmt: skip
    template = _pod_template(
        platform, namespace, "control", container, service_account=ctl.serviceAccountName
    )
    return _workload(platform, namespace, "Deployment", "control", template, owner, ctl.replicas)


def _service(
    platform: Platform,
    namespace: str,
    name: str,
    component: str,
    ports: list[dict[str, Any]],
    owner: dict[str, Any] | None,
    settings: ServiceSettings | None = None,
) -> Manifest:
    spec: dict[str, Any] = {"selector": selector_labels(platform, component), "ports": ports}
    metadata = object_metadata(platform, namespace, name, component, owner)
    if settings:
        spec["type"] = settings.type.value
        # The API server rejects externalTrafficPolicy on a ClusterIP Service.
        if settings.type is not ServiceType.CLUSTER_IP:
            spec["externalTrafficPolicy"] = settings.externalTrafficPolicy.value
        if settings.annotations:
            metadata["annotations"] = dict(settings.annotations)
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def build_control_service(
    platform: Platform, namespace: str, owner: dict[str, Any] | None = None
) -> Manifest:
    ports = [
        {"name": "grpc", "port": platform.control.port, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": "grpc"},
        {"name": "http", "port": platform.httpPort, "targetPort": "http", "protocol": "TCP"},
    ]  # fmt: skip
    return _service(platform, namespace, object_name(platform, "control"), "control", ports, owner)


# ---------------------------------------------------------------- edge


def build_edge_deployment(
    platform: Platform, namespace: str, owner: dict[str, Any] | None = None, advertise: str | None = None
) -> Manifest | None:
    """`advertise`: the address peers reach the edges at, when the platform leaves it to the UDP
    Service's load balancer; None there: no Deployment (yet), rather than edges naming an address
    no peer outside can reach."""
    edge = platform.edge
    advertise = edge_advertise(platform, namespace) or advertise
    if advertise is None:
        return None
    args = ["--sip-listen", f"0.0.0.0:{edge.sipPort}"]
    ports = [_port("sip-udp", edge.sipPort, "UDP"), _port("sip-tcp", edge.sipPort)]
    volumes: tuple[dict[str, Any], ...] = ()
    container_mounts: list[dict[str, Any]] = []
    if edge.tls:
        args += ["--tls-listen", f"0.0.0.0:{edge.tls.port}", "--tls-cert", "/etc/trunkline/tls/tls.crt",
                 "--tls-key", "/etc/trunkline/tls/tls.key"]  # fmt: skip
        ports.append(_port("sip-tls", edge.tls.port))
        volumes = ({"name": "tls", "secret": {"secretName": edge.tls.secretName}},)
        container_mounts.append({"name": "tls", "mountPath": "/etc/trunkline/tls", "readOnly": True})
    # Every edge signs and checks digest nonces with the same keys (operator/nonce.py writes them), so a
    # challenge one pod issued is good at any other.
    args += ["--nonce-secret-file", f"{NONCE_MOUNT}/{NONCE_FILE}"]
    args += _media_deny_args(platform)
    # Always explicit: an empty list means no country, not the edge's own default.
    args += ["--emergency-countries", ",".join(edge.emergency.countries)]
    args += [arg for number in edge.emergency.numbers for arg in ("--emergency-number", number)]
    args += _trunk_default_args(edge.trunkDefaults)
    args += ["--cdr-spool", CDR_SPOOL_MOUNT]
    # One edge process per CPU of the limit, sharing the SIP ports and the calls (Redis); without a
    # limit the pod may get a whole node's CPUs for a request of a fraction: one, and scale by pods.
    args += ["--workers", str(edge_workers(edge.resources))]
    volumes += ({"name": "nonce", "secret": {"secretName": object_name(platform, "nonce")}}, CDR_SPOOL_VOLUME)
    container_mounts.append({"name": "nonce", "mountPath": NONCE_MOUNT, "readOnly": True})
    # A stopping edge first leaves the Service (readiness fails within EDGE_READINESS_PROBE's two periods,
    # then the endpoint stops serving and kube-proxy moves the UDP flows pinned to it), still taking new
    # calls, and only then refuses them (503) and drains: a rolling update refuses no call.
    args += ["--unready-before-drain", str(EDGE_UNREADY_BEFORE_DRAIN)]
    container_mounts.append({"name": "cdr-spool", "mountPath": CDR_SPOOL_MOUNT})
    container = _container(platform, namespace, "edge", args, ports, edge.resources)
    container["readinessProbe"] = EDGE_READINESS_PROBE
    container["volumeMounts"] += container_mounts
    # In the pod template, not the runtime ConfigMap: a new load-balancer address rolls the edges only.
    container["env"].append({"name": "TRUNKLINE_EDGE_ADVERTISE", "value": advertise})
    template = _pod_template(platform, namespace, "edge", container, volumes=volumes)
    # With an HPA the replica count is the HPA's: leaving it out of our apply keeps us from fighting it.
    replicas = None if edge.autoscaling.enabled else edge.replicas
    return _workload(platform, namespace, "Deployment", "edge", template, owner, replicas)


EDGE_READINESS_PROBE = {**_probe("/readyz", 2), "failureThreshold": 2}
# Seconds: two probe periods and their timeouts, the EndpointSlice update, kube-proxy's sync, with room
# for a busy node. Within terminationGracePeriodSeconds with the edge's --grace (30 s).
EDGE_UNREADY_BEFORE_DRAIN = 10


_CPU = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m?)$")


def edge_workers(resources: Resources) -> int:
    """Edge processes for a pod: its CPU limit rounded down, at least 1 (1 without a limit or with a
    quantity we do not read: a pod with too few workers still works, too many would thrash)."""
    match = _CPU.match(str(resources.limits.get("cpu", "")).strip())
    if match is None:
        return 1
    cpus = Decimal(match[1]) / (1000 if match[2] else 1)
    return max(1, int(cpus))


def _trunk_default_args(defaults: TrunkDefaults) -> list[str]:
    """The caps of trunks that set none (edge.trunkDefaults), as the edge's flags."""
    args = ["--default-channels", str(defaults.channels)]
    args += ["--default-calls-per-second", f"{defaults.callsPerSecond:g}"]
    return args + [a for prefix in defaults.allowedPrefixes for a in ("--default-allowed-prefix", prefix)]


def build_edge_services(
    platform: Platform, namespace: str, owner: dict[str, Any] | None = None
) -> list[Manifest]:
    """One Service per protocol: cloud load balancers cannot mix UDP and TCP in one."""
    edge = platform.edge
    udp = [{"name": "sip-udp", "port": edge.udpService.port, "targetPort": "sip-udp", "protocol": "UDP"}]
    tcp = [{"name": "sip-tcp", "port": edge.tcpService.port, "targetPort": "sip-tcp", "protocol": "TCP"}]
    if edge.tls:
        tcp.append(
            {"name": "sip-tls", "port": edge.tls.servicePort, "targetPort": "sip-tls", "protocol": "TCP"}
        )
    return [
        _service(platform, namespace, object_name(platform, "edge-udp"), "edge", udp, owner, edge.udpService),
        _service(platform, namespace, object_name(platform, "edge-tcp"), "edge", tcp, owner, edge.tcpService),
    ]


def build_edge_hpa(
    platform: Platform, namespace: str, owner: dict[str, Any] | None = None
) -> Manifest | None:
    scaling = platform.edge.autoscaling
    if not scaling.enabled:
        return None
    target = {"type": "Utilization", "averageUtilization": scaling.targetCPUUtilizationPercentage}
    metrics: list[dict[str, Any]] = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]
    if scaling.metric == "activeCalls":
        # Per pod, from the custom-metrics API (prometheus-adapter: docs/kubernetes.md). CPU stays beside
        # it: the HPA follows the larger proposal, and still scales up on CPU if the adapter is down.
        calls = {"type": "AverageValue", "averageValue": str(scaling.activeCallsPerPod)}
        pods = {"metric": {"name": ACTIVE_CALLS_METRIC}, "target": calls}
        metrics.insert(0, {"type": "Pods", "pods": pods})
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_metadata(platform, namespace, object_name(platform, "edge"), "edge", owner),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": object_name(platform, "edge"),
            },
            "minReplicas": scaling.minReplicas,
            "maxReplicas": scaling.maxReplicas,
            "metrics": metrics,
        },
    }


# ---------------------------------------------------------------- media


def _media_deny_args(platform: Platform) -> list[str]:
    """The networks SDP may not name, for the edge (488) and the relay (refused session) alike."""
    return [arg for cidr in platform.mediaDenyCidrs for arg in ("--media-deny-cidr", cidr)]


def build_media_workload(platform: Platform, namespace: str, owner: dict[str, Any] | None = None) -> Manifest:
    media = platform.media
    daemon = media.kind is MediaKind.DAEMON_SET
    advertise = media_advertise.parse(media.advertise)
    args = [
        # On the host network, gRPC on the pod's (the node's) address only, not on every interface.
        "--listen", f"$(POD_IP):{media.port}" if daemon else f"0.0.0.0:{media.port}",
        "--media-listen", "0.0.0.0",
        "--media-ports", str(media.portRange),
        # What SDP names: the pod's address (the node's, on the host network), or a setting the relay
        # resolves at start from its Node (docs/kubernetes.md), or a literal address.
        "--advertise", "$(POD_IP)" if advertise.mode is AdvertiseMode.POD_IP else str(advertise),
        # Its name at control and in Redis, where a restarted container finds its sessions again
        # (same pod, same address, same ports). Probes: --http-listen from the runtime ConfigMap.
        "--relay-id", "$(POD_NAME)",
        *_media_deny_args(platform),
    ]  # fmt: skip
    container = _container(platform, namespace, "media", args, [_port("grpc", media.port)], media.resources)
    service_account = None
    if advertise.needs_node:  # it reads its Node: the only relays with an API token
        node_name = {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
        container["env"].append(node_name)
        service_account = media.serviceAccountName
    template = _pod_template(
        platform, namespace, "media", container, service_account=service_account, host_network=daemon
    )
    return _workload(
        platform, namespace, media.kind.value, "media", template, owner, None if daemon else media.replicas
    )


# ---------------------------------------------------------------- disruption budgets


def build_disruption_budget(
    platform: Platform, namespace: str, component: str, owner: dict[str, Any] | None = None
) -> Manifest:
    """At most one pod of `component` (edge or media) down at a time for a voluntary disruption (a node
    drain, a cluster upgrade): the calls of a drained edge go on at the others, and a relay's calls lose
    audio only until its replacement restores its sessions, so never all of them at once."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(platform, namespace, object_name(platform, component), component, owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(platform, component)}},
    }


# ---------------------------------------------------------------- CDR exporter


def build_cdr_deployment(
    platform: Platform, namespace: str, owner: dict[str, Any] | None = None
) -> Manifest | None:
    cdr = platform.cdr
    if not cdr.enabled:
        return None
    args = ["--stream", cdr.stream, "--batch", str(cdr.batch), "--claim-idle", str(cdr.claimIdleSeconds)]
    if cdr.jsonl:
        args += ["--jsonl", "-"]
    container = _container(platform, namespace, "cdr", args, [], cdr.resources)
    env = container["env"]  # POD_NAME (every container has it): its name in the consumer group
    if cdr.postgresDsnSecret:
        args.append("--postgres")  # the DSN (it holds a password) only from its Secret, never in args
        ref = {"name": cdr.postgresDsnSecret.name, "key": cdr.postgresDsnSecret.key}
        env.append({"name": "TRUNKLINE_CDR_POSTGRES_DSN", "valueFrom": {"secretKeyRef": ref}})
    if cdr.webhook:
        args += ["--webhook-url", cdr.webhook.url]
        ref = {"name": cdr.webhook.secretRef.name, "key": cdr.webhook.secretRef.key}
        env.append({"name": "TRUNKLINE_CDR_WEBHOOK_SECRET", "valueFrom": {"secretKeyRef": ref}})
    container["args"] = ["cdr", *args]
    template = _pod_template(platform, namespace, "cdr", container)
    return _workload(platform, namespace, "Deployment", "cdr", template, owner, cdr.replicas)


# ---------------------------------------------------------------- all of it


def build_data_plane(
    platform: Platform, namespace: str, owner: dict[str, Any] | None = None, edge_address: str | None = None
) -> list[Manifest]:
    """Every object of the data plane, in apply order (the ConfigMap before the pods that read it).
    `edge_address`: the UDP Service's load-balancer address, when the edges advertise it (unknown:
    no edge Deployment)."""
    objects = [
        build_runtime_configmap(platform, namespace, owner),
        build_control_deployment(platform, namespace, owner),
        build_control_service(platform, namespace, owner),
        build_edge_deployment(platform, namespace, owner, edge_address),
        *build_edge_services(platform, namespace, owner),
        build_edge_hpa(platform, namespace, owner),
        build_disruption_budget(platform, namespace, "edge", owner),
        build_media_workload(platform, namespace, owner),
        build_disruption_budget(platform, namespace, "media", owner),
        build_cdr_deployment(platform, namespace, owner),
    ]
    return [obj for obj in objects if obj is not None]


def stale_objects(platform: Platform, namespace: str) -> list[tuple[str, str, str, str]]:
    """(apiVersion, kind, namespace, name) of objects a previous platform may have left behind."""
    stale = []
    if not platform.edge.autoscaling.enabled:
        stale.append(("autoscaling/v2", "HorizontalPodAutoscaler", namespace, object_name(platform, "edge")))
    other = MediaKind.DEPLOYMENT if platform.media.kind is MediaKind.DAEMON_SET else MediaKind.DAEMON_SET
    stale.append(("apps/v1", other.value, namespace, object_name(platform, "media")))
    if not platform.cdr.enabled:
        stale.append(("apps/v1", "Deployment", namespace, object_name(platform, "cdr")))
    return stale
