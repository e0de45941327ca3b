"""The internal planes' certificates as Secrets the operator writes (or cert-manager Certificates).

Issued by the operator (`internalTls.issuer: operator`, the default): a CA in `<name>-grpc-ca`
(ca.crt, ca.key; ten years, made once, never logged), and per component a Secret
`<name>-grpc-<component>` with ca.crt, tls.crt and tls.key, which its pods mount
(`builders.GRPC_MOUNT`). Identities (`core/pki.py`): control `control/<name>-control`, edge
`edge/<name>-edge`, media `relay/<name>-media-*` (a Deployment's pod names are not known in advance;
the wildcard covers them). A component's certificate is issued again when it is missing, unreadable,
not from the current CA, for another identity, issued for longer than the lifetime now configured, or
two thirds through its lifetime (`internalTls.certificateLifetimeSeconds`, 30 days by default); pods
pick the new files up from their Secret volume without a restart (`core/grpc_tls.py`).

With `internalTls.issuer: cert-manager` the operator writes a cert-manager `Certificate` per component
instead, with the same Secret names, identities, lifetime and renewal point, signed by the issuer the
values name: cert-manager writes the same three keys. Pure: the caller reads and applies.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from trunkline.core import pki
from trunkline.core.pki import Identity, KeyPair
from trunkline.operator.builders import Manifest, object_metadata, object_name
from trunkline.operator.platform import Platform

ROLES = {"control": "control", "edge": "edge", "media": "relay"}
NOT_AFTER = "trunkline.io/not-after"  # of the certificate in the Secret: for people, not for us
RENEW_AT = 2 / 3  # of the lifetime


def identity(platform: Platform, component: str) -> Identity:
    name = object_name(platform, component)
    return Identity(ROLES[component], f"{name}-*" if component == "media" else name)


def ca_secret_name(platform: Platform) -> str:
    return object_name(platform, "grpc-ca")


def secret_name(platform: Platform, component: str) -> str:
    return object_name(platform, f"grpc-{component}")


def _decode(secret: dict[str, Any] | None, key: str) -> bytes | None:
    value = ((secret or {}).get("data") or {}).get(key)
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _encode(data: dict[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


def read_ca(secret: dict[str, Any] | None) -> KeyPair | None:
    """The CA in a `<name>-grpc-ca` Secret; None when missing or unreadable."""
    cert, key = _decode(secret, "ca.crt"), _decode(secret, "ca.key")
    if not cert or not key:
        return None
    try:
        x509.load_pem_x509_certificate(cert)
    except ValueError:
        return None
    return KeyPair(cert, key)


def ca_secret_update(
    platform: Platform,
    namespace: str,
    existing: dict[str, Any] | None,
    owner: dict[str, Any] | None = None,
    now: datetime.datetime | None = None,
) -> tuple[KeyPair, Manifest | None]:
    """The CA, and the Secret to write when there is none yet (or it cannot be read)."""
    ca = read_ca(existing)
    if ca is not None:
        return ca, None
    ca = pki.new_ca(now=now)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_metadata(platform, namespace, ca_secret_name(platform), "grpc-ca", owner),
        "type": "Opaque",
        "data": _encode({"ca.crt": ca.cert_pem, "ca.key": ca.key_pem}),
    }
    return ca, secret


def cert_secret_update(
    platform: Platform,
    namespace: str,
    component: str,
    ca: KeyPair,
    existing: dict[str, Any] | None,
    lifetime: datetime.timedelta,
    now: datetime.datetime,
    owner: dict[str, Any] | None = None,
) -> Manifest | None:
    """The component's certificate Secret to write, or None while the current one stands."""
    wanted = identity(platform, component)
    cert = _decode(existing, "tls.crt")
    if (
        cert is not None
        and _decode(existing, "ca.crt") == ca.cert_pem
        and _decode(existing, "tls.key")
        and pki.identity_of(cert) == wanted
        and _issued_by(cert, ca)
        and not pki.needs_renewal(cert, now, RENEW_AT)
        and not _longer_than(cert, lifetime)
    ):
        return None
    pair = pki.issue(ca, wanted, lifetime, now)
    metadata = object_metadata(platform, namespace, secret_name(platform, component), component, owner)
    metadata["annotations"] = {NOT_AFTER: pki.validity(pair.cert_pem)[1].isoformat()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": _encode({"ca.crt": ca.cert_pem, "tls.crt": pair.cert_pem, "tls.key": pair.key_pem}),
    }


def _longer_than(cert_pem: bytes, lifetime: datetime.timedelta) -> bool:
    """A certificate issued for longer than the lifetime now configured (it was shortened): replace it."""
    start, end = pki.validity(cert_pem)
    return end - start > lifetime * 1.1 + datetime.timedelta(minutes=1)  # issue() backdates a little


def _issued_by(cert_pem: bytes, ca: KeyPair) -> bool:
    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(
            x509.load_pem_x509_certificate(ca.cert_pem)
        )
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def certificate_updates(
    platform: Platform,
    namespace: str,
    get_secret: Callable[[str], dict[str, Any] | None],
    lifetime: datetime.timedelta,
    now: datetime.datetime,
    owner: dict[str, Any] | None = None,
) -> list[Manifest]:
    """Every Secret to write now (the CA first), reading the current ones with `get_secret(name)`."""
    ca, ca_update = ca_secret_update(platform, namespace, get_secret(ca_secret_name(platform)), owner, now)
    updates = [ca_update] if ca_update else []
    for component in ROLES:
        existing = get_secret(secret_name(platform, component))
        update = cert_secret_update(platform, namespace, component, ca, existing, lifetime, now, owner)
        if update is not None:
            updates.append(update)
    return updates


def cert_manager_certificates(
    platform: Platform,
    namespace: str,
    issuer: dict[str, str],
    lifetime: datetime.timedelta,
    owner: dict[str, Any] | None = None,
) -> list[Manifest]:
    """cert-manager Certificates (cert-manager.io/v1) for the same Secrets: `issuer` is its issuerRef
    ({name, kind: Issuer or ClusterIssuer, group})."""
    seconds = int(lifetime.total_seconds())
    certificates = []
    for component in ROLES:
        who = identity(platform, component)
        spec: dict[str, Any] = {
            "secretName": secret_name(platform, component),
            "commonName": who.id[:64],
            "uris": [pki.spiffe_id(who)],
            "duration": f"{seconds}s",
            "renewBefore": f"{seconds - int(seconds * RENEW_AT)}s",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["digital signature", "client auth"],
            "issuerRef": dict(issuer),
        }
        if who.role in pki.SERVER_ROLES:
            spec["dnsNames"] = [pki.server_name(who.role)]
            spec["usages"].append("server auth")
        certificates.append(
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": object_metadata(
                    platform, namespace, secret_name(platform, component), component, owner
                ),
                "spec": spec,
            }
        )
    return certificates
