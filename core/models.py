"""The resource model: Trunk, DID and Carrier (group trunkline.io, version v1alpha1) and the Secret
fields we read.

These pydantic models are the single source of truth: the CRD schemas in
`charts/trunkline/crds/` are generated from them (`trunkline.core.crds`), the manifest loader of
`trunkline validate` / `trunkline up` parses with them, and the operator reads cluster objects with them.
Field names are the Kubernetes (camelCase) names of docs/product.md.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from trunkline.core.emergency import EMERGENCY_NUMBER_PATTERN, MAX_EMERGENCY_NUMBERS

GROUP = "trunkline.io"
VERSION = "v1alpha1"
API_VERSION: Final = "trunkline.io/v1alpha1"

# E.164: a '+', a country code that does not start with 0, at most 15 digits in all.
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
# A prefix of E.164 numbers: '+' and 1 to 15 digits ("+44", "+1415").
E164_PREFIX_PATTERN = r"^\+[0-9]{1,15}$"
# What a trunk may call: a prefix, or "+" alone (every number: the explicit spelling of "anywhere").
ALLOWED_PREFIX_PATTERN = r"^\+[0-9]{0,15}$"
# sip:[user@]host[:port][;params] with host a name, IPv4 or [IPv6] (RFC 3261 section 19.1.1).
SIP_URI_PATTERN = (
    r"^sips?:([^@\s;]+@)?"  # user part
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"  # host: [IPv6], IPv4 or name
    r"(:[0-9]{1,5})?(;[^\s]*)?$"  # port, parameters
)
# DNS-1123 subdomain: what Kubernetes accepts as an object name.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

E164 = Annotated[str, StringConstraints(pattern=E164_PATTERN)]
E164Prefix = Annotated[str, StringConstraints(pattern=E164_PREFIX_PATTERN)]
AllowedPrefix = Annotated[str, StringConstraints(pattern=ALLOWED_PREFIX_PATTERN)]
SipUri = Annotated[str, StringConstraints(pattern=SIP_URI_PATTERN, max_length=512)]
ObjectName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=1, max_length=253)]


def _check_cidr(value: str) -> str:
    """A v4 or v6 network; a bare address is a /32 or /128. Host bits are cleared, not rejected."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR (e.g. 203.0.113.0/24 or 2001:db8::/32)") from None


# The CRD says `format: cidr` (checked by the API server); the model checks it for files too.
Cidr = Annotated[str, AfterValidator(_check_cidr), Field(json_schema_extra={"format": "cidr"})]


class Model(BaseModel):
    """Base of every spec model: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Target(Model):
    """A SIP destination with SRV-like ordering: lower priority first, weight shares load within one."""

    uri: SipUri = Field(description="SIP URI of the target; a host name is resolved per RFC 3263.")
    priority: int = Field(10, ge=0, le=65535, description="Lower is tried first.")
    weight: int = Field(100, ge=0, le=65535, description="Share of calls within one priority.")


class DigestAlgorithm(StrEnum):
    MD5 = "MD5"
    SHA256 = "SHA-256"


class DigestAuth(Model):
    credentialsSecret: ObjectName = Field(description="Name of a v1 Secret with keys username, password.")
    realm: str | None = Field(None, min_length=1, max_length=128, description="Default: the trunk's name.")
    algorithms: list[DigestAlgorithm] = Field(
        default_factory=lambda: [DigestAlgorithm.MD5, DigestAlgorithm.SHA256],
        min_length=1,
        max_length=2,
        description="Challenges offered, in order of preference (RFC 8760).",
    )
    allowRfc2069: bool = Field(
        False,
        description="Accept credentials without qop=auth (RFC 2069: no client nonce or nonce-count). "
        "Only for old PBXs that cannot do better.",
    )


class TrunkAuth(Model):
    digest: DigestAuth | None = None
    ipAcl: list[Cidr] = Field(
        default_factory=list,
        max_length=256,
        description="CIDRs (v4/v6) whose sources are admitted without a challenge.",
    )


class Registration(Model):
    enabled: bool = False
    maxExpires: int = Field(3600, ge=60, le=86400, description="Upper bound of a binding's lifetime (s).")
    maxContacts: int = Field(
        5, ge=1, le=100, description="Contacts one address-of-record may hold; a REGISTER beyond is 403."
    )


class CallerIdPolicy(StrEnum):
    DIDS_ONLY = "dids-only"
    ANY = "any"


class CallerIdAction(StrEnum):
    REJECT = "reject"
    REPLACE = "replace"


class Outbound(Model):
    allowedPrefixes: list[AllowedPrefix] | None = Field(
        None,
        max_length=1024,
        description='E.164 prefixes this trunk may call ("+": any number; []: none). Unset: the '
        "platform's default (edge.trunkDefaults.allowedPrefixes; none unless set: outbound calls refused).",
    )
    callerId: CallerIdPolicy = CallerIdPolicy.DIDS_ONLY
    callerIdAction: CallerIdAction = CallerIdAction.REJECT


class Codec(StrEnum):
    PCMU = "PCMU"
    PCMA = "PCMA"
    G722 = "G722"
    G729 = "G729"
    OPUS = "opus"


class SrtpMode(StrEnum):
    DISABLED = "disabled"
    OPTIONAL = "optional"
    REQUIRED = "required"


class FloodLimits(Model):
    """Per-source rate limit for the sources inside a trunk's ipAcl or a carrier's inboundCidrs
    (docs/security.md). Other sources get the edge's defaults (--flood-rate, --flood-bytes)."""

    exempt: bool = Field(True, description="Never rate-limit these sources (the default: known peers).")
    messagesPerSecond: float = Field(
        200.0, gt=0, le=100000, description="Sustained messages/s per source when not exempt."
    )
    bytesPerSecond: int = Field(
        1_000_000, gt=0, le=1_000_000_000, description="Sustained bytes/s per source when not exempt."
    )


