"""The Helm chart: lint, render, and read what it renders (no cluster needed, only the helm binary)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.helm import CHART, find, helm, one, render
from trunkline.operator.builders import build_data_plane
from trunkline.operator.platform import MediaKind, parse_platform


def platform_of(docs: list[dict[str, Any]]) -> Any:
    return parse_platform(one(docs, "ConfigMap", "tl-trunkline-platform")["data"])


def test_lint_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == ">=1.28.0-0"


def test_default_render() -> None:
    docs = render()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Pod", "Role", "RoleBinding",
        "ServiceAccount",
    ]  # fmt: skip
    # The chart deploys the operator only; the data plane is the operator's to write.
    (deployment,) = find(docs, "Deployment")
    assert deployment["metadata"]["name"] == "tl-trunkline-operator"


def test_platform_configmap_is_a_valid_platform() -> None:
    platform = platform_of(render())
    assert platform.name == "tl-trunkline"
    assert platform.image == "ghcr.io/trunkline/trunkline:0.1.0"
    assert platform.control.serviceAccountName == "tl-trunkline-control"
    assert platform.redis.url == "redis://redis:6379/0" and platform.redis.sentinel is None
    assert platform.watchNamespace is None
    assert platform.edge.advertise is None  # the UDP Service's cluster name, by the operator
    # The operator's data plane carries the chart's instance label.
    for obj in build_data_plane(platform, "voice"):
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "tl-trunkline"


def test_platform_from_values() -> None:
    platform = platform_of(
        render(
            "redis.sentinel.addresses={s1:26379,s2:26379}",
            "redis.passwordSecret.name=redis-auth",
            "edge.tls.enabled=true",
            "edge.advertise=sip.example.net:5060",
            "edge.udpService.type=LoadBalancer",
            "edge.autoscaling.enabled=false",
            "media.kind=DaemonSet",
            "operator.scope=namespace",
        )
    )
    assert platform.redis.url is None
    assert platform.redis.sentinel is not None and platform.redis.sentinel.addresses == [
        "s1:26379",
        "s2:26379",
    ]
    assert platform.redis.passwordSecret is not None and platform.redis.passwordSecret.name == "redis-auth"
    assert platform.edge.tls is not None and platform.edge.tls.secretName == "trunkline-edge-tls"
    assert platform.edge.udpService.type == "LoadBalancer"
    assert platform.edge.advertise == "sip.example.net:5060"
    assert not platform.edge.autoscaling.enabled
    assert platform.media.kind is MediaKind.DAEMON_SET
    assert platform.watchNamespace == "voice"


def test_cdr_sinks_from_values() -> None:
    platform = platform_of(
        render(
            "cdr.postgresDsnSecret.name=billing-db",
            "cdr.postgresDsnSecret.key=dsn",
            "cdr.webhook.url=https://billing.example.net/cdr",
            "cdr.webhook.secretRef.name=hook",
            "cdr.jsonl=false",
            "cdr.replicas=2",
        )
    )
    assert platform.cdr.postgresDsnSecret is not None and platform.cdr.postgresDsnSecret.key == "dsn"
    assert platform.cdr.webhook is not None and platform.cdr.webhook.secretRef.name == "hook"
    assert (platform.cdr.jsonl, platform.cdr.replicas, platform.cdr.stream) == (False, 2, "trunkline:cdr")
    assert platform_of(render()).cdr.jsonl  # by default: JSON lines in the exporter's log


def test_operator_deployment_is_secure_and_standalone() -> None:
    deployment = one(render(), "Deployment", "tl-trunkline-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "tl-trunkline-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["args"][:3] == ["operator", "--standalone", "--all-namespaces"]
    assert "--platform=voice/tl-trunkline-platform" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "checksum/platform" in spec["template"]["metadata"]["annotations"]


def test_platform_change_rolls_the_operator() -> None:
    def stamp(*sets: str) -> str:
        deployment = one(render(*sets), "Deployment", "tl-trunkline-operator")
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/platform"]
        return value

    assert stamp() == stamp()
    assert stamp() != stamp("edge.replicas=5")


def rules(docs: list[dict[str, Any]], kind: str, name: str) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '*') of a role, flattened."""
    found = set()
    for rule in one(docs, kind, name)["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name_ in rule.get("resourceNames", ["*"]):
                        found.add((group, resource, verb, name_))
    return found


def test_rbac_is_least_privilege() -> None:
    docs = render()
    watch = rules(docs, "ClusterRole", "voice-tl-trunkline-operator")
    assert watch == {
        ("trunkline.io", "trunks", "list", "*"), ("trunkline.io", "trunks", "watch", "*"),
        ("trunkline.io", "trunks", "patch", "*"),
        ("trunkline.io", "dids", "list", "*"), ("trunkline.io", "dids", "watch", "*"),
        ("trunkline.io", "carriers", "list", "*"), ("trunkline.io", "carriers", "watch", "*"),
        ("trunkline.io", "trunks/status", "patch", "*"), ("trunkline.io", "dids/status", "patch", "*"),
        ("trunkline.io", "carriers/status", "patch", "*"),
        ("", "secrets", "list", "*"), ("", "secrets", "watch", "*"),
        ("", "events", "create", "*"),
    }  # fmt: skip
    data_plane = rules(docs, "Role", "tl-trunkline-operator-data-plane")
    # Nothing but create may be unnamed; nothing written outside the data plane.
    assert {r for r in data_plane if r[3] == "*"} == {
        ("", "configmaps", "create", "*"), ("", "services", "create", "*"), ("", "secrets", "create", "*"),
        ("apps", "deployments", "create", "*"), ("apps", "daemonsets", "create", "*"),
        ("autoscaling", "horizontalpodautoscalers", "create", "*"),
        ("", "secrets", "create", "*"), ("networking.k8s.io", "networkpolicies", "create", "*"),
        ("cert-manager.io", "certificates", "create", "*"),
        ("policy", "poddisruptionbudgets", "create", "*"),
    }  # fmt: skip
    # The only Secrets it may read or change: the edges' nonce keys, the internal planes' CA and
    # certificates.
    assert {r[3] for r in data_plane if r[1] == "secrets" and r[3] != "*"} == {
        "tl-trunkline-nonce",
        *(f"tl-trunkline-grpc-{c}" for c in ("ca", "control", "edge", "media")),
    }
    assert ("", "configmaps", "get", "tl-trunkline-platform") in data_plane
    assert ("", "configmaps", "patch", "tl-trunkline-platform") in data_plane  # its verdict, an annotation
    # ...and only to get and patch them.
    assert {r[2] for r in data_plane if r[1] == "secrets" and r[3] != "*"} == {"get", "patch"}
    # The operator may update and remove the CDR exporter's Deployment, and only that one by that name.
    assert {
        ("apps", "deployments", "patch", "tl-trunkline-cdr"),
        ("apps", "deployments", "delete", "tl-trunkline-cdr"),
    } <= data_plane
    assert {r for r in data_plane if r[1] == "poddisruptionbudgets" and r[3] != "*"} == {
        ("policy", "poddisruptionbudgets", "patch", "tl-trunkline-edge"),
        ("policy", "poddisruptionbudgets", "patch", "tl-trunkline-media"),
    }
    # Of the Services it reads one: the UDP Service, for its load-balancer address.
    assert {r for r in data_plane if r[1] == "services" and r[2] == "get"} == {
        ("", "services", "get", "tl-trunkline-edge-udp")
    }
    assert not any(verb in ("update", "*", "escalate", "bind") for _, _, verb, _ in watch | data_plane)
    assert not find(docs, "ClusterRole", "voice-tl-trunkline-media-operator")  # no Node is read
    # The control service may only read.
    control = rules(docs, "ClusterRole", "voice-tl-trunkline-control")
    assert {verb for _, _, verb, _ in control} == {"get", "list", "watch"}


def test_the_operator_lists_nodes_only_for_relays_that_read_theirs() -> None:
    docs = render("media.kind=DaemonSet", "media.advertise=nodeExternalIP")
    assert rules(docs, "ClusterRole", "voice-tl-trunkline-media-operator") == {("", "nodes", "list", "*")}
    [subject] = one(docs, "ClusterRoleBinding", "voice-tl-trunkline-media-operator")["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": "tl-trunkline-operator", "namespace": "voice"}


def test_namespace_scope_uses_roles() -> None:
    docs = render("operator.scope=namespace")
    assert find(docs, "Role", "voice-tl-trunkline-operator")
    assert find(docs, "RoleBinding", "voice-tl-trunkline-operator")
    # Nothing cluster-wide at all (kopf's CRD and namespace scanning is off).
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=voice" in args and "--all-namespaces" not in args


def test_helm_test_hook_checks_the_platform_and_control() -> None:
    docs = render("operator.resyncSeconds=30")
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["args"] == [
        "platform-check",
        "--platform=voice/tl-trunkline-platform",
        "--control-url=http://tl-trunkline-control.voice.svc:8080/readyz",
        "--timeout=120",  # two resyncs and a minute
    ]
    # Its ServiceAccount reads the platform ConfigMap, and nothing else.
    assert pod["spec"]["serviceAccountName"] == "tl-trunkline-test"
    assert rules(docs, "Role", "tl-trunkline-test") == {("", "configmaps", "get", "tl-trunkline-platform")}
    [binding] = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "tl-trunkline-test"
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tl-trunkline-test", "namespace": "voice"}
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("edge.sipPort=80", "/edge/sipPort"),
        ("media.kind=Pod", "/media/kind"),
        ("redis.url=redis://user:secret@cache:6379", "/redis/url"),
        ("edge.udpService.type=Ingress", "/edge/udpService/type"),
        ("operator.scope=everywhere", "/operator/scope"),
        ("edgee.replicas=3", "edgee"),
        ("cdr.batch=0", "/cdr/batch"),
        ("cdr.webhook.url=ftp://x", "/cdr/webhook"),
    ],
)
def test_schema_refuses_bad_values(value: str, message: str) -> None:
    result = helm("template", "tl", str(CHART), f"--set={value}", check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_listed_namespaces_get_roles_and_nothing_cluster_wide() -> None:
    docs = render("operator.namespaces={tenant-a,tenant-b}")
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    for name in ("voice-tl-trunkline-operator", "voice-tl-trunkline-control"):
        roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == name]
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["tenant-a", "tenant-b"]
        assert ("", "secrets", "list", "*") in {  # Secrets readable there, and only there
            (g, r, v, "*") for role in roles for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]
        }  # fmt: skip
    bindings = [
        d for d in docs if d["kind"] == "RoleBinding" and d["metadata"].get("namespace") == "tenant-a"
    ]
    assert {b["subjects"][0]["namespace"] for b in bindings} == {"voice"}  # the release's ServiceAccounts
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (
        "--namespace=tenant-a" in args and "--namespace=tenant-b" in args and "--all-namespaces" not in args
    )
    platform = parse_platform(one(docs, "ConfigMap", "tl-trunkline-platform")["data"])
    assert platform.watchNamespaces == ["tenant-a", "tenant-b"]
    control = next(
        o for o in build_data_plane(platform, "voice") if o["metadata"]["name"] == "tl-trunkline-control"
    )
    control_args = control["spec"]["template"]["spec"]["containers"][0]["args"]
    assert control_args[-4:] == ["--namespace", "tenant-a", "--namespace", "tenant-b"]


