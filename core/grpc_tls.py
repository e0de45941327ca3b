"""mTLS for the internal gRPC planes: how one process serves and dials gRPC, and who its peer is.

`GrpcSecurity` is either mutual TLS from three PEM files (CA, certificate, key: `--grpc-ca`,
`--grpc-cert`, `--grpc-key`, or TRUNKLINE_GRPC_CA/_CERT/_KEY) or, with `--insecure-grpc`, plaintext
that is refused for any address outside loopback. Servers require a client certificate signed by the CA
(a peer without one fails the TLS handshake) and re-read the files when they change, so a rotated
certificate is used from the next handshake on; clients read them whenever they open a channel and
check the server's certificate for the DNS name of the role they expect (`pki.server_name`), not the
address they dial. A peer's identity is the `spiffe://trunkline/<role>/<id>` URI SAN of its certificate
(`peer_identity`); `core/grpc_auth.py` decides what each role may call.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from trunkline.core.net import ConfigError
from trunkline.core.pki import Identity, identity_of, parse_spiffe_id, server_name
from trunkline.core.rpc_tracing import client_interceptors

log = logging.getLogger(__name__)

ENV = {"ca": "TRUNKLINE_GRPC_CA", "cert": "TRUNKLINE_GRPC_CERT", "key": "TRUNKLINE_GRPC_KEY"}
MAX_PEM = 64 * 1024  # a PEM file larger than this is not a certificate or key of ours


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost"; a wildcard (0.0.0.0) or any other name is not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(address: str) -> str:
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM or b"-----BEGIN" not in data:
        raise ConfigError(f"{what} {path}: not a PEM file")
    return data


@dataclass(frozen=True)
class _Files:
    ca: bytes
    cert: bytes
    key: bytes


class GrpcSecurity:
    """mTLS from files (`ca`, `cert`, `key`), or plaintext on loopback only (`insecure`)."""

    def __init__(
        self,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        insecure: bool = False,
        what: str = "this component",
    ) -> None:
        given = [p for p in (ca, cert, key) if p is not None]
        if insecure and given:
            raise ConfigError("--insecure-grpc and --grpc-ca/--grpc-cert/--grpc-key exclude each other")
        if not insecure and len(given) != 3:
            raise ConfigError(
                f"{what} needs --grpc-ca, --grpc-cert and --grpc-key (or $TRUNKLINE_GRPC_CA/_CERT/_KEY) "
                "for its gRPC; --insecure-grpc runs it without TLS on loopback addresses only"
            )
        self.ca, self.cert, self.key = ca, cert, key
        self.insecure = insecure
        self._stamp: tuple[float, ...] = ()
        if not insecure:
            self._load()  # unreadable files: ConfigError now, not at the first connection
            identity = self.identity
            if identity is None:
                raise ConfigError(f"--grpc-cert {cert}: no spiffe://trunkline/<role>/<id> URI SAN in it")

    @classmethod
    def insecure_loopback(cls) -> GrpcSecurity:
        """What `trunkline up` and tests use between parts that all listen on loopback."""
        return cls(insecure=True)

    @property
    def identity(self) -> Identity | None:
        """Our own identity, from our certificate (None when insecure)."""
        return None if self.insecure else identity_of(self._load().cert)

    def _paths(self) -> tuple[Path, Path, Path]:
        assert self.ca is not None and self.cert is not None and self.key is not None
        return self.ca, self.cert, self.key

    def _load(self) -> _Files:
        ca, cert, key = self._paths()
        return _Files(_read(ca, "--grpc-ca"), _read(cert, "--grpc-cert"), _read(key, "--grpc-key"))

    def stamp(self) -> tuple[int, ...]:
        """Changes when the certificate files do (clients reopen their channels then); () if insecure
        or the files are missing for a moment (a Secret volume swapping its data)."""
        if self.insecure:
            return ()
        try:
            return tuple(os.stat(p).st_mtime_ns for p in self._paths())
        except OSError:
            return ()

    def _changed(self) -> bool:
        stamp = self.stamp()
        if not stamp or stamp == self._stamp:
            return False
        self._stamp = stamp
        return True

    def _check_pair(self) -> None:
        """ConfigError unless the key file belongs to the certificate file (a rotation half-done)."""
        _, cert, key = self._paths()
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--grpc-cert {cert} and --grpc-key {key} do not fit together: {exc}") from None

    def check_listen(self, address: str, flag: str = "--listen") -> None:
        """ConfigError when plaintext would listen beyond loopback."""
        if self.insecure and not is_loopback(_host(address)):
            raise ConfigError(f"{flag} {address}: --insecure-grpc is accepted only on loopback addresses")

    def check_target(self, target: str, flag: str = "--control") -> None:
        """ConfigError when plaintext would dial beyond loopback."""
        if self.insecure and not is_loopback(_host(target)):
            raise ConfigError(f"{flag} {target}: --insecure-grpc is accepted only for loopback addresses")

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Bind `address` on `server`, with mTLS (certificate files re-read when they change)."""
        self.check_listen(address)
        if self.insecure:
            log.warning("gRPC on %s without TLS (--insecure-grpc, loopback only)", address)
            port: int = server.add_insecure_port(address)
            return port

        def configuration(files: _Files) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration([(files.key, files.cert)], files.ca)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC before each handshake: a cheap stat, and a reload after a rotation.
            if not self._changed():
                return None
            try:
                self._check_pair()
                files = self._load()
            except ConfigError as exc:
                self._stamp = ()  # look again at the next handshake
                log.error("keeping the previous gRPC certificate: %s", exc)
                return None
            log.info("gRPC server certificate reloaded from %s", self.cert)
            return configuration(files)

        self._changed()
        credentials = grpc.dynamic_ssl_server_credentials(
            configuration(self._load()), fetch, require_client_authentication=True
        )
        bound: int = server.add_secure_port(address, credentials)
        return bound

    def channel(self, target: str, server_role: str) -> grpc.aio.Channel:
        """A channel to a server of `server_role` (control or relay), with the current certificate
        files; ConfigError when plaintext would leave loopback or the files cannot be read."""
        interceptors = client_interceptors() or None  # the trace context, when tracing is on
        if self.insecure:
            self.check_target(target, "gRPC target")
            return grpc.aio.insecure_channel(target, interceptors=interceptors)
        files = self._load()
        credentials = grpc.ssl_channel_credentials(files.ca, files.key, files.cert)
        options = [("grpc.ssl_target_name_override", server_name(server_role))]
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def peer_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    """The calling peer's identity from its verified client certificate; None when the connection is
    not TLS (a server started with --insecure-grpc, on loopback) or the certificate names none."""
    auth: Mapping[str, list[bytes]] = context.auth_context()
    for uri in auth.get("peer_spiffe_id", []) + auth.get("x509_subject_alternative_name", []):
        identity = parse_spiffe_id(uri.decode("utf-8", "replace"))
        if identity is not None:
            return identity
    return None


