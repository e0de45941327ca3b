"""Platform settings: how the data plane (control, edge, media) is deployed.

They come from ONE place: the `platform.yaml` key of a ConfigMap (by default `trunkline-platform`)
that the Helm chart renders from its values and the operator reads by name (`--platform NS/NAME`).
The data-plane objects the operator writes are owned by that ConfigMap: `helm uninstall` deletes it,
and the garbage collector the rest. Trunks, DIDs and Carriers are NOT platform settings: they reach the
edges through the control service's config watch, without a restart.

Every field has a default, so `{}` is a valid platform; unknown fields are errors (a typo must not be
silently ignored). The chart's values (values.py, which generates values.schema.json) share these
field types, so what `helm install` accepts the operator accepts too.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from trunkline.core import media_advertise
from trunkline.core.emergency import DEFAULT_COUNTRIES, EMERGENCY_NUMBERS, MAX_EMERGENCY_NUMBERS, Country
from trunkline.core.media_advertise import AdvertiseMode
from trunkline.core.models import EmergencyNumber, Model, ObjectName
from trunkline.core.trunk_defaults import TrunkDefaults

PLATFORM_KEY = "platform.yaml"

# Container ports stay unprivileged, so no pod needs NET_BIND_SERVICE: a Service may still expose
# 5060 or any port below 1024 (its `port`), mapped to the unprivileged container port.
ContainerPort = Annotated[int, Field(ge=1024, le=65535)]
ServicePort = Annotated[int, Field(ge=1, le=65535)]
HostPort = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")]
LogLevel = Literal["debug", "info", "warning", "error"]
NonceKeyRotationHours = Annotated[
    int,
    Field(
        ge=0, le=24 * 365,
        description="How often the operator rotates the digest nonce key all edges share (the previous key "
        "stays valid beside the new one); 0: never.",
    ),
]  # fmt: skip


def _network(value: str) -> str:
    """A network in CIDR notation, host bits clear (what `--media-deny-cidr` takes)."""
    return str(ipaddress.ip_network(value, strict=True))


Cidr = Annotated[str, AfterValidator(_network), StringConstraints(min_length=2, max_length=43)]
# kubeadm's default Service CIDR and the usual pod CIDR (Flannel, Canal): set both to the cluster's.
DEFAULT_MEDIA_DENY_CIDRS = ("10.96.0.0/12", "10.244.0.0/16")
MEDIA_DENY_DESCRIPTION = (
    "Networks SDP may not name as a media address (488 at the edge, refused by the relay): the "
    "cluster's pod and Service CIDRs, so a caller cannot make the relay send audio into the cluster."
)


def _quantity(value: object) -> object:
    """Kubernetes quantities are strings, but YAML reads `cpu: 1` as a number: both are the same."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


# A resource quantity ("250m", "1Gi", or a plain number such as `cpu: 1`), kept as a string.
Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    StringConstraints(min_length=1, max_length=64),
    WithJsonSchema({"type": ["string", "number"]}),
]


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class TrafficPolicy(StrEnum):
    CLUSTER = "Cluster"
    LOCAL = "Local"  # keeps the client's source address: IP-ACLs and carrier CIDRs need it


class ServiceSettings(Model):
    type: ServiceType = ServiceType.CLUSTER_IP
    port: ServicePort = 5060
    externalTrafficPolicy: TrafficPolicy = TrafficPolicy.CLUSTER
    annotations: dict[str, str] = Field(default_factory=dict)


