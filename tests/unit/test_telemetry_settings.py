"""Tracing configuration from the standard OTEL_* environment and --otlp-endpoint (pure logic)."""

from __future__ import annotations

import pytest

from trunkline.core.telemetry import TelemetrySettings, parse_key_values


def test_off_without_an_endpoint() -> None:
    assert TelemetrySettings.from_env("edge", env={}).endpoint is None


def test_flag_beats_traces_endpoint_beats_generic_one() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317",
    }
    assert TelemetrySettings.from_env("edge", env=env).endpoint == "http://b:4317"
    assert TelemetrySettings.from_env("edge", "http://c:4317", env).endpoint == "http://c:4317"
    del env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    assert TelemetrySettings.from_env("edge", env=env).endpoint == "http://a:4317"


def test_sdk_disabled_turns_it_off_whatever_the_endpoint() -> None:
    env = {"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317"}
    assert TelemetrySettings.from_env("edge", "http://c:4317", env).endpoint is None
    env["OTEL_SDK_DISABLED"] = "false"
    assert TelemetrySettings.from_env("edge", env=env).endpoint == "http://a:4317"


def test_http_protobuf_adds_the_signal_path_only_to_a_base_endpoint() -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318/"}
    assert TelemetrySettings.from_env("edge", env=env).traces_url == "http://a:4318/v1/traces"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://b:4318/custom"
    assert TelemetrySettings.from_env("edge", env=env).traces_url == "http://b:4318/custom"
    grpc = TelemetrySettings.from_env("edge", "127.0.0.1:4317", {})
    assert (grpc.protocol, grpc.traces_url) == ("grpc", "http://127.0.0.1:4317")


def test_an_unknown_protocol_is_a_readable_error() -> None:
    with pytest.raises(ValueError, match="http/json"):
        TelemetrySettings.from_env("edge", env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_resource_follows_semantic_conventions_and_env_overrides() -> None:
    env = {
        "POD_NAME": "edge-7f9c",
        "POD_NAMESPACE": "voice",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,service.name=from-attrs,team=a%20b,bad",
    }
    resource = TelemetrySettings.from_env("edge", env=env).resource
    assert resource["service.name"] == "from-attrs"
    assert resource["k8s.pod.name"] == resource["service.instance.id"] == "edge-7f9c"
    assert resource["k8s.namespace.name"] == "voice"
    assert resource["deployment.environment.name"] == "prod" and resource["team"] == "a b"
    assert "service.version" in resource
    env["OTEL_SERVICE_NAME"] = "sbc"
    assert TelemetrySettings.from_env("edge", env=env).service_name == "sbc"
    assert TelemetrySettings.from_env("media", env={}).service_name == "trunkline-media"


def test_key_values_skip_what_is_not_a_pair() -> None:
    assert parse_key_values("a=1, b = 2 ,,=x,c") == {"a": "1", "b": "2"}