class MediaSettings(Model):
    srtp: SrtpMode = Field(
        SrtpMode.DISABLED,
        description="SDES-SRTP towards the PBX. optional: offers keys on RTP/AVP, plain PBXs work; "
        "required: a call without keys gets 488 and never connects (docs/media.md).",
    )


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


class Numbering(Model):
    """How national-format numbers (Request-URI and caller) of calls from this side become E.164
    (e.g. 04155550100 -> +14155550100)."""

    countryCode: str = Field(pattern=r"^[1-9][0-9]{0,2}$", description="Country calling code, digits.")
    nationalPrefix: str = Field("0", pattern=r"^[0-9]{0,3}$", description="Trunk prefix to strip.")
    internationalPrefix: str = Field("00", pattern=r"^[0-9]{0,4}$", description="Exit code to strip.")


class PeerTracing(Model):
    """W3C trace context in SIP, for a peer that traces calls too (off: none ever goes into SIP)."""

    traceparentHeader: bool = Field(
        False,
        description="Send `traceparent` (and `tracestate`) headers in the INVITEs to this peer, and take "
        "a valid `traceparent` in its INVITEs as the parent of the call's trace. Accepted only from a "
        "peer known by its source address (a carrier's inboundCidrs, a trunk's ipAcl).",
    )


EmergencyNumber = Annotated[str, StringConstraints(pattern=EMERGENCY_NUMBER_PATTERN)]


class TrunkEmergency(Model):
    numbers: list[EmergencyNumber] = Field(
        default_factory=list, max_length=MAX_EMERGENCY_NUMBERS,
        description="Emergency numbers this trunk dials besides the installation's (2-8 digits, matched as "
        "dialled, e.g. a PBX's \"9911\"): admitted past every limit and sent as dialled (docs/emergency.md).",
    )  # fmt: skip


class TrunkSpec(Model):
    auth: TrunkAuth = Field(default_factory=TrunkAuth)
    registration: Registration = Field(default_factory=Registration)
    origination: list[Target] = Field(default_factory=list, max_length=64)
    channels: int | None = Field(
        None, ge=0, le=1_000_000,
        description="Concurrent calls (in + out); 0: unlimited. Unset: the platform's default "
        "(edge.trunkDefaults.channels, 30).",
    )  # fmt: skip
    callsPerSecond: float | None = Field(
        None, ge=0, le=100_000,
        description="New calls per second; 0: unlimited. Unset: the platform's default "
        "(edge.trunkDefaults.callsPerSecond, 5).",
    )  # fmt: skip
    outbound: Outbound = Field(default_factory=Outbound)
    codecs: list[Codec] = Field(
        default_factory=lambda: [Codec.PCMU, Codec.PCMA], min_length=1,
        description="Codecs the calls may use, in order of preference (the order in the SDP the edge "
        "writes); none in common: 488. With and without a relay (docs/media.md).",
    )  # fmt: skip
    media: MediaSettings = Field(default_factory=MediaSettings)
    transport: Transport = Field(
        Transport.UDP,
        description="Transport to the trunk's targets. A target's ;transport= or sips: wins; tcp/tls pin "
        "the DNS lookup to it; udp lets NAPTR/SRV choose (docs/media.md).",
    )
    numbering: Numbering | None = None
    flood: FloodLimits = Field(default_factory=FloodLimits)
    tracing: PeerTracing = Field(default_factory=PeerTracing)
    emergency: TrunkEmergency = Field(
        default_factory=TrunkEmergency, description="This trunk's emergency calls (docs/emergency.md)."
    )


