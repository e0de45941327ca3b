"""The internal planes' certificates and their parsing (pure): identities, roles, renewal time, which
addresses plaintext gRPC may use, and that refusals are logged once per peer with bounded memory."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from trunkline.core import pki
from trunkline.core.grpc_auth import _Refusals
from trunkline.core.grpc_tls import GrpcSecurity, is_loopback
from trunkline.core.net import ConfigError


def test_issued_certificates_carry_role_id_and_server_name() -> None:
    ca = pki.new_ca()
    relay = pki.issue(ca, pki.Identity("relay", "media-7f9c"))
    assert pki.identity_of(relay.cert_pem) == pki.Identity("relay", "media-7f9c")
    cert = x509.load_pem_x509_certificate(relay.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["relay.trunkline"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://trunkline/relay/media-7f9c"]
    edge = x509.load_pem_x509_certificate(pki.issue(ca, pki.Identity("edge", "e1")).cert_pem)
    edge_sans = edge.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert edge_sans.get_values_for_type(x509.DNSName) == []  # a client only: no server name
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))


@pytest.mark.parametrize(
    "uri",
    ["spiffe://trunkline/admin/x", "spiffe://other/edge/x", "spiffe://trunkline/edge/", "spiffe://trunkline/edge/a/b",
     "https://trunkline/edge/x", "spiffe://trunkline/edge/" + "x" * 200],
)  # fmt: skip
def test_anything_but_a_known_role_and_a_plain_id_is_no_identity(uri: str) -> None:
    assert pki.parse_spiffe_id(uri) is None


def test_unknown_roles_and_bad_ids_are_not_issued() -> None:
    ca = pki.new_ca()
    for identity in (pki.Identity("admin", "x"), pki.Identity("edge", "a/b"), pki.Identity("edge", "")):
        with pytest.raises(ValueError):
            pki.issue(ca, identity)


def test_renewal_is_due_after_two_thirds_of_the_lifetime() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    pair = pki.issue(
        pki.new_ca(now=start), pki.Identity("edge", "e1"), datetime.timedelta(days=30), now=start
    )
    assert not pki.needs_renewal(pair.cert_pem, start + datetime.timedelta(days=19))
    assert pki.needs_renewal(pair.cert_pem, start + datetime.timedelta(days=21))
    assert pki.needs_renewal(b"not a certificate")


def test_a_certificate_outlives_its_ca_never() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    ca = pki.new_ca(datetime.timedelta(days=10), now=start)
    pair = pki.issue(ca, pki.Identity("edge", "e1"), datetime.timedelta(days=30), now=start)
    assert pki.validity(pair.cert_pem)[1] == pki.validity(ca.cert_pem)[1]


def test_plaintext_only_on_loopback() -> None:
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("127.5.0.1")
        and is_loopback("[::1]")
        and is_loopback("localhost")
    )
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "control.voice.svc", "192.0.2.1"))
    insecure = GrpcSecurity.insecure_loopback()
    insecure.check_listen("127.0.0.1:7000")
    insecure.check_target("localhost:7000")
    for address in ("0.0.0.0:7000", "[::]:7000", "10.1.2.3:7000"):
        with pytest.raises(ConfigError, match="loopback"):
            insecure.check_listen(address)
    with pytest.raises(ConfigError, match="loopback"):
        insecure.channel("10.1.2.3:7100", "relay")


def test_certificates_are_required_and_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --grpc-ca"):
        GrpcSecurity()
    with pytest.raises(ConfigError, match="exclude each other"):
        GrpcSecurity(tmp_path / "ca", tmp_path / "c", tmp_path / "k", insecure=True)
    with pytest.raises(ConfigError, match="--grpc-ca"):
        GrpcSecurity(tmp_path / "missing.pem", tmp_path / "c", tmp_path / "k")
    ca = pki.new_ca()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "key.pem").write_bytes(ca.key_pem)
    with pytest.raises(ConfigError, match="no spiffe"):  # the CA's own certificate names no component
        GrpcSecurity(tmp_path / "ca.pem", tmp_path / "ca.pem", tmp_path / "key.pem")
    pair = pki.issue(ca, pki.Identity("operator", "op"))
    (tmp_path / "op.pem").write_bytes(pair.cert_pem)
    (tmp_path / "op-key.pem").write_bytes(pair.key_pem)
    security = GrpcSecurity(tmp_path / "ca.pem", tmp_path / "op.pem", tmp_path / "op-key.pem")
    assert security.identity == pki.Identity("operator", "op")


def test_each_refusal_is_logged_once_per_peer_in_bounded_memory() -> None:
    refusals = _Refusals(size=3)
    assert refusals.first("edge/a", "no") and not refusals.first("edge/a", "no")
    assert refusals.first("edge/a", "other") and refusals.first("edge/b", "no")
    for peer in range(100):
        refusals.first(f"stranger-{peer}", "no")
    assert len(refusals.seen) == 3


def test_a_relay_wildcard_speaks_for_its_workloads_pods_only() -> None:
    ca = pki.new_ca()
    workload = pki.identity_of(pki.issue(ca, pki.Identity("relay", "trunkline-media-*")).cert_pem)
    assert workload == pki.Identity("relay", "trunkline-media-*")
    assert workload.speaks_for("trunkline-media-7d9f8-x2k4q")
    assert not workload.speaks_for("trunkline-media-") and not workload.speaks_for("trunkline-mediax-1")
    assert not workload.speaks_for("other-relay")
    exact = pki.Identity("relay", "relay-a")
    assert exact.speaks_for("relay-a") and not exact.speaks_for("relay-ab")
    with pytest.raises(ValueError):  # only relays have wildcards
        pki.issue(ca, pki.Identity("edge", "edge-*"))
    assert pki.parse_spiffe_id("spiffe://trunkline/relay/*") is None
