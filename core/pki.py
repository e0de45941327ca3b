"""The internal planes' certificates: a CA, and per-component certificates that name a role and an id.

A component's identity is one URI SAN, `spiffe://trunkline/<role>/<id>` (role: control, edge, relay,
operator; id: a pod, relay or workload name). A relay id may end in `*`: the certificate then speaks
for every relay id with that prefix (`trunkline-media-*`: the pods of one workload, whose names are not
known when the operator issues the workload's certificate); see `Identity.speaks_for`. Servers also
carry the DNS SAN `<role>.trunkline` (`server_name`), which clients check instead of the address they
dial: relays are dialled by pod IP and control by Service name, neither known when a certificate is
issued, while the role is. Keys are ECDSA P-256. Pure functions: the operator stores the results in
Secrets, tests write them to files.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "trunkline"
ROLES = frozenset({"control", "edge", "relay", "operator"})
SERVER_ROLES = frozenset({"control", "relay"})  # the roles that serve gRPC
IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
WILDCARD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}\*$")  # relays only: a prefix and `*`
CA_LIFETIME = datetime.timedelta(days=3650)
CERT_LIFETIME = datetime.timedelta(days=30)


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Identity:
    role: str
    id: str

    def __str__(self) -> str:
        return f"{self.role}/{self.id}"

    def speaks_for(self, relay_id: str) -> bool:
        """Whether this (relay) identity may register `relay_id`: the same id, or one its prefix
        wildcard covers (`media-*` covers `media-7f9c`, not `media-` alone nor `mediax-1`)."""
        if not self.id.endswith("*"):
            return relay_id == self.id
        prefix = self.id[:-1]
        return len(relay_id) > len(prefix) and relay_id.startswith(prefix) and bool(IDENTITY.match(relay_id))


def _valid(role: str, name: str) -> bool:
    return role in ROLES and bool(IDENTITY.match(name) or (role == "relay" and WILDCARD.match(name)))


def spiffe_id(identity: Identity) -> str:
    return f"spiffe://{TRUST_DOMAIN}/{identity.role}/{identity.id}"


def parse_spiffe_id(uri: str) -> Identity | None:
    """The identity in `spiffe://trunkline/<role>/<id>`; None for anything else."""
    prefix = f"spiffe://{TRUST_DOMAIN}/"
    if not uri.startswith(prefix):
        return None
    role, sep, name = uri[len(prefix) :].partition("/")
    if not sep or not _valid(role, name):
        return None
    return Identity(role, name)


def server_name(role: str) -> str:
    """The DNS SAN a server of `role` carries and its clients expect."""
    return f"{role}.{TRUST_DOMAIN}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    return KeyPair(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def new_ca(lifetime: datetime.timedelta = CA_LIFETIME, now: datetime.datetime | None = None) -> KeyPair:
    """A self-signed CA that may only sign end-entity certificates (path length 0)."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trunkline internal planes CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pair(cert, key)


def issue(
    ca: KeyPair,
    identity: Identity,
    lifetime: datetime.timedelta = CERT_LIFETIME,
    now: datetime.datetime | None = None,
) -> KeyPair:
    """A certificate for `identity`, signed by `ca`: client auth always, server auth (and the DNS SAN
    `server_name(role)`) for the roles that serve. ValueError for an unknown role or a bad id."""
    if not _valid(identity.role, identity.id):
        raise ValueError(f"{identity} is not <role>/<id> with role one of {sorted(ROLES)}")
    now = now or _now()
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    backdate = min(datetime.timedelta(minutes=5), lifetime / 10)  # clocks a little behind ours
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(identity))]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.role in SERVER_ROLES:
        names.append(x509.DNSName(server_name(identity.role)))
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role),
                    x509.NameAttribute(NameOID.COMMON_NAME, identity.id[:64]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pair(cert, key)


def identity_of(cert_pem: bytes) -> Identity | None:
    """The trunkline identity a certificate names (its first spiffe://trunkline/ URI SAN), if any."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if (identity := parse_spiffe_id(uri)) is not None:
            return identity
    return None


def validity(cert_pem: bytes) -> tuple[datetime.datetime, datetime.datetime]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def needs_renewal(cert_pem: bytes, now: datetime.datetime | None = None, at: float = 2 / 3) -> bool:
    """True once `at` of the certificate's lifetime has passed (or it cannot be read)."""
    try:
        start, end = validity(cert_pem)
    except ValueError:
        return True
    return (now or _now()) >= start + (end - start) * at
