"""The chart and the operator against a real kube-apiserver.

`helm install` the chart, run the operator (as a process, with the token of the chart's ServiceAccount,
so the chart's RBAC is what it gets), apply the examples, and check what ends up in the API server.
Tests run in file order and build on each other (one release, one operator).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.wait import wait_for

from .cluster import REPO_ROOT, ControlPlane, free_port

CHART = REPO_ROOT / "charts" / "trunkline"
EXAMPLES = REPO_ROOT / "examples"
RELEASE = "tl"
PREFIX = "tl-trunkline"  # the chart's fullname for this release


class Cluster:
    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp = cp
        self.ns = namespace

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.cp.kubectl("get", kind, name, "-n", self.ns, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def apply(self, manifest: dict[str, Any] | str, check: bool = True) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.cp.kubectl("apply", "-n", self.ns, "-f", "-", input=text, check=check)

    def condition(self, kind: str, name: str, type_: str = "Ready") -> tuple[str, str] | None:
        obj = self.get(kind, name) or {}
        for c in obj.get("status", {}).get("conditions", []):
            if c["type"] == type_:
                return (c["status"], c["reason"])
        return None

    def wait_condition(self, kind: str, name: str, expected: tuple[str, str], type_: str = "Ready") -> None:
        wait_for(lambda: self.condition(kind, name, type_) == expected, f"{kind} {name} {type_}={expected}")


def install(cp: ControlPlane, *values: str) -> Cluster:
    """`helm install` the chart into a fresh namespace (namespaces are never finalised here)."""
    namespace = f"trunkline-{secrets.token_hex(3)}"
    cp.kubectl("create", "namespace", namespace)
    # No --wait: without a kubelet no pod ever runs.
    cp.helm("install", RELEASE, str(CHART), "-n", namespace, *(f"--set={v}" for v in values))
    return Cluster(cp, namespace)


def _operator_args(cluster: Cluster, prefix: str = PREFIX) -> list[str]:
    """The operator's arguments as the chart's Deployment has them (health on a free local port)."""
    deployment = cluster.get("deployment", f"{prefix}-operator")
    assert deployment is not None
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "operator"
    return [a if not a.startswith("--liveness=") else f"--liveness=http://127.0.0.1:{free_port()}/healthz"
            for a in args[1:]]  # fmt: skip


@contextlib.contextmanager
def run_operator(cluster: Cluster, workdir: Path, prefix: str = PREFIX) -> Iterator[Path]:
    """Run the operator as the chart would, with its ServiceAccount's token (so with the chart's RBAC)."""
    cp = cluster.cp
    token = cp.kubectl("create", "token", f"{prefix}-operator", "-n", cluster.ns).stdout.strip()
    kubeconfig = json.loads(cp.kubeconfig.read_text())
    kubeconfig["users"][0]["user"] = {"token": token}
    (workdir / "kubeconfig").write_text(json.dumps(kubeconfig))
    log = workdir / "operator.log"
    # Through the `trunkline` entry point, as the container runs it (global flags such as --log-level).
    argv = ["operator", *_operator_args(cluster, prefix)]
    code = f"from trunkline.cli import main; raise SystemExit(main({argv!r}))"
    env = {**cp.env(), "KUBECONFIG": str(workdir / "kubeconfig")}
    with log.open("w") as out:
        # cwd outside the repo: its `operator/` folder must not shadow the standard library's.
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print("---- operator log (tail) ----\n" + "\n".join(log.read_text().splitlines()[-60:]))


def assert_clean_log(log: Path) -> None:
    """No permission the chart forgot, no crash."""
    text = log.read_text()
    for bad in ("Forbidden", " 403 ", "status=403", "Traceback", "cannot write status", "not applied"):
        assert bad not in text, f"{bad!r} in the operator log:\n{text[-4000:]}"


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Cluster:
    # Fast resync, so that platform changes show up within seconds. No live counts: this is the operator
    # without the edges' Redis (test_trunk_status_counts.py has it with one).
    return install(
        control_plane, "operator.resyncSeconds=5", "operator.drainGracePeriodSeconds=20",
        "operator.liveCounts.enabled=false",
    )  # fmt: skip


@pytest.fixture(scope="module")
def operator_log(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with run_operator(cluster, tmp_path_factory.mktemp("operator")) as log:
        yield log


@pytest.fixture(scope="module")
def k(cluster: Cluster, operator_log: Path) -> Cluster:
    return cluster


# ---------------------------------------------------------------------------------------------------


def test_chart_installs_crds_and_operator(k: Cluster) -> None:
    status = json.loads(k.cp.helm("status", RELEASE, "-n", k.ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    crds = k.cp.kubectl("get", "crd", "-o", "name").stdout.split()
    assert {
        f"customresourcedefinition.apiextensions.k8s.io/{p}.trunkline.io"
        for p in ("trunks", "dids", "carriers")
    } <= set(crds)
    assert k.get("configmap", f"{PREFIX}-platform") is not None


def test_operator_writes_the_data_plane(k: Cluster) -> None:
    platform = k.get("configmap", f"{PREFIX}-platform")
    assert platform is not None
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": f"{PREFIX}-platform",
             "uid": platform["metadata"]["uid"], "controller": True}  # fmt: skip
    names = [
        ("configmap", f"{PREFIX}-runtime"), ("deployment", f"{PREFIX}-control"),
        ("service", f"{PREFIX}-control"), ("deployment", f"{PREFIX}-edge"), ("service", f"{PREFIX}-edge-udp"),
        ("service", f"{PREFIX}-edge-tcp"), ("horizontalpodautoscaler", f"{PREFIX}-edge"),
        ("deployment", f"{PREFIX}-media"), ("deployment", f"{PREFIX}-cdr"),
    ]  # fmt: skip
    for kind, name in names:
        obj = wait_for(lambda kind=kind, name=name: k.get(kind, name), f"{kind} {name}")
        assert obj["metadata"]["ownerReferences"] == [owner], (kind, name)

    udp, tcp = k.get("service", f"{PREFIX}-edge-udp"), k.get("service", f"{PREFIX}-edge-tcp")
    assert udp and tcp
    assert {p["protocol"] for p in udp["spec"]["ports"]} == {"UDP"}
    assert {p["protocol"] for p in tcp["spec"]["ports"]} == {"TCP"}

    hpa = k.get("horizontalpodautoscaler", f"{PREFIX}-edge")
    assert hpa and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{PREFIX}-edge"

    edge = k.get("deployment", f"{PREFIX}-edge")
    assert edge is not None
    pod = edge["spec"]["template"]
    assert "checksum/config" in pod["metadata"]["annotations"]
    container = pod["spec"]["containers"][0]
    assert container["args"][0] == "edge"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    control = k.get("deployment", f"{PREFIX}-control")
    assert control is not None
    assert control["spec"]["template"]["spec"]["serviceAccountName"] == f"{PREFIX}-control"


def test_examples_become_ready(k: Cluster) -> None:
    k.cp.kubectl("apply", "-n", k.ns, "-f", str(EXAMPLES))
    for kind, name in [
        ("trunk", "acme"),
        ("did", "acme-main"),
        ("did", "acme-support"),
        ("carrier", "pstn-local"),
    ]:
        k.wait_condition(kind, name, ("True", "Reconciled"))
    trunk = k.get("trunk", "acme")
    assert trunk is not None
    assert "trunkline.io/drain" in trunk["metadata"]["finalizers"]
    status = trunk["status"]
    assert status["observedGeneration"] == trunk["metadata"]["generation"] == 1
    # Without the shared store the operator knows no counts, and shows none rather than a made-up 0.
    assert "activeCalls" not in status and "registeredContacts" not in status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["observedGeneration"] == 1 and ready["lastTransitionTime"]


def test_trunk_change_shows_in_status_without_touching_the_pods(k: Cluster) -> None:
    checksum_before = (k.get("deployment", f"{PREFIX}-edge") or {})["spec"]["template"]["metadata"][
        "annotations"
    ]
    patch = {"spec": {"auth": {"digest": {"credentialsSecret": "nowhere"}}}}
    k.cp.kubectl("patch", "trunk", "acme", "-n", k.ns, "--type=merge", "-p", json.dumps(patch))
    k.wait_condition("trunk", "acme", ("True", "MissingSecret"), "Degraded")
    trunk = k.get("trunk", "acme")
    assert trunk is not None
    assert trunk["status"]["observedGeneration"] == trunk["metadata"]["generation"] == 2
    assert "Secret 'nowhere' not found" in json.dumps(trunk["status"]["conditions"])

    patch["spec"]["auth"]["digest"]["credentialsSecret"] = "acme-pbx-credentials"
    k.cp.kubectl("patch", "trunk", "acme", "-n", k.ns, "--type=merge", "-p", json.dumps(patch))
    k.wait_condition("trunk", "acme", ("True", "Reconciled"))
    # Trunk data reaches the edges through the control service: no rollout.
    edge = k.get("deployment", f"{PREFIX}-edge") or {}
    assert edge["spec"]["template"]["metadata"]["annotations"] == checksum_before


def test_no_carrier_for_an_allowed_prefix(k: Cluster) -> None:
    carrier = k.get("carrier", "pstn-local")
    assert carrier is not None
    k.cp.kubectl(
        "patch", "carrier", "pstn-local", "-n", k.ns, "--type=merge", "-p", '{"spec":{"prefixes":["+1"]}}'
    )
    k.wait_condition("trunk", "acme", ("True", "NoCarrierForPrefix"), "Degraded")  # "+44" is not served
    k.cp.kubectl(
        "patch", "carrier", "pstn-local", "-n", k.ns, "--type=merge", "-p", '{"spec":{"prefixes":[]}}'
    )
    k.wait_condition("trunk", "acme", ("True", "Reconciled"))


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            {"kind": "DID", "metadata": {"name": "bad-number"},
             "spec": {"number": "0800-FLOWERS", "trunkRef": "acme"}},
            "spec.number in body should match '^\\+[1-9][0-9]{1,14}$'",
        ),
        (
            {"kind": "Trunk", "metadata": {"name": "bad-cidr"},
             "spec": {"auth": {"ipAcl": ["10.0.0.300/8"]}}},
            'spec.auth.ipAcl[0] in body must be of type cidr: "10.0.0.300/8"',
        ),
        (
            {"kind": "Carrier", "metadata": {"name": "bad-field"},
             "spec": {"gateways": [{"uri": "sip:gw.example.net"}], "gatway": "typo"}},
            'unknown field "spec.gatway"',
        ),
    ],
)  # fmt: skip
def test_api_server_rejects_invalid_resources(k: Cluster, manifest: dict[str, Any], message: str) -> None:
    result = k.apply({"apiVersion": "trunkline.io/v1alpha1", **manifest}, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert k.get(manifest["kind"].lower(), manifest["metadata"]["name"]) is None


def test_a_number_claimed_twice_is_degraded(k: Cluster) -> None:
    k.apply({"apiVersion": "trunkline.io/v1alpha1", "kind": "DID", "metadata": {"name": "acme-main-again"},
             "spec": {"number": "+14155550100", "trunkRef": "acme"}})  # fmt: skip
    k.wait_condition("did", "acme-main-again", ("True", "DuplicateDID"), "Degraded")
    k.wait_condition("did", "acme-main", ("True", "Reconciled"))
    k.cp.kubectl("delete", "did", "acme-main-again", "-n", k.ns)


def test_platform_change_rolls_the_pods(k: Cluster) -> None:
    def edge_checksum() -> str:
        edge = k.get("deployment", f"{PREFIX}-edge") or {}
        value: str = edge["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    before = edge_checksum()
    k.cp.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        k.ns,
        "--reuse-values",
        "--set",
        "redis.url=redis://other:6379/0",
    )
    # The operator picks the platform up on its next resync (5 s here; in a cluster the upgrade also
    # rolls the operator at once through its checksum/platform annotation).
    wait_for(lambda: edge_checksum() != before, "a new checksum/config on the edge pods", timeout=30)
    runtime = k.get("configmap", f"{PREFIX}-runtime") or {}
    assert runtime["data"]["TRUNKLINE_REDIS_URL"] == "redis://other:6379/0"


def test_deleting_a_trunk_drains_it_and_degrades_its_dids(k: Cluster) -> None:
    k.cp.kubectl("delete", "trunk", "acme", "-n", k.ns, "--wait=false")
    # The finalizer goes once live calls end; without the shared store none are known, so at once.
    wait_for(lambda: k.get("trunk", "acme") is None, "trunk acme to be gone")
    for did in ("acme-main", "acme-support"):
        k.wait_condition("did", did, ("False", "TrunkNotFound"))


def test_operator_needed_no_more_rights_and_never_crashed(k: Cluster, operator_log: Path) -> None:
    assert_clean_log(operator_log)
