"""The data plane's desired state: pure builders from a Platform to manifests."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trunkline.operator.builders import (
    CHECKSUM_ANNOTATION,
    build_control_deployment,
    build_control_service,
    build_data_plane,
    build_edge_deployment,
    build_edge_hpa,
    build_edge_services,
    build_media_workload,
    build_runtime_configmap,
    owner_reference,
    stale_objects,
)
from trunkline.operator.platform import Platform, parse_platform

NS = "voice"
OWNER = owner_reference("v1", "ConfigMap", "trunkline-platform", "uid-1")


def platform(**overrides: Any) -> Platform:
    return Platform.model_validate(overrides)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def checksum(workload: dict[str, Any]) -> str:
    value: str = workload["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]
    return value


def test_data_plane_is_complete_and_owned() -> None:
    objects = build_data_plane(platform(), NS, OWNER)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("ConfigMap", "trunkline-runtime"),
        ("Deployment", "trunkline-control"),
        ("Service", "trunkline-control"),
        ("Deployment", "trunkline-edge"),
        ("Service", "trunkline-edge-udp"),
        ("Service", "trunkline-edge-tcp"),
        ("HorizontalPodAutoscaler", "trunkline-edge"),
        ("PodDisruptionBudget", "trunkline-edge"),
        ("Deployment", "trunkline-media"),
        ("PodDisruptionBudget", "trunkline-media"),
        ("Deployment", "trunkline-cdr"),
    ]
    for obj in objects:
        assert obj["metadata"]["namespace"] == NS
        assert obj["metadata"]["ownerReferences"] == [OWNER]
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "trunkline-operator"


def test_every_pod_is_locked_down_and_probed() -> None:
    for workload in build_data_plane(platform(), NS):
        if workload["kind"] not in ("Deployment", "DaemonSet"):
            continue
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = spec["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
        assert container["args"][0] == workload["metadata"]["labels"]["app.kubernetes.io/component"]
        assert container["envFrom"] == [{"configMapRef": {"name": "trunkline-runtime"}}]
        # A read-only root needs a writable /tmp.
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        # Selector and pod labels agree, or the Deployment is rejected.
        assert (
            workload["spec"]["selector"]["matchLabels"].items()
            <= workload["spec"]["template"]["metadata"]["labels"].items()
        )


def test_edges_spool_call_ends_on_an_empty_dir_that_outlives_a_container_restart() -> None:
    spec = pod_spec(build_edge_deployment(platform(), NS))
    (container,) = spec["containers"]
    args = container["args"]
    spool = args[args.index("--cdr-spool") + 1]
    assert {"name": "cdr-spool", "mountPath": spool} in container["volumeMounts"]
    assert {"name": "cdr-spool", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True  # the root stays read-only


def test_only_control_gets_an_api_token() -> None:
    p = platform(control={"serviceAccountName": "tl-control"})
    assert pod_spec(build_control_deployment(p, NS))["serviceAccountName"] == "tl-control"
    assert pod_spec(build_control_deployment(p, NS))["automountServiceAccountToken"] is True
    assert pod_spec(build_edge_deployment(p, NS))["automountServiceAccountToken"] is False
    assert pod_spec(build_media_workload(p, NS))["automountServiceAccountToken"] is False


def test_control_listens_and_watches_its_scope() -> None:
    args = pod_spec(build_control_deployment(platform(), NS))["containers"][0]["args"]
    assert args == ["control", "--listen", "0.0.0.0:9000", "--all-namespaces"]
    args = pod_spec(build_control_deployment(platform(watchNamespace="voice"), NS))["containers"][0]["args"]
    assert args[-2:] == ["--namespace", "voice"]
    ports = {p["name"]: p for p in build_control_service(platform(), NS)["spec"]["ports"]}
    assert ports["grpc"]["port"] == 9000 and ports["grpc"]["appProtocol"] == "grpc"
    assert ports["http"]["port"] == 8080


def test_edge_services_are_split_by_protocol() -> None:
    p = platform(
        edge={
            "udpService": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": "Local",
                "annotations": {"a": "b"},
            },
            "tcpService": {"type": "NodePort", "port": 5080},
            "tls": {"secretName": "edge-cert"},
        }
    )
    udp, tcp = build_edge_services(p, NS)
    assert {port["protocol"] for port in udp["spec"]["ports"]} == {"UDP"}
    assert {port["protocol"] for port in tcp["spec"]["ports"]} == {"TCP"}
    assert udp["spec"]["type"] == "LoadBalancer" and udp["spec"]["externalTrafficPolicy"] == "Local"
    assert udp["metadata"]["annotations"] == {"a": "b"}
    assert tcp["spec"]["type"] == "NodePort" and tcp["spec"]["externalTrafficPolicy"] == "Cluster"
    assert [(x["name"], x["port"], x["targetPort"]) for x in tcp["spec"]["ports"]] == [
        ("sip-tcp", 5080, "sip-tcp"),
        ("sip-tls", 5061, "sip-tls"),
    ]
    # A LoadBalancer and no edge.advertise: the edges advertise its address, once the operator has it.
    assert build_edge_deployment(p, NS) is None
    edge = build_edge_deployment(p, NS, advertise="192.0.2.7:5060")
    assert edge is not None
    container = pod_spec(edge)["containers"][0]
    assert {"name": "TRUNKLINE_EDGE_ADVERTISE", "value": "192.0.2.7:5060"} in container["env"]
    assert {port["name"] for port in container["ports"]} == {"sip-udp", "sip-tcp", "sip-tls", "http"}
    assert "--tls-listen" in container["args"]


def test_clusterip_services_carry_no_traffic_policy() -> None:
    # The API server rejects externalTrafficPolicy on a ClusterIP Service.
    for service in build_edge_services(platform(edge={"udpService": {"externalTrafficPolicy": "Local"}}), NS):
        assert service["spec"]["type"] == "ClusterIP"
        assert "externalTrafficPolicy" not in service["spec"]


def test_edges_and_relays_have_a_disruption_budget_of_one_pod() -> None:
    objects = build_data_plane(platform(), NS)
    for component in ("edge", "media"):
        name = f"trunkline-{component}"
        [budget] = [
            o for o in objects if o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == name
        ]
        [workload] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
        assert budget["apiVersion"] == "policy/v1"
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"] == workload["spec"]["selector"]


def test_a_stopping_edge_leaves_the_service_before_it_refuses_calls() -> None:
    spec = pod_spec(build_edge_deployment(platform(), NS))
    [container] = spec["containers"]
    args = container["args"]
    unready = float(args[args.index("--unready-before-drain") + 1])
    probe = container["readinessProbe"]
    # Readiness fails (and the endpoint stops serving) well within the unready time ...
    assert probe["failureThreshold"] * (probe["periodSeconds"] + probe["timeoutSeconds"]) < unready
    # ... which with the edge's drain (--grace, 30 s by default) fits the pod's termination grace.
    assert unready + 30 <= spec["terminationGracePeriodSeconds"]


def test_hpa_owns_the_edge_replica_count() -> None:
    scaled = platform(edge={"autoscaling": {"minReplicas": 3, "maxReplicas": 7}})
    assert "replicas" not in build_edge_deployment(scaled, NS)["spec"]
    hpa = build_edge_hpa(scaled, NS)
    assert hpa is not None and hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "trunkline-edge",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)

    fixed = platform(edge={"replicas": 4, "autoscaling": {"enabled": False}})
    assert build_edge_deployment(fixed, NS)["spec"]["replicas"] == 4
    assert build_edge_hpa(fixed, NS) is None
    assert ("autoscaling/v2", "HorizontalPodAutoscaler", NS, "trunkline-edge") in stale_objects(fixed, NS)


def test_the_cdr_exporter_is_deployed_unless_disabled() -> None:
    objects = build_data_plane(platform(cdr={"replicas": 2}), NS)
    [exporter] = [o for o in objects if o["metadata"]["name"] == "trunkline-cdr"]
    assert exporter["spec"]["replicas"] == 2
    assert ("apps/v1", "Deployment", NS, "trunkline-cdr") not in stale_objects(platform(), NS)
    off = platform(cdr={"enabled": False})
    assert "trunkline-cdr" not in [o["metadata"]["name"] for o in build_data_plane(off, NS)]
    assert ("apps/v1", "Deployment", NS, "trunkline-cdr") in stale_objects(off, NS)


def test_media_as_daemonset_on_the_host_network() -> None:
    p = platform(media={"kind": "DaemonSet", "portRange": {"start": 30000, "end": 30999}})
    media = build_media_workload(p, NS)
    assert media["kind"] == "DaemonSet" and "replicas" not in media["spec"]
    spec = pod_spec(media)
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    args = spec["containers"][0]["args"]
    assert args[args.index("--media-ports") + 1] == "30000-30999"
    assert ("apps/v1", "Deployment", NS, "trunkline-media") in stale_objects(p, NS)

    deployment = build_media_workload(platform(), NS)
    assert deployment["kind"] == "Deployment" and "hostNetwork" not in pod_spec(deployment)


def test_media_probes_its_ops_port_and_keeps_its_name_across_restarts() -> None:
    p = platform(httpPort=8081)
    container = pod_spec(build_media_workload(p, NS))["containers"][0]
    # `trunkline media` serves /healthz and /readyz on $TRUNKLINE_HTTP_LISTEN, from the runtime ConfigMap.
    assert build_runtime_configmap(p, NS)["data"]["TRUNKLINE_HTTP_LISTEN"] == "0.0.0.0:8081"
    assert container["envFrom"] == [{"configMapRef": {"name": "trunkline-runtime"}}]
    assert {"name": "http", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # The relay id (sessions in Redis are kept under it) is the pod's name: stable over container restarts.
    args = container["args"]
    assert args[args.index("--relay-id") + 1] == "$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]


def test_runtime_settings_redis_url_or_sentinel() -> None:
    data = build_runtime_configmap(platform(redis={"url": "redis://cache:6379/1"}), NS)["data"]
    assert data["TRUNKLINE_REDIS_URL"] == "redis://cache:6379/1"
    assert data["TRUNKLINE_CONTROL_ADDRESS"] == "trunkline-control.voice.svc:9000"
    sentinel = platform(redis={"sentinel": {"addresses": ["s1:26379", "s2:26379"], "masterName": "m"}})
    data = build_runtime_configmap(sentinel, NS)["data"]
    assert data["TRUNKLINE_REDIS_SENTINELS"] == "s1:26379,s2:26379"
    assert data["TRUNKLINE_REDIS_SENTINEL_MASTER"] == "m"
    assert "TRUNKLINE_REDIS_URL" not in data


def test_redis_password_comes_from_a_secret_not_the_configmap() -> None:
    p = platform(redis={"url": "redis://cache:6379/0", "passwordSecret": {"name": "redis-auth"}})
    env = pod_spec(build_edge_deployment(p, NS))["containers"][0]["env"]
    assert {
        "name": "TRUNKLINE_REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}},
    } in env
    assert "redis-auth" not in str(build_runtime_configmap(p, NS)["data"])


def checksums(p: Platform) -> dict[str, str]:
    return {
        o["metadata"]["name"]: checksum(o) for o in build_data_plane(p, NS) if "template" in o.get("spec", {})
    }


def test_checksum_rolls_pods_on_runtime_changes_only() -> None:
    before = checksums(platform())
    assert set(before) == {"trunkline-control", "trunkline-edge", "trunkline-media", "trunkline-cdr"}
    # Same settings, same checksum: re-applying never restarts anything.
    assert checksums(platform()) == before
    # Settings the pods read at start (here Redis) change every pod's checksum.
    after = checksums(platform(redis={"url": "redis://elsewhere:6379/0"}))
    assert all(after[name] != value for name, value in before.items())
    # Scaling is no restart reason.
    scaled = platform(control={"replicas": 5}, media={"replicas": 9})
    assert checksum(build_control_deployment(scaled, NS)) == before["trunkline-control"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"redis": {}}, "exactly one of redis.url and redis.sentinel"),
        ({"redis": {"url": "redis://a", "sentinel": {"addresses": ["s:1"]}}}, "exactly one"),
        ({"edge": {"sipPort": 80}}, "greater than or equal to 1024"),
        ({"media": {"portRange": {"start": 30000, "end": 20000}}}, "end must be >= start"),
        (
            {"edge": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
            "maxReplicas must be >= minReplicas",
        ),
        ({"edge": {"udpService": {"type": "Ingress"}}}, "ClusterIP"),
        ({"imagee": "typo"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_platforms_are_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Platform.model_validate(doc)


def test_parse_platform_from_configmap_data() -> None:
    assert parse_platform({"platform.yaml": "logLevel: debug\n"}).logLevel == "debug"
    assert parse_platform({"platform.yaml": ""}) == Platform()
    with pytest.raises(ValueError, match=r"no key 'platform\.yaml'"):
        parse_platform({})
    with pytest.raises(ValueError, match="not YAML"):
        parse_platform({"platform.yaml": "a: [b"})


@pytest.mark.parametrize(
    ("limits", "workers"),
    [
        ({}, 1),  # no limit: one process, pods scale out
        ({"cpu": "2"}, 2),
        ({"cpu": 3}, 3),  # YAML's number
        ({"cpu": "2500m"}, 2),  # rounded down
        ({"cpu": "1.9"}, 1),
        ({"cpu": "500m"}, 1),  # less than a CPU: still one
        ({"cpu": "4k"}, 1),  # a quantity an edge's CPU limit never is: one
        ({"memory": "1Gi"}, 1),
    ],
)
def test_edge_runs_one_worker_per_cpu_of_its_limit(limits: dict[str, Any], workers: int) -> None:
    deployment = build_edge_deployment(platform(edge={"resources": {"limits": limits}}), NS)
    args = pod_spec(deployment)["containers"][0]["args"]
    assert args[args.index("--workers") + 1] == str(workers)
