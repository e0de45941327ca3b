"""The internal planes in a real kube-apiserver: the operator (with the chart's RBAC) issues the CA and
every component's certificate as Secrets, mounts them, rotates them before they expire (lifetime
shortened here), and writes NetworkPolicies the API server accepts; it can read no other Secret."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.wait import wait_for
from trunkline.core import pki

from .cluster import ControlPlane
from .test_operator_lifecycle import PREFIX, Cluster, assert_clean_log, install, run_operator

COMPONENTS = {"control": ("control", f"{PREFIX}-control"), "edge": ("edge", f"{PREFIX}-edge"),
              "media": ("relay", f"{PREFIX}-media-*")}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Cluster:
    return install(control_plane, "operator.resyncSeconds=5", "operator.liveCounts.enabled=false")


@pytest.fixture(scope="module")
def operator_log(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with run_operator(cluster, tmp_path_factory.mktemp("operator")) as log:
        yield log


@pytest.fixture(scope="module")
def k(cluster: Cluster, operator_log: Path) -> Cluster:
    return cluster


def secret_file(k: Cluster, name: str, key: str) -> bytes | None:
    secret = k.get("secret", name) or {}
    value = (secret.get("data") or {}).get(key)
    return base64.b64decode(value) if value else None


def test_the_operator_issues_a_ca_and_every_components_certificate(k: Cluster) -> None:
    ca = wait_for(lambda: secret_file(k, f"{PREFIX}-grpc-ca", "ca.crt"), "the CA Secret")
    for component, (role, name) in COMPONENTS.items():
        cert = wait_for(lambda c=component: secret_file(k, f"{PREFIX}-grpc-{c}", "tls.crt"), f"{component}'s")
        assert pki.identity_of(cert) == pki.Identity(role, name)
        assert secret_file(k, f"{PREFIX}-grpc-{component}", "ca.crt") == ca
        assert secret_file(k, f"{PREFIX}-grpc-{component}", "tls.key")
        name = f"{PREFIX}-{component}"
        workload = wait_for(lambda n=name: k.get("deployment", n), f"{component}'s workload")
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["grpc-tls"]["secret"]["secretName"] == f"{PREFIX}-grpc-{component}"
    runtime = k.get("configmap", f"{PREFIX}-runtime") or {}
    assert runtime["data"]["TRUNKLINE_GRPC_CERT"] == "/etc/trunkline/grpc/tls.crt"


def test_network_policies_apply(k: Cluster) -> None:
    for name in ("control", "media", "edge"):
        policy = wait_for(lambda n=name: k.get("networkpolicy", f"{PREFIX}-{n}"), f"NetworkPolicy {name}")
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    control = k.get("networkpolicy", f"{PREFIX}-control") or {}
    callers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
               for p in control["spec"]["ingress"][0]["from"]}  # fmt: skip
    assert callers == {"edge", "media", "operator"}
    media = k.get("networkpolicy", f"{PREFIX}-media") or {}
    assert media["spec"]["ingress"][1]["ports"] == [{"protocol": "UDP", "port": 20000, "endPort": 29999}]


def set_platform(k: Cluster, **changes: Any) -> None:
    """Change the platform ConfigMap the operator reads (as `helm upgrade` would)."""
    configmap = k.get("configmap", f"{PREFIX}-platform") or {}
    platform = yaml.safe_load(configmap["data"]["platform.yaml"])
    platform.update(changes)
    patch = {"data": {"platform.yaml": yaml.safe_dump(platform)}}
    k.cp.kubectl(
        "patch", "configmap", f"{PREFIX}-platform", "-n", k.ns, "--type=merge", "-p", json.dumps(patch)
    )


def test_certificates_are_rotated_before_they_expire(k: Cluster) -> None:
    ca = secret_file(k, f"{PREFIX}-grpc-ca", "ca.crt")
    set_platform(k, internalTls={"certificateLifetimeSeconds": 60})

    def short_cert() -> bytes | None:
        cert = secret_file(k, f"{PREFIX}-grpc-edge", "tls.crt")
        if cert is None:
            return None
        start, end = pki.validity(cert)
        return cert if (end - start).total_seconds() < 120 else None

    first = wait_for(short_cert, "a certificate with the shortened lifetime", timeout=60)
    # Renewed after two thirds of 66 s (resync every 5 s): a new certificate while the old one is valid.
    second = wait_for(lambda: (c := short_cert()) != first and c, "the renewed certificate", timeout=90)
    assert pki.validity(second)[0] < pki.validity(first)[1]  # issued before the old one expired
    assert secret_file(k, f"{PREFIX}-grpc-ca", "ca.crt") == ca  # same CA: nobody needs to reload trust


def test_the_operator_reads_no_other_secret(k: Cluster, operator_log: Path) -> None:
    k.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "someone-elses"},
             "stringData": {"token": "not-for-trunkline"}})  # fmt: skip
    who = f"--as=system:serviceaccount:{k.ns}:{PREFIX}-operator"

    def can(verb: str, what: str) -> bool:
        result = k.cp.kubectl("auth", "can-i", verb, what, "-n", k.ns, who, check=False)
        return result.stdout.strip() == "yes"

    assert can("get", f"secret/{PREFIX}-grpc-ca") and can("patch", f"secret/{PREFIX}-grpc-edge")
    assert not can("get", "secret/someone-elses") and not can("patch", "secret/someone-elses")
    assert not can("delete", f"secret/{PREFIX}-grpc-ca")
    assert_clean_log(operator_log)


def test_listed_namespaces_get_roles_there_and_nothing_else(control_plane: ControlPlane) -> None:
    """operator.namespaces: the RBAC applies, and the operator and control may read Secrets in those
    namespaces only (no ClusterRole)."""
    served = f"tenant-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", served)
    other = install(control_plane, f"operator.namespaces={{{served}}}", "operator.liveCounts.enabled=false")
    for account in ("operator", "control"):
        who = f"--as=system:serviceaccount:{other.ns}:{PREFIX}-{account}"

        def can(namespace: str, who: str = who) -> bool:
            ask = ("auth", "can-i", "list", "secrets", "-n", namespace, who)
            result = control_plane.kubectl(*ask, check=False)
            return result.stdout.strip() == "yes"

        assert can(served), account
        assert not can("default") and not can(other.ns), account  # not even the release's own
