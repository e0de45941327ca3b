"""A self-signed certificate for loopback TLS in tests (SIP over TLS, stunnel, kube-apiserver)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trunkline.core import pki
from trunkline.core.pki import KeyPair


def write_self_signed(cert_path: Path, key_path: Path, common_name: str = "trunkline-test") -> None:
    """An ECDSA P-256 cert for 127.0.0.1 and localhost, valid for two days, that is its own CA: the
    same file is the server's cert and the client's trust anchor (kubeconfig, Python ssl, OpenSSL)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)


def tls_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, Path, Path]:
    """A fresh cert in `directory` (cert.pem, key.pem): (server context, client context that trusts
    only it and checks the name, cert path, key path)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    write_self_signed(cert, key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client, cert, key


def write_plane_certs(directory: Path, *identities: str, ca: KeyPair | None = None) -> dict[str, list[str]]:
    """A CA (ca.pem) and, per "role/id", a certificate and key signed by it: {"role/id": the flags
    `--grpc-ca ... --grpc-cert ... --grpc-key ...` for a component that presents it}."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = ca or pki.new_ca()
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    flags = {}
    for name in identities:
        role, _, ident = name.partition("/")
        pair = pki.issue(ca, pki.Identity(role, ident))
        stem = name.replace("/", "-")
        cert, key = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
        cert.write_bytes(pair.cert_pem)
        key.write_bytes(pair.key_pem)
        key.chmod(0o600)
        flags[name] = ["--grpc-ca", str(directory / "ca.pem"), "--grpc-cert", str(cert)]
        flags[name] += ["--grpc-key", str(key)]
    return flags