def is_tls(context: grpc.aio.ServicerContext) -> bool:
    security_type: list[bytes] = context.auth_context().get("transport_security_type", [])
    return security_type == [b"ssl"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--grpc-ca, --grpc-cert, --grpc-key (defaults from the environment) and --insecure-grpc."""
    group = parser.add_argument_group("internal gRPC (mutual TLS)")
    for name, help_text in (
        ("ca", "CA certificate (PEM) that signed every trunkline component's certificate"),
        ("cert", "this component's certificate (PEM, URI SAN spiffe://trunkline/<role>/<id>)"),
        ("key", "this component's private key (PEM)"),
    ):
        group.add_argument(
            f"--grpc-{name}",
            default=os.environ.get(ENV[name]) or None,
            metavar="PEM",
            help=f"{help_text} (default: ${ENV[name]})",
        )
    group.add_argument(
        "--insecure-grpc",
        action="store_true",
        help="gRPC without TLS: accepted only for loopback addresses, logged as a warning",
    )


def from_arguments(args: argparse.Namespace, what: str) -> GrpcSecurity:
    """The GrpcSecurity the parsed command line asks for; ConfigError with the flag otherwise."""
    ca, cert, key = (Path(p) if p else None for p in (args.grpc_ca, args.grpc_cert, args.grpc_key))
    security = GrpcSecurity(ca, cert, key, args.insecure_grpc, what)
    if security.insecure:
        log.warning("%s: --insecure-grpc: internal gRPC without TLS (loopback only)", what)
    return security