class DIDSpec(Model):
    number: E164 = Field(description="The number in E.164, e.g. +14155550100.")
    trunkRef: ObjectName = Field(description="Name of the Trunk this number routes to.")
    origination: list[Target] | None = Field(None, max_length=64, description="Overrides the trunk's list.")


class CarrierAuth(Model):
    credentialsSecret: ObjectName = Field(
        description="Name of a v1 Secret with keys username, password: the edge answers the carrier's "
        "401/407 digest challenges (MD5, SHA-256, SHA-512-256) with them, toward its gateways only."
    )
    realm: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Answer only challenges for this realm (default: any realm the gateways name).",
    )


class CarrierRegistration(Model):
    """Outbound registration to the carrier (docs/carriers.md): one edge at a time keeps it alive."""

    enabled: bool = False
    registrar: SipUri | None = Field(None, description="Where to REGISTER; default: the gateways in order.")
    expires: int = Field(600, ge=60, le=86400, description="Registration lifetime asked for (s).")
    user: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9+._~!$&'()*=;,-]+$",
        description="User part of the address of record; default: the credentials' username.",
    )


class CarrierHealth(Model):
    """OPTIONS probes of each gateway (docs/carriers.md); routing skips gateways found down."""

    interval: float = Field(10.0, ge=0.5, le=3600, description="Seconds between probes of a gateway.")
    timeout: float = Field(2.0, gt=0, le=60, description="Seconds without an answer that fail a probe.")
    failuresToDown: int = Field(3, ge=1, le=100, description="Failed probes in a row that mark it down.")
    successesToUp: int = Field(2, ge=1, le=100, description="Answered probes in a row that mark it up.")


class CarrierRouting(StrEnum):
    PRIORITY = "priority"  # priority, then weight (RFC 2782)
    QUALITY = "quality"  # within a priority, the best 5-minute answer-seizure ratio first


QUALITY_MIN_ATTEMPTS = 10  # 5-minute attempts a gateway needs before `routing: quality` ranks it


class CarrierSpec(Model):
    gateways: list[Target] = Field(min_length=1, max_length=64)
    prefixes: list[E164Prefix] = Field(
        default_factory=list, description="E.164 prefixes served (longest wins); empty: default route."
    )
    inboundCidrs: list[Cidr] = Field(
        default_factory=list, max_length=256, description="Sources admitted to send calls to our DIDs."
    )
    auth: CarrierAuth | None = None
    numbering: Numbering | None = None
    flood: FloodLimits = Field(default_factory=FloodLimits)
    registration: CarrierRegistration = Field(default_factory=CarrierRegistration)
    health: CarrierHealth | None = Field(
        None, description="Probe the gateways with OPTIONS; unset: no probes."
    )
    routing: CarrierRouting = Field(
        CarrierRouting.PRIORITY,
        description="priority: by priority, then weight. quality: within a priority, gateways with at "
        f"least {QUALITY_MIN_ATTEMPTS} attempts in the last 5 minutes are tried by answer-seizure ratio, "
        "best first (docs/carriers.md).",
    )
    tracing: PeerTracing = Field(default_factory=PeerTracing)
    emergency: bool = Field(
        False, description="Takes emergency calls (911, 112, ...), sent with the number as dialled; without "
        "such a carrier they take the default route (docs/emergency.md).",
    )  # fmt: skip


