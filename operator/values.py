"""The Helm chart's values: the one model behind values.yaml, values.schema.json and docs/reference.md.

`python -m trunkline.generate` writes those files from `ChartValues`; a unit test fails when they
drift. The chart's templates turn these values into the platform ConfigMap, which `Platform`
(platform.py) reads: both models share their field types (ports, names, quantities), so a value the
schema accepts is a value the operator accepts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from trunkline.core.models import Model, ObjectName
from trunkline.core.trunk_defaults import TrunkDefaults
from trunkline.operator.platform import (
    DEFAULT_MEDIA_DENY_CIDRS,
    EDGE_ADVERTISE_DESCRIPTION,
    MEDIA_ADVERTISE_DESCRIPTION,
    MEDIA_DENY_DESCRIPTION,
    Autoscaling,
    CdrExporter,
    Cidr,
    ContainerPort,
    Emergency,
    HostPort,
    LogLevel,
    MediaAdvertise,
    MediaKind,
    NetworkPolicies,
    NonceKeyRotationHours,
    PortRange,
    Quantity,
    Resources,
    ServicePort,
    ServiceSettings,
    ServiceType,
    Telemetry,
    TrafficPolicy,
)

# No user:password@ in the URL: the password comes from passwordSecret.
RedisUrl = Annotated[str, StringConstraints(pattern=r"^rediss?://[^@/]*(/.*)?$")]
Empty = Literal[""]


class ChartResources(Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class Image(Model):
    repository: str = Field("ghcr.io/trunkline/trunkline", min_length=1)
    tag: str = Field("", description="Empty: the chart's appVersion.")
    pullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class LiveCounts(Model):
    enabled: bool = Field(
        True,
        description="Read each Trunk's active calls and registered contacts from Redis (the edges' shared "
        "state) into its status, and let a deleted Trunk's drain wait for its calls. Off: no counts, a "
        "drain ends at once.",
    )
    intervalSeconds: int = Field(15, ge=1, description="How often each Trunk's counts are read (seconds).")


class OperatorValues(Model):
    scope: Literal["cluster", "namespace"] = Field(
        "cluster",
        description='"cluster": watch Trunks, DIDs, Carriers and Secrets in every namespace (ClusterRole); '
        '"namespace": only in the release namespace (Role).',
    )
    drainGracePeriodSeconds: int = Field(
        300, ge=0, description="How long live calls of a deleted Trunk may go on before its finalizer goes."
    )
    resyncSeconds: int = Field(
        60, ge=5, description="Period of the full re-apply of the data plane and re-check of all statuses."
    )
    liveCounts: LiveCounts = Field(default_factory=LiveCounts)
    verbose: bool = Field(False, description="Debug logging of the operator (overrides logLevel).")
    healthPort: ContainerPort = Field(8080, description="Port of the operator's /healthz (liveness).")
    resources: ChartResources = Field(
        default_factory=lambda: ChartResources(
            requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "256Mi"}
        )
    )
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    namespaces: list[ObjectName] = Field(
        default_factory=list,
        description="Serve only these namespaces, with a Role in each for the operator and control (no "
        "cluster-wide right to read Secrets); empty: as scope says.",
    )


class SentinelValues(Model):
    addresses: list[HostPort] = Field(
        default_factory=list, description="host:port of each Sentinel; not empty: Sentinel instead of url."
    )
    masterName: str = Field("mymaster", min_length=1, description="The monitored master's name.")


class PasswordSecretValues(Model):
    name: Empty | ObjectName = Field("", description='A Secret holding the Redis password; "": none.')
    key: str = Field("password", min_length=1)


class CaSecretValues(Model):
    name: Empty | ObjectName = Field(
        "", description='A Secret holding the CA of Redis\'s TLS certificate (rediss://); "": none.'
    )
    key: str = Field("ca.crt", min_length=1)


class RedisValues(Model):
    url: RedisUrl = Field("redis://redis:6379/0", description="redis:// or rediss://, no password in it.")
    sentinel: SentinelValues = Field(default_factory=SentinelValues)
    passwordSecret: PasswordSecretValues = Field(default_factory=PasswordSecretValues)
    caSecret: CaSecretValues = Field(default_factory=CaSecretValues)


class ControlValues(Model):
    replicas: int = Field(2, ge=1)
    port: ContainerPort = Field(9000, description="gRPC port (container and Service).")
    resources: ChartResources = Field(
        default_factory=lambda: ChartResources(requests={"cpu": "100m", "memory": "128Mi"})
    )


class EdgeTlsValues(Model):
    enabled: bool = Field(False, description="SIP over TLS; the certificate: a kubernetes.io/tls Secret.")
    port: ContainerPort = 5061
    servicePort: ServicePort = 5061
    secretName: ObjectName = "trunkline-edge-tls"


def _local_service() -> ServiceSettings:
    return ServiceSettings(type=ServiceType.CLUSTER_IP, port=5060, externalTrafficPolicy=TrafficPolicy.LOCAL)


class EdgeValues(Model):
    replicas: int = Field(2, ge=1, description="Replicas when autoscaling is off (on: the HPA decides).")
    sipPort: ContainerPort = Field(5060, description="Container port for SIP over UDP and TCP.")
    advertise: Empty | Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.\-\[\]:]+$")] = Field(
        "",
        description=EDGE_ADVERTISE_DESCRIPTION.replace("Unset:", "Empty:"),
    )
    tls: EdgeTlsValues = Field(default_factory=EdgeTlsValues)
    udpService: ServiceSettings = Field(
        default_factory=_local_service,
        description="UDP Service; Local traffic policy keeps the caller's address (IP-ACLs need it).",
    )
    tcpService: ServiceSettings = Field(default_factory=_local_service, description="TCP (and TLS) Service.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    resources: ChartResources = Field(
        default_factory=lambda: ChartResources(requests={"cpu": "250m", "memory": "256Mi"})
    )
    nonceKeyRotationHours: NonceKeyRotationHours = 24
    emergency: Emergency = Field(default_factory=Emergency)
    trunkDefaults: TrunkDefaults = Field(
        default_factory=TrunkDefaults,
        description="Caps of a Trunk that leaves channels, callsPerSecond or outbound.allowedPrefixes unset "
        '(docs/security.md); 0 / "+": unlimited, only when written down.',
    )


class MediaValues(Model):
    kind: MediaKind = Field(
        MediaKind.DEPLOYMENT, description="DaemonSet: one relay per node on the host network."
    )
    replicas: int = Field(2, ge=1, description="Replicas of the Deployment (ignored for a DaemonSet).")
    port: ContainerPort = Field(9001, description="gRPC port for media sessions from the edges.")
    portRange: PortRange = Field(default_factory=PortRange, description="RTP/RTCP ports, one per call leg.")
    resources: ChartResources = Field(
        default_factory=lambda: ChartResources(requests={"cpu": "250m", "memory": "128Mi"})
    )
    advertise: MediaAdvertise = Field(
        "podIP",
        description=MEDIA_ADVERTISE_DESCRIPTION + " The node modes get the relays a ServiceAccount with a "
        "ClusterRole to get nodes, and to write Events on their pods.",
    )


class CertManagerIssuerValues(Model):
    name: Empty | ObjectName = Field("", description="The cert-manager issuer (issuer cert-manager).")
    kind: Literal["Issuer", "ClusterIssuer"] = "ClusterIssuer"
    group: str = Field("cert-manager.io", min_length=1)


class InternalTlsValues(Model):
    issuer: Literal["operator", "cert-manager"] = Field(
        "operator",
        description="operator: its own CA (a Secret) issues and renews every component's certificate; "
        "cert-manager: the operator writes cert-manager Certificates for certManagerIssuer instead.",
    )
    certificateLifetimeSeconds: int = Field(
        30 * 24 * 3600, ge=60, le=365 * 24 * 3600, description="A component certificate's lifetime; "
        "renewed after two thirds of it.",
    )  # fmt: skip
    certManagerIssuer: CertManagerIssuerValues = Field(default_factory=CertManagerIssuerValues)


def _redis_pods() -> NetworkPolicies:
    return NetworkPolicies(redisPodSelector={"app.kubernetes.io/name": "redis"})


# A Prometheus duration as the ServiceMonitor's `interval` takes it: 30s, 1m, 1m30s, 500ms.
PromDuration = Annotated[str, StringConstraints(pattern=r"^([0-9]+(ms|s|m|h))+$", max_length=16)]


class ServiceMonitorValues(Model):
    enabled: bool = Field(
        False,
        description="Create a Prometheus Operator ServiceMonitor for /metrics of the control, edge, media "
        "and CDR exporter pods, with the headless Service `<name>-metrics` over their http ports it "
        "selects. Needs the monitoring.coreos.com CRDs in the cluster.",
    )
    interval: PromDuration = Field("30s", description="How often Prometheus scrapes each pod.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels on the ServiceMonitor, e.g. the one a Prometheus selects monitors by.",
    )


class MetricsValues(Model):
    serviceMonitor: ServiceMonitorValues = Field(default_factory=ServiceMonitorValues)


class ChartValues(Model):
    fullnameOverride: str = Field(
        "", max_length=40, description="Name prefix of every object (default: <release>-trunkline)."
    )
    image: Image = Field(default_factory=Image, description="The one image of every component.")
    imagePullSecrets: list[ObjectName] = Field(
        default_factory=list, description="Secrets (kubernetes.io/dockerconfigjson) to pull the image with."
    )
    operator: OperatorValues = Field(default_factory=OperatorValues)
    httpPort: ContainerPort = Field(8080, description="/healthz, /readyz and /metrics of the data plane.")
    logLevel: LogLevel = Field("info", description="Log level of the operator, control, edge and media.")
    redis: RedisValues = Field(default_factory=RedisValues)
    control: ControlValues = Field(default_factory=ControlValues)
    edge: EdgeValues = Field(default_factory=EdgeValues)
    media: MediaValues = Field(default_factory=MediaValues)
    mediaDenyCidrs: list[Cidr] = Field(
        default_factory=lambda: list(DEFAULT_MEDIA_DENY_CIDRS), description=MEDIA_DENY_DESCRIPTION
    )
    cdr: CdrExporter = Field(
        default_factory=lambda: CdrExporter(resources=Resources(requests={"cpu": "50m", "memory": "64Mi"})),
        description="The CDR exporter (docs/cdr.md): its sinks, and the stream the edges write into.",
    )
    telemetry: Telemetry = Field(
        default_factory=Telemetry,
        description="Traces (OTLP), log format and Prometheus scraping of every pod.",
    )
    metrics: MetricsValues = Field(
        default_factory=MetricsValues,
        description="Prometheus Operator scraping (chart only, not the platform).",
    )
    internalTls: InternalTlsValues = Field(
        default_factory=InternalTlsValues,
        description="mTLS between control, edges and relays (docs/security.md): who issues the certificates.",
    )
    networkPolicies: NetworkPolicies = Field(
        default_factory=_redis_pods,
        description="Control gRPC only from edges, relays and the operator; media gRPC only from edges "
        "and the operator; Redis only from trunkline pods; SIP and RTP from anywhere.",
    )


# Where each top-level value acts (docs/reference.md).
APPLIES_TO = {
    "fullnameOverride": "every object's name",
    "image": "operator, control, edge, media pods",
    "imagePullSecrets": "operator, control, edge, media pods",
    "operator": "the operator Deployment",
    "httpPort": "control, edge, media pods (probes, metrics)",
    "logLevel": "operator, control, edge, media",
    "redis": "edge, media, operator live counts",
    "control": "control Deployment and Service",
    "edge": "edge Deployment, UDP/TCP Services, HPA",
    "media": "media Deployment or DaemonSet",
    "mediaDenyCidrs": "edge (488) and media (refused session) pods",
    "cdr": "CDR exporter Deployment, edge pods (stream)",
    "telemetry": "control, edge, media, CDR exporter pods (env, annotations)",
    "metrics": "ServiceMonitor and metrics Service (chart)",
    "internalTls": "certificate Secrets (or Certificates), control, edge, media pods",
    "networkPolicies": "NetworkPolicies of control, media, edge and Redis",
}