def test_internal_planes_values_reach_the_platform() -> None:
    docs = render(
        "internalTls.issuer=cert-manager", "internalTls.certManagerIssuer.name=internal",
        "internalTls.certificateLifetimeSeconds=86400", "networkPolicies.enabled=false",
        "redis.url=rediss://redis:6380/0", "redis.caSecret.name=redis-tls",
    )  # fmt: skip
    platform = parse_platform(one(docs, "ConfigMap", "tl-trunkline-platform")["data"])
    assert (
        platform.internalTls.issuer == "cert-manager"
        and platform.internalTls.certificateLifetimeSeconds == 86400
    )
    assert platform.internalTls.certManagerIssuer is not None
    assert platform.internalTls.certManagerIssuer.name == "internal"
    assert not platform.networkPolicies.enabled
    assert platform.redis.caSecret is not None and platform.redis.caSecret.name == "redis-tls"
    defaults = parse_platform(one(render(), "ConfigMap", "tl-trunkline-platform")["data"])
    assert defaults.internalTls.issuer == "operator" and defaults.networkPolicies.enabled
    assert defaults.redis.caSecret is None


def test_the_operator_reaches_redis_over_tls_with_the_ca_from_a_secret() -> None:
    docs = render(
        "redis.url=rediss://redis:6380/0", "redis.caSecret.name=redis-tls", "redis.passwordSecret.name=pw"
    )
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["TRUNKLINE_REDIS_CA"]["value"] == "/etc/trunkline/redis-ca/ca.crt"
    assert env["TRUNKLINE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pw", "key": "password"}
    volume = next(v for v in pod["volumes"] if v["name"] == "redis-ca")
    assert volume["secret"] == {"secretName": "redis-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_service_monitor_only_when_enabled_and_it_lists_every_data_plane_pod() -> None:
    assert not find(render(), "ServiceMonitor") and not find(render(), "Service")  # off by default
    docs = render(
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.interval=15s",
        "metrics.serviceMonitor.labels.release=prom",
        "httpPort=9090",
    )
    monitor = one(docs, "ServiceMonitor", "tl-trunkline")
    service = one(docs, "Service", "tl-trunkline-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["voice"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    # The monitor selects the metrics Service, ...
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["clusterIP"] == "None"
    http = {"name": "http", "port": 9090, "targetPort": "http", "protocol": "TCP"}
    assert service["spec"]["ports"] == [http]
    # ... which selects every pod the operator deploys (each with its `http` port), not the operator's.
    selector = service["spec"]["selector"].items()
    platform = platform_of(docs)
    workloads = [o for o in build_data_plane(platform, "voice") if o["kind"] in ("Deployment", "DaemonSet")]
    components = set()
    for workload in workloads:
        template = workload["spec"]["template"]
        assert selector <= template["metadata"]["labels"].items(), workload["metadata"]["name"]
        ports = template["spec"]["containers"][0]["ports"]
        assert {"name": "http", "containerPort": 9090, "protocol": "TCP"} in ports
        components.add(template["metadata"]["labels"]["app.kubernetes.io/component"])
    assert components == {"control", "edge", "media", "cdr"}
    operator = one(docs, "Deployment", "tl-trunkline-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "http" not in {port["name"] for port in operator["ports"]}


@pytest.mark.parametrize("interval", ["", "30", "1 m", "5x"])
def test_service_monitor_interval_must_be_a_prometheus_duration(interval: str) -> None:
    result = helm("template", "tl", str(CHART), f"--set-string=metrics.serviceMonitor.interval={interval}",
                  check=False)  # fmt: skip
    assert result.returncode != 0 and "interval" in result.stderr


def test_the_edges_address_from_the_load_balancer_through_the_chart() -> None:
    # Empty edge.advertise with a LoadBalancer, or serviceExternal: the operator reads the Service.
    for sets in (("edge.udpService.type=LoadBalancer",),
                 ("edge.udpService.type=LoadBalancer", "edge.advertise=serviceExternal")):  # fmt: skip
        assert platform_of(render(*sets)).edge.advertise_from_service, sets
    assert not platform_of(render()).edge.advertise_from_service  # ClusterIP: its cluster name
    named = render("edge.udpService.type=LoadBalancer", "edge.advertise=sip.example.net")
    assert not platform_of(named).edge.advertise_from_service
    # The values schema cannot tie the two values together: the operator refuses the platform.
    configmap = one(render("edge.advertise=serviceExternal"), "ConfigMap", "tl-trunkline-platform")
    with pytest.raises(ValueError, match=r"needs edge\.udpService\.type LoadBalancer"):
        parse_platform(configmap["data"])