class Condition(BaseModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


class ResourceStatus(BaseModel):
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    activeCalls: int | None = Field(None, ge=0)
    registeredContacts: int | None = Field(None, ge=0)


class GatewayStatus(BaseModel):
    """One gateway as the health probes last saw it (Carrier `spec.health`), and its answer-seizure
    ratio and post-dial delay over the last 5 and 60 minutes (absent without attempts)."""

    uri: str
    state: Literal["Up", "Down"] | None = Field(None, description="Absent without `spec.health`.")
    lastTransitionTime: str | None = None
    lastStatus: int | None = Field(None, description="The last probe's final status; 408: no answer.")
    latencyMs: int | None = Field(None, ge=0, description="Round trip of the last answered probe.")
    attempts5m: int | None = Field(None, ge=0, description="INVITEs sent in the last 5 minutes.")
    attempts60m: int | None = Field(None, ge=0, description="INVITEs sent in the last 60 minutes.")
    asr5m: float | None = Field(None, ge=0, le=1, description="Answered / attempts, last 5 minutes.")
    asr60m: float | None = Field(None, ge=0, le=1, description="Answered / attempts, last 60 minutes.")
    pdd5m: float | None = Field(
        None, ge=0, description="Mean seconds from INVITE to its first 18x or 2xx, last 5 minutes."
    )
    pdd60m: float | None = Field(
        None, ge=0, description="Mean seconds from INVITE to its first 18x or 2xx, last 60 minutes."
    )
    pdd5mP90: float | None = Field(
        None, ge=0, description="90 % of the last 5 minutes' post-dial delays were within this (s)."
    )
    pdd60mP90: float | None = Field(
        None, ge=0, description="90 % of the last 60 minutes' post-dial delays were within this (s)."
    )


class CarrierStatus(ResourceStatus):
    gateways: list[GatewayStatus] | None = Field(None, max_length=64)


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: ObjectName
    namespace: str = "default"
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    STATUS: ClassVar[type[ResourceStatus]] = ResourceStatus
    SHORT_NAMES: ClassVar[list[str]] = []

    apiVersion: Literal["trunkline.io/v1alpha1"] = API_VERSION
    metadata: Metadata
    status: ResourceStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def key(self) -> tuple[str, str]:
        return (self.metadata.namespace, self.metadata.name)


class Trunk(Resource):
    KIND = "Trunk"
    PLURAL = "trunks"
    SHORT_NAMES = ["trk"]
    kind: Literal["Trunk"] = "Trunk"
    spec: TrunkSpec

    @property
    def realm(self) -> str:
        digest = self.spec.auth.digest
        return digest.realm if digest and digest.realm else self.name


class DID(Resource):
    KIND = "DID"
    PLURAL = "dids"
    SHORT_NAMES = ["did"]
    kind: Literal["DID"] = "DID"
    spec: DIDSpec


class Carrier(Resource):
    KIND = "Carrier"
    PLURAL = "carriers"
    SHORT_NAMES = ["car"]
    STATUS = CarrierStatus
    kind: Literal["Carrier"] = "Carrier"
    spec: CarrierSpec
    status: CarrierStatus | None = None


RESOURCE_KINDS: dict[str, type[Resource]] = {cls.KIND: cls for cls in (Trunk, DID, Carrier)}


# The label a Secret that a Trunk or Carrier names must carry: control's Kubernetes source lists and
# watches only Secrets with it (least privilege in what it reads; docs/security.md).
CREDENTIALS_LABEL = "trunkline.io/credentials"


class Secret(BaseModel):
    """The part of a v1 Secret we read: `data` (base64) or `stringData` keys username and password."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    KIND: ClassVar[str] = "Secret"
    apiVersion: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    metadata: Metadata
    data: dict[str, str] = Field(default_factory=dict)
    stringData: dict[str, str] = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _base64(cls, data: dict[str, str]) -> dict[str, str]:
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"data.{key} is not base64") from None
        return data

    def get(self, key: str) -> str | None:
        if key in self.stringData:
            return self.stringData[key]
        if key in self.data:
            return base64.b64decode(self.data[key]).decode("utf-8", "replace")
        return None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def key(self) -> tuple[str, str]:
        return (self.metadata.namespace, self.metadata.name)


def parse_resource(doc: dict[str, Any]) -> Resource | Secret:
    """Parse one manifest document; raises KeyError for an unknown kind, pydantic's error for a bad one."""
    kind = doc.get("kind")
    if kind == "Secret" and doc.get("apiVersion") == "v1":
        return Secret.model_validate(doc)
    if kind in RESOURCE_KINDS and doc.get("apiVersion") == API_VERSION:
        return RESOURCE_KINDS[kind].model_validate(doc)
    raise KeyError(f"unknown kind {doc.get('apiVersion')}/{kind}")


def is_e164(number: str) -> bool:
    return re.fullmatch(E164_PATTERN, number) is not None
