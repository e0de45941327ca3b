"""The operator's internal-plane certificates (pure): made once, issued per component with the right
identity, issued again when due, from another CA or unreadable; cert-manager Certificates alike."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from trunkline.core import pki
from trunkline.operator import grpc_certs
from trunkline.operator.network_policies import build_network_policies
from trunkline.operator.platform import Platform

PLATFORM = Platform.model_validate({"name": "tl"})
NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
MONTH = datetime.timedelta(days=30)
COMPONENTS = ["tl-grpc-control", "tl-grpc-edge", "tl-grpc-media"]
Secrets = dict[str, dict[str, Any]]


def issue_all(
    existing: dict[str, dict[str, Any]], now: datetime.datetime, lifetime: datetime.timedelta = MONTH
):
    updates = grpc_certs.certificate_updates(PLATFORM, "voice", existing.get, lifetime, now)
    for update in updates:
        existing[update["metadata"]["name"]] = update
    return [u["metadata"]["name"] for u in updates]


def data(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def test_a_ca_and_one_certificate_per_component_then_nothing_until_due() -> None:
    secrets: dict[str, dict[str, Any]] = {}
    assert issue_all(secrets, NOW) == ["tl-grpc-ca", "tl-grpc-control", "tl-grpc-edge", "tl-grpc-media"]
    ids = {name: pki.identity_of(data(s, "tls.crt")) for name, s in secrets.items() if name != "tl-grpc-ca"}
    assert ids == {
        "tl-grpc-control": pki.Identity("control", "tl-control"),
        "tl-grpc-edge": pki.Identity("edge", "tl-edge"),
        "tl-grpc-media": pki.Identity("relay", "tl-media-*"),
    }
    assert all(data(s, "ca.crt") == data(secrets["tl-grpc-ca"], "ca.crt") for s in secrets.values())
    assert issue_all(secrets, NOW + datetime.timedelta(days=19)) == []
    # Two thirds through: all three again, from the same CA.
    assert issue_all(secrets, NOW + datetime.timedelta(days=21)) == [
        "tl-grpc-control",
        "tl-grpc-edge",
        "tl-grpc-media",
    ]


def test_a_shortened_lifetime_applies_at_once() -> None:
    secrets: Secrets = {}
    issue_all(secrets, NOW)
    assert issue_all(secrets, NOW, lifetime=datetime.timedelta(minutes=2)) == COMPONENTS
    assert (
        issue_all(secrets, NOW + datetime.timedelta(seconds=60), lifetime=datetime.timedelta(minutes=2)) == []
    )


def test_a_new_ca_or_a_damaged_secret_means_new_certificates() -> None:
    secrets: dict[str, dict[str, Any]] = {}
    issue_all(secrets, NOW)
    secrets["tl-grpc-edge"]["data"]["tls.crt"] = "not base64!"
    assert issue_all(secrets, NOW) == ["tl-grpc-edge"]
    del secrets["tl-grpc-ca"]
    assert issue_all(secrets, NOW) == ["tl-grpc-ca", "tl-grpc-control", "tl-grpc-edge", "tl-grpc-media"]


def test_cert_manager_certificates_ask_for_the_same_identities() -> None:
    issuer = {"name": "internal", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    certs = {
        c["metadata"]["name"]: c["spec"]
        for c in grpc_certs.cert_manager_certificates(PLATFORM, "voice", issuer, MONTH)
    }
    assert certs["tl-grpc-media"]["uris"] == ["spiffe://trunkline/relay/tl-media-*"]
    assert (
        certs["tl-grpc-control"]["dnsNames"] == ["control.trunkline"]
        and "dnsNames" not in certs["tl-grpc-edge"]
    )
    assert (
        certs["tl-grpc-edge"]["duration"] == "2592000s" and certs["tl-grpc-edge"]["renewBefore"] == "864000s"
    )
    assert all(spec["issuerRef"] == issuer and spec["secretName"] == name for name, spec in certs.items())


def test_network_policies_admit_only_the_callers_of_each_plane() -> None:
    policies = {
        p["metadata"]["name"]: p["spec"] for p in build_network_policies(PLATFORM, "voice", {"app": "redis"})
    }
    control = policies["tl-control"]["ingress"][0]
    callers = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in control["from"]}
    assert callers == {"edge", "media", "operator"} and control["ports"] == [
        {"protocol": "TCP", "port": 9000}
    ]
    media = policies["tl-media"]["ingress"]
    assert {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in media[0]["from"]} == {
        "edge",
        "operator",
    }
    assert media[1] == {"ports": [{"protocol": "UDP", "port": 20000, "endPort": 29999}]}  # RTP from anywhere
    assert "from" not in policies["tl-edge"]["ingress"][0]  # SIP from anywhere
    redis = policies["tl-redis"]
    assert redis["podSelector"] == {"matchLabels": {"app": "redis"}}
    ours = {"app.kubernetes.io/name": "trunkline", "app.kubernetes.io/instance": "tl"}
    peers = [{"podSelector": {"matchLabels": ours}}, {"podSelector": {"matchLabels": {"app": "redis"}}}]
    assert redis["ingress"] == [{"from": peers}]  # Redis's own pods: replication, sentinels
    assert "tl-redis" not in {p["metadata"]["name"] for p in build_network_policies(PLATFORM, "voice")}


def test_every_pod_mounts_its_certificate_and_finds_it_by_environment() -> None:
    from trunkline.operator.builders import build_data_plane, runtime_env

    platform = Platform.model_validate(
        {"name": "tl", "media": {"kind": "DaemonSet"},
         "redis": {"url": "rediss://redis:6380/0", "caSecret": {"name": "redis-tls"}}}
    )  # fmt: skip
    env = runtime_env(platform, "voice")
    assert env["TRUNKLINE_GRPC_CA"] == "/etc/trunkline/grpc/ca.crt"
    assert env["TRUNKLINE_GRPC_CERT"] == "/etc/trunkline/grpc/tls.crt"
    assert env["TRUNKLINE_GRPC_KEY"] == "/etc/trunkline/grpc/tls.key"
    assert env["TRUNKLINE_REDIS_CA"] == "/etc/trunkline/redis-ca/ca.crt"
    made = build_data_plane(platform, "voice")
    workloads = {o["metadata"]["name"]: o for o in made if o["kind"] in ("Deployment", "DaemonSet")}
    for component in ("control", "edge", "media"):
        pod = workloads[f"tl-{component}"]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["grpc-tls"]["secret"]["secretName"] == f"tl-grpc-{component}"
        assert volumes["redis-ca"]["secret"] == {
            "secretName": "redis-tls",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["grpc-tls"] == "/etc/trunkline/grpc" and mounts["redis-ca"] == "/etc/trunkline/redis-ca"
    media_args = workloads["tl-media"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert media_args[media_args.index("--listen") + 1] == "$(POD_IP):9001"  # host network: not 0.0.0.0
