"""Telemetry settings reach every data-plane pod: chart values -> platform -> runtime env (OTEL_*,
TRUNKLINE_LOG_FORMAT), the pod's own name and namespace, scrape annotations."""

from __future__ import annotations

from typing import Any

from tests.unit.test_chart_render import platform_of, render
from trunkline.core.telemetry import TelemetrySettings
from trunkline.operator.builders import build_data_plane
from trunkline.operator.platform import parse_platform

TRACED = """
telemetry:
  otlpEndpoint: http://jaeger.observability:4317
  sampler: parentbased_traceidratio
  samplerArg: 0.25
  resourceAttributes: {deployment.environment.name: prod, team: voice ops}
  scrapeAnnotations: false
"""


def _pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "DaemonSet")]


def _runtime(objects: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-runtime")
    ]
    return dict(config["data"])


def test_default_platform_logs_json_traces_nothing_and_is_scraped() -> None:
    objects = build_data_plane(parse_platform({"platform.yaml": "{}"}), "voice")
    env = _runtime(objects)
    assert env["TRUNKLINE_LOG_FORMAT"] == "json"
    assert not any(key.startswith("OTEL_") for key in env)
    for pod in _pods(objects):
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8080"


def test_traced_platform_passes_the_standard_variables_to_every_pod() -> None:
    objects = build_data_plane(parse_platform({"platform.yaml": TRACED}), "voice")
    env = _runtime(objects)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger.observability:4317"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    # What a pod's process makes of them (POD_NAME/POD_NAMESPACE from the downward API):
    settings = TelemetrySettings.from_env(
        "edge", env={**env, "POD_NAME": "tl-edge-1", "POD_NAMESPACE": "voice"}
    )
    assert settings.endpoint == "http://jaeger.observability:4317"
    assert settings.resource["team"] == "voice ops" and settings.resource["k8s.namespace.name"] == "voice"
    pods = _pods(objects)
    assert len(pods) == 4  # control, edge, media, the CDR exporter
    for pod in pods:
        assert "prometheus.io/scrape" not in pod["metadata"]["annotations"]
        (container,) = pod["spec"]["containers"]
        names = [e["name"] for e in container["env"]]
        assert {"POD_NAME", "POD_NAMESPACE"} <= set(names) and len(names) == len(set(names))


def test_chart_values_reach_the_platform() -> None:
    docs = render("telemetry.otlpEndpoint=http://tempo:4317", "telemetry.logFormat=text")
    platform = platform_of(docs)
    assert platform.telemetry.otlpEndpoint == "http://tempo:4317" and platform.telemetry.logFormat == "text"
