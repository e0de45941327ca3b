"""The e2e control plane is a real Kubernetes API server that kubectl and helm can use."""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

from .cluster import ControlPlane


def _namespace(cp: ControlPlane, prefix: str) -> str:
    # Namespaces are never finalised without kube-controller-manager: use a fresh one per test.
    name = f"{prefix}-{secrets.token_hex(3)}"
    out = cp.kubectl("create", "namespace", name).stdout
    assert out.strip() == f"namespace/{name} created"
    return name


def test_kubeconfig_is_exported(control_plane: ControlPlane) -> None:
    assert os.environ["KUBECONFIG"] == str(control_plane.kubeconfig)
    assert control_plane.server.startswith("https://127.0.0.1:")


def test_server_version_is_stamped(control_plane: ControlPlane) -> None:
    binary = control_plane.run("kube-apiserver", "--version").stdout.split()
    assert binary[0] == "Kubernetes"
    expected = binary[1]
    major, minor = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", expected).groups()  # type: ignore[union-attr]

    server = json.loads(control_plane.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert server["gitVersion"] == expected
    assert (server["major"], server["minor"]) == (major, minor)


def test_configmap_round_trip(control_plane: ControlPlane) -> None:
    ns = _namespace(control_plane, "boot")
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "greeting", "namespace": ns},
            "data": {"hello": "world"},
        }
    )
    out = control_plane.kubectl("apply", "-f", "-", input=manifest).stdout
    assert out.strip() == "configmap/greeting created"

    cm = json.loads(control_plane.kubectl("get", "configmap", "greeting", "-n", ns, "-o", "json").stdout)
    assert cm["data"] == {"hello": "world"}
    assert cm["metadata"]["uid"]


def test_authentication_and_rbac_are_enforced(control_plane: ControlPlane) -> None:
    bad = control_plane.kubectl("get", "namespaces", "--token=wrong", check=False)
    assert bad.returncode != 0
    assert "Unauthorized" in bad.stderr

    # The admin (system:masters) may; a user without bindings may not.
    assert control_plane.kubectl("auth", "can-i", "create", "configmaps").stdout.strip() == "yes"
    nobody = control_plane.kubectl("auth", "can-i", "create", "configmaps", "--as=nobody", check=False)
    assert (nobody.returncode, nobody.stdout.strip()) == (1, "no")


def test_helm_installs_a_chart(control_plane: ControlPlane, tmp_path: Path) -> None:
    version = control_plane.helm("version", "--short").stdout.strip()
    assert re.match(r"v3\.\d+\.\d+", version), version

    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    # kubeVersion makes helm check the server's stamped version (v0.0.0 would fail it).
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: {{ .Release.Name }}-tiny\n"
        "data:\n"
        "  greeting: {{ .Values.greeting | quote }}\n"
    )

    ns = _namespace(control_plane, "helm")
    control_plane.helm("install", "demo", str(chart), "-n", ns, "--set", "greeting=bonjour")

    releases = json.loads(control_plane.helm("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]

    cm = json.loads(control_plane.kubectl("get", "configmap", "demo-tiny", "-n", ns, "-o", "json").stdout)
    assert cm["data"] == {"greeting": "bonjour"}
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