class Resources(Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


# The edge's gauge of calls in progress (edge/metrics.py), as the custom-metrics API serves it per pod.
ACTIVE_CALLS_METRIC = "trunkline_active_calls"


class Autoscaling(Model):
    enabled: bool = True
    minReplicas: int = Field(2, ge=1)
    maxReplicas: int = Field(10, ge=1)
    targetCPUUtilizationPercentage: int = Field(70, ge=1, le=100)
    metric: Literal["cpu", "activeCalls"] = Field(
        "cpu",
        description="cpu: CPU utilisation alone; activeCalls: also the edges' calls in progress per pod "
        f"({ACTIVE_CALLS_METRIC} through the custom-metrics API, e.g. prometheus-adapter: "
        "docs/kubernetes.md), the HPA taking the larger of the two proposals.",
    )
    activeCallsPerPod: int = Field(
        50, ge=1, le=100000, description="activeCalls: the average calls in progress per edge pod to keep."
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.maxReplicas < self.minReplicas:
            raise ValueError("maxReplicas must be >= minReplicas")
        return self


class Control(Model):
    replicas: int = Field(2, ge=1)
    port: ContainerPort = 9000
    serviceAccountName: ObjectName = Field("default", description="Needs read access to the resources.")
    resources: Resources = Field(default_factory=Resources)


class EdgeTls(Model):
    port: ContainerPort = 5061
    servicePort: ServicePort = 5061
    secretName: ObjectName = Field(description="A kubernetes.io/tls Secret: tls.crt, tls.key.")


class Emergency(Model):
    """The installation's emergency numbers (docs/emergency.md): those of its countries, plus its own."""

    countries: list[Country] = Field(
        default_factory=lambda: list(DEFAULT_COUNTRIES), max_length=len(EMERGENCY_NUMBERS),
        description="Countries or regions whose emergency numbers every trunk may dial past its limits: "
        + "; ".join(f"{c} {', '.join(n)}" for c, n in EMERGENCY_NUMBERS.items()) + ".",
    )  # fmt: skip
    numbers: list[EmergencyNumber] = Field(
        default_factory=list, max_length=MAX_EMERGENCY_NUMBERS,
        description="More emergency numbers for every trunk (2-8 digits, as dialled).",
    )  # fmt: skip


# edge.advertise: the UDP Service's load-balancer address, as the operator reads it from the Service.
SERVICE_EXTERNAL = "serviceExternal"
EDGE_ADVERTISE_DESCRIPTION = (
    "HOST[:PORT] peers reach the edges at (the load balancer's name): written in Contact and Record-Route "
    f"so any edge takes a call's next request. {SERVICE_EXTERNAL}: the UDP Service's load-balancer "
    "address (status.loadBalancer.ingress), read by the operator, which rolls the edges when it changes "
    "and deploys them only once there is one. Unset: that too with a LoadBalancer UDP Service, else the "
    "UDP Service's cluster name."
)


class Edge(Model):
    replicas: int = Field(2, ge=1, description="Ignored when autoscaling is enabled.")
    sipPort: ContainerPort = 5060
    advertise: str | None = Field(
        None, pattern=r"^[A-Za-z0-9.\-\[\]:]+$", description=EDGE_ADVERTISE_DESCRIPTION
    )
    tls: EdgeTls | None = None
    # Two Services: a cloud load balancer cannot mix UDP and TCP, nor health-check UDP.
    udpService: ServiceSettings = Field(default_factory=ServiceSettings)
    tcpService: ServiceSettings = Field(default_factory=ServiceSettings)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    resources: Resources = Field(
        default_factory=lambda: Resources(requests={"cpu": "250m", "memory": "256Mi"})
    )
    nonceKeyRotationHours: NonceKeyRotationHours = 24
    emergency: Emergency = Field(default_factory=Emergency)
    trunkDefaults: TrunkDefaults = Field(default_factory=TrunkDefaults)  # the edges' --default-* flags

    @model_validator(mode="after")
    def _service_has_an_external_address(self) -> Self:
        if self.advertise == SERVICE_EXTERNAL and self.udpService.type is not ServiceType.LOAD_BALANCER:
            raise ValueError(
                f"edge.advertise {SERVICE_EXTERNAL} needs edge.udpService.type LoadBalancer (only a load "
                "balancer has an address of its own); behind your own balancer set edge.advertise to it"
            )
        return self

    @property
    def advertise_from_service(self) -> bool:
        """The edges advertise the UDP Service's load-balancer address, once the operator has read it."""
        if self.advertise is None:
            return self.udpService.type is ServiceType.LOAD_BALANCER
        return self.advertise == SERVICE_EXTERNAL


class MediaKind(StrEnum):
    DEPLOYMENT = "Deployment"
    DAEMON_SET = "DaemonSet"  # one relay per node on the host network: RTP without NAT in between


class PortRange(Model):
    start: ContainerPort = 20000
    end: ContainerPort = 29999

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError("end must be >= start")
        return self

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


# The relay's advertised (SDP) address setting: trunkline.core.media_advertise.
# The schema carries the grammar's outline; the validator gives the message naming the choices.
MediaAdvertise = Annotated[
    str,
    AfterValidator(media_advertise.validated),
    WithJsonSchema({"type": "string", "pattern": media_advertise.PATTERN}),
]
MEDIA_ADVERTISE_DESCRIPTION = (
    "Address the relays write into SDP: podIP (the pod's; the node's on the host network), "
    "nodeInternalIP or nodeExternalIP (the Node's, from the API: DaemonSet only), nodeAnnotation:<key> "
    "(an IP address written on each Node, e.g. a 1:1 NAT address: DaemonSet only) or an IP address "
    "(one relay only). A relay without a usable address refuses sessions and is not ready "
    "(docs/kubernetes.md)."
)


class Media(Model):
    kind: MediaKind = MediaKind.DEPLOYMENT
    replicas: int = Field(2, ge=1, description="Deployment only.")
    port: ContainerPort = Field(9001, description="gRPC: media sessions from the edges.")
    portRange: PortRange = Field(default_factory=PortRange)
    resources: Resources = Field(default_factory=Resources)
    advertise: MediaAdvertise = Field(media_advertise.POD_IP, description=MEDIA_ADVERTISE_DESCRIPTION)
    serviceAccountName: ObjectName | None = Field(
        None,
        description="The relays' ServiceAccount, allowed to get nodes: needed by the node-based advertise.",
    )

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        spec = media_advertise.parse(self.advertise)
        if spec.needs_node and self.kind is not MediaKind.DAEMON_SET:
            raise ValueError(f"media.advertise {spec} needs kind DaemonSet (relays on the nodes' network)")
        if spec.needs_node and self.serviceAccountName is None:
            raise ValueError(f"media.advertise {spec} needs media.serviceAccountName (allowed to get nodes)")
        if spec.mode is AdvertiseMode.ADDRESS and self.kind is MediaKind.DEPLOYMENT and self.replicas > 1:
            raise ValueError(
                "media.advertise: one address for several relays; set replicas 1 or use a node mode"
            )
        return self


class Sentinel(Model):
    addresses: list[HostPort] = Field(min_length=1)
    masterName: str = Field("mymaster", min_length=1)


class SecretKeyRef(Model):
    name: ObjectName
    key: str = Field("password", min_length=1)


class CaSecretKeyRef(Model):
    name: ObjectName
    key: str = Field("ca.crt", min_length=1)


class Redis(Model):
    """Exactly one of `url` (redis://host:port/db, no password in it) and `sentinel`."""

    url: str | None = Field(None, pattern=r"^rediss?://")
    sentinel: Sentinel | None = None
    passwordSecret: SecretKeyRef | None = None
    caSecret: CaSecretKeyRef | None = Field(
        None, description="A Secret key holding the CA of Redis's TLS certificate (rediss://)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.url is None) == (self.sentinel is None):
            raise ValueError("set exactly one of redis.url and redis.sentinel")
        return self


class CdrWebhook(Model):
    url: str = Field(pattern=r"^https?://[^/]+", description="Batches of CDRs are POSTed here.")
    secretRef: SecretKeyRef = Field(description="The HMAC-SHA256 key of the X-Trunkline-Signature header.")


class CdrExporter(Model):
    """The CDR exporter (`trunkline cdr`): the edges write each call's record into a Redis Stream as
    the call ends; the exporter delivers them to the sinks below (docs/cdr.md)."""

    enabled: bool = True
    replicas: int = Field(1, ge=1, description="Replicas share the stream through one consumer group.")
    stream: str = Field("trunkline:cdr", pattern=r"^[A-Za-z0-9:._-]{1,200}$")
    batch: int = Field(500, ge=1, le=10000)
    claimIdleSeconds: int = Field(60, ge=1, description="A dead replica's batch is taken over after this.")
    jsonl: bool = Field(True, description="JSON lines on the exporter's standard output (the pod log).")
    postgresDsnSecret: SecretKeyRef | None = Field(None, description="A Secret key holding the DSN.")
    webhook: CdrWebhook | None = None
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _a_sink(self) -> Self:
        if self.enabled and not (self.jsonl or self.postgresDsnSecret or self.webhook):
            raise ValueError("cdr: enable at least one sink (jsonl, postgresDsnSecret, webhook)")
        return self


class Telemetry(Model):
    """Traces, logs and scraping of every data-plane pod (passed as OTEL_* / TRUNKLINE_* env)."""

    otlpEndpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        description="OTLP endpoint for traces, e.g. http://jaeger:4317; unset: off.",
    )
    otlpProtocol: Literal["grpc", "http/protobuf"] = "grpc"
    sampler: Literal[
        "always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
        "parentbased_traceidratio",
    ] = "parentbased_traceidratio"  # fmt: skip
    samplerArg: float = Field(1.0, ge=0.0, le=1.0, description="Ratio of calls traced (traceidratio).")
    resourceAttributes: dict[str, str] = Field(
        default_factory=dict, description="Extra resource attributes, e.g. deployment.environment.name."
    )
    logFormat: Literal["json", "text"] = "json"
    scrapeAnnotations: bool = Field(True, description="prometheus.io/scrape, port and path on every pod.")


class CertManagerIssuer(Model):
    name: ObjectName
    kind: Literal["Issuer", "ClusterIssuer"] = "ClusterIssuer"
    group: str = Field("cert-manager.io", min_length=1)


class InternalTls(Model):
    """Certificates of the internal gRPC planes (docs/security.md)."""

    issuer: Literal["operator", "cert-manager"] = Field(
        "operator", description="operator: its own CA, in a Secret; cert-manager: Certificates for it."
    )
    certificateLifetimeSeconds: int = Field(
        30 * 24 * 3600, ge=60, le=365 * 24 * 3600, description="Renewed after two thirds of it."
    )
    certManagerIssuer: CertManagerIssuer | None = None

    @model_validator(mode="after")
    def _issuer_named(self) -> Self:
        if self.issuer == "cert-manager" and self.certManagerIssuer is None:
            raise ValueError("internalTls.issuer cert-manager needs internalTls.certManagerIssuer")
        return self


class NetworkPolicies(Model):
    enabled: bool = Field(
        True, description="Control gRPC only from edges, relays and the operator; media gRPC only from edges."
    )
    redisPodSelector: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the Redis pods (same namespace): only trunkline may reach them.",
    )


class Platform(Model):
    name: ObjectName = Field("trunkline", max_length=40, description="Prefix of the objects' names.")
    image: str = Field("ghcr.io/trunkline/trunkline:0.1.0", min_length=1)
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    imagePullSecrets: list[ObjectName] = Field(default_factory=list)
    httpPort: ContainerPort = Field(8080, description="/healthz, /readyz and /metrics of every component.")
    logLevel: LogLevel = "info"
    watchNamespace: str | None = Field(None, description="Where the control service reads; unset: all.")
    watchNamespaces: list[ObjectName] = Field(
        default_factory=list,
        description="Several namespaces control reads (Roles there); wins over watchNamespace.",
    )
    redis: Redis = Field(default_factory=lambda: Redis(url="redis://redis:6379/0"))
    control: Control = Field(default_factory=Control)
    edge: Edge = Field(default_factory=Edge)
    media: Media = Field(default_factory=Media)
    mediaDenyCidrs: list[Cidr] = Field(
        default_factory=lambda: list(DEFAULT_MEDIA_DENY_CIDRS), description=MEDIA_DENY_DESCRIPTION
    )
    cdr: CdrExporter = Field(default_factory=CdrExporter)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    internalTls: InternalTls = Field(default_factory=InternalTls)
    networkPolicies: NetworkPolicies = Field(default_factory=NetworkPolicies)


def parse_platform(data: dict[str, str] | None) -> Platform:
    """The Platform of a ConfigMap's data; raises ValueError (pydantic's included) when it is bad."""
    text = (data or {}).get(PLATFORM_KEY)
    if text is None:
        raise ValueError(f"the ConfigMap has no key {PLATFORM_KEY!r}")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{PLATFORM_KEY} is not YAML: {exc}") from None
    return Platform.model_validate(doc or {})
