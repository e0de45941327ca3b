"""The chart's other shape: namespace scope (Roles only), media on the host network, load balancers,
no HPA, TLS, Redis Sentinel; the operator runs with that RBAC and the API server accepts what it writes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.wait import wait_for

from .cluster import ControlPlane
from .test_operator_lifecycle import (
    CHART,
    EXAMPLES,
    PREFIX,
    RELEASE,
    Cluster,
    assert_clean_log,
    install,
    run_operator,
)

VALUES = (
    "operator.scope=namespace",
    "operator.resyncSeconds=5",
    "media.kind=DaemonSet",
    "edge.udpService.type=LoadBalancer",
    "edge.tcpService.type=LoadBalancer",
    # Named: left empty, the edges wait for the load balancer's address (test_addresses_from_the_api.py).
    "edge.advertise=sip.example.net:5060",
    "edge.autoscaling.enabled=false",
    "edge.tls.enabled=true",
    "redis.sentinel.addresses={sentinel-0:26379,sentinel-1:26379}",
    "redis.passwordSecret.name=redis-auth",
    "logLevel=warning",
    "cdr.postgresDsnSecret.name=billing-db",
    "cdr.postgresDsnSecret.key=dsn",
)


@pytest.fixture(scope="module")
def k(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = install(control_plane, *VALUES)
    with run_operator(cluster, tmp_path_factory.mktemp("operator")) as log:
        yield cluster
        assert_clean_log(log)


def test_namespace_scope_has_no_cluster_wide_rights(k: Cluster) -> None:
    bindings = k.cp.kubectl("get", "clusterrolebindings", "-o", "name").stdout.split()
    assert not [b for b in bindings if k.ns in b]
    can = k.cp.kubectl("auth", "can-i", "list", "trunks.trunkline.io", "-n", "default",
                       f"--as=system:serviceaccount:{k.ns}:{PREFIX}-operator", check=False)  # fmt: skip
    assert can.stdout.strip() == "no"


def test_data_plane_follows_the_values(k: Cluster) -> None:
    media = wait_for(lambda: k.get("daemonset", f"{PREFIX}-media"), "the media DaemonSet")
    assert media["spec"]["template"]["spec"]["hostNetwork"] is True
    for name in ("edge-udp", "edge-tcp"):
        service = wait_for(lambda name=name: k.get("service", f"{PREFIX}-{name}"), f"service {name}")
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["spec"]["externalTrafficPolicy"] == "Local"
    tcp = k.get("service", f"{PREFIX}-edge-tcp") or {}
    assert [p["name"] for p in tcp["spec"]["ports"]] == ["sip-tcp", "sip-tls"]
    edge = wait_for(lambda: k.get("deployment", f"{PREFIX}-edge"), "the edge Deployment")
    assert edge["spec"]["replicas"] == 2
    assert k.get("horizontalpodautoscaler", f"{PREFIX}-edge") is None
    runtime = wait_for(lambda: k.get("configmap", f"{PREFIX}-runtime"), "the runtime ConfigMap")
    assert runtime["data"]["TRUNKLINE_REDIS_SENTINELS"] == "sentinel-0:26379,sentinel-1:26379"
    control = wait_for(lambda: k.get("deployment", f"{PREFIX}-control"), "the control Deployment")
    assert control["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--namespace", k.ns]
    exporter = wait_for(lambda: k.get("deployment", f"{PREFIX}-cdr"), "the CDR exporter Deployment")
    [container] = exporter["spec"]["template"]["spec"]["containers"]
    assert "--postgres" in container["args"]
    [dsn] = [e for e in container["env"] if e["name"] == "TRUNKLINE_CDR_POSTGRES_DSN"]
    assert dsn["valueFrom"]["secretKeyRef"] == {"name": "billing-db", "key": "dsn"}
    assert runtime["data"]["TRUNKLINE_CDR_STREAM"] == "trunkline:cdr"


def test_resources_reconcile_with_namespace_rbac(k: Cluster) -> None:
    k.cp.kubectl("apply", "-n", k.ns, "-f", str(EXAMPLES))
    for kind, name in [("trunk", "acme"), ("did", "acme-main"), ("carrier", "pstn-local")]:
        k.wait_condition(kind, name, ("True", "Reconciled"))


def test_switching_media_kind_removes_the_old_workload(k: Cluster) -> None:
    k.cp.helm("upgrade", RELEASE, str(CHART), "-n", k.ns, "--reuse-values", "--set", "media.kind=Deployment",
              "--set", "edge.autoscaling.enabled=true")  # fmt: skip
    wait_for(lambda: k.get("deployment", f"{PREFIX}-media"), "the media Deployment")
    wait_for(lambda: k.get("daemonset", f"{PREFIX}-media") is None, "the media DaemonSet to go")
    wait_for(lambda: k.get("horizontalpodautoscaler", f"{PREFIX}-edge"), "the edge HPA")


def test_every_edge_pod_mounts_the_operators_nonce_secret(k: Cluster) -> None:
    """The operator, with the chart's RBAC, writes the nonce keys and mounts them in the edge pods."""
    secret = wait_for(lambda: k.get("secret", f"{PREFIX}-nonce"), "the nonce Secret")
    assert secret["data"]["keys"] and "trunkline.io/nonce-key-rotated-at" in secret["metadata"]["annotations"]
    edge = wait_for(lambda: k.get("deployment", f"{PREFIX}-edge"), "the edge Deployment")
    pod = edge["spec"]["template"]["spec"]
    volume = {"name": "nonce", "secret": {"secretName": f"{PREFIX}-nonce", "defaultMode": 420}}
    assert volume in pod["volumes"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--nonce-secret-file") + 1] == "/etc/trunkline/nonce/keys"
    runtime = wait_for(lambda: k.get("configmap", f"{PREFIX}-runtime"), "the runtime ConfigMap")
    assert runtime["data"]["TRUNKLINE_LOG_LEVEL"] == "warning"
