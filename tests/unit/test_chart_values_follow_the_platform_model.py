"""values.yaml, values.schema.json, docs/reference.md and the CRDs are what the models generate; the
schema (helm) and the models (operator) accept and refuse the same values."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.support.helm import CHART, helm, one, render
from trunkline.generate import generated
from trunkline.operator.builders import build_data_plane
from trunkline.operator.main import configure_logging
from trunkline.operator.platform import parse_platform
from trunkline.operator.values import ChartValues

ROOT = Path(__file__).resolve().parents[2]


def platform_of(docs: list[dict[str, Any]]) -> Any:
    return parse_platform(one(docs, "ConfigMap", "tl-trunkline-platform")["data"])


def test_generated_files_are_checked_in() -> None:
    files = generated()
    assert {str(p) for p in files} >= {
        "charts/trunkline/values.yaml", "charts/trunkline/values.schema.json", "docs/reference.md",
        "charts/trunkline/crds/trunks.trunkline.io.yaml",
    }  # fmt: skip
    stale = [str(path) for path, text in files.items() if (ROOT / path).read_text() != text]
    assert stale == [], "generated files drifted: run `python -m trunkline.generate`"


def test_values_yaml_holds_the_model_defaults() -> None:
    on_disk = yaml.safe_load((CHART / "values.yaml").read_text())
    assert ChartValues.model_validate(on_disk) == ChartValues()


def test_the_reference_lists_every_resource_field_and_chart_value() -> None:
    text = (ROOT / "docs" / "reference.md").read_text()
    for row in ("`auth.digest.realm`", "`numbering.countryCode`", "`gateways[].uri`", "`number`"):
        assert row in text
    for row in ("`logLevel` | `debug` \\| `info`", "`edge.autoscaling.targetCPUUtilizationPercentage`"):
        assert row in text
    assert "| `media.portRange.start` | integer | 20000 |" in text


def test_the_rendered_platform_carries_the_chart_defaults() -> None:
    platform, values = platform_of(render()), ChartValues()
    assert platform.logLevel == values.logLevel and platform.httpPort == values.httpPort
    assert platform.edge.autoscaling == values.edge.autoscaling
    assert platform.edge.udpService == values.edge.udpService
    assert platform.media.portRange == values.media.portRange
    assert platform.control.resources.requests == values.control.resources.requests


def test_integer_cpu_is_accepted_by_the_schema_and_the_operator() -> None:
    sets = (
        "edge.resources.requests.cpu=1",
        "control.resources.limits.cpu=2",
        "media.resources.requests.cpu=0.5",
    )
    platform = platform_of(render(*sets))
    assert platform.edge.resources.requests["cpu"] == "1"
    objects = {(o["kind"], o["metadata"]["name"]): o for o in build_data_plane(platform, "voice")}
    edge = objects[("Deployment", "tl-trunkline-edge")]["spec"]["template"]["spec"]["containers"][0]
    assert edge["resources"]["requests"] == {"cpu": "1", "memory": "256Mi"}
    control = objects[("Deployment", "tl-trunkline-control")]["spec"]["template"]["spec"]["containers"][0]
    assert control["resources"]["limits"] == {"cpu": "2"}
    media = objects[("Deployment", "tl-trunkline-media")]["spec"]["template"]["spec"]["containers"][0]
    assert media["resources"]["requests"]["cpu"] == "0.5"
    assert ChartValues.model_validate({"edge": {"resources": {"requests": {"cpu": 1}}}})


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("edge.autoscaling.targetCPUUtilizationPercentage", 0),
        ("media.portRange.start", 80),
        ("redis.url", "redis://user:secret@cache:6379"),
        ("logLevel", "verbose"),
        ("edge.tcpService.externalTrafficPolicy", "Nearest"),
        ("operator.resyncSeconds", 1),
        ("control.resources.requests.cpu", True),
    ],
)
def test_the_schema_and_the_model_refuse_the_same_values(path: str, value: object) -> None:
    result = helm("template", "tl", str(CHART), f"--set-json={path}={json.dumps(value)}", check=False)
    assert result.returncode != 0 and "schema" in result.stderr, result.stderr
    nested: Any = value
    for key in reversed(path.split(".")):
        nested = {key: nested}
    with pytest.raises(ValidationError):
        ChartValues.model_validate(nested)


@pytest.mark.parametrize("level", ["debug", "warning"])
def test_log_level_reaches_the_operator_and_every_data_plane_pod(level: str) -> None:
    docs = render(f"logLevel={level}")
    args = one(docs, "Deployment", "tl-trunkline-operator")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert f"--log-level={level}" in args
    objects = build_data_plane(platform_of(docs), "voice")
    runtime = [o for o in objects if o["kind"] == "ConfigMap" and "TRUNKLINE_LOG_LEVEL" in o.get("data", {})]
    assert [o["data"]["TRUNKLINE_LOG_LEVEL"] for o in runtime] == [level]
    for workload in (o for o in objects if o["kind"] in ("Deployment", "DaemonSet")):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        sources = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
        assert runtime[0]["metadata"]["name"] in sources, workload["metadata"]["name"]


def test_the_operator_logs_at_the_platform_level() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for name, expected in (
            ("warning", logging.WARNING),
            ("error", logging.ERROR),
            ("debug", logging.DEBUG),
        ):
            root.handlers[:] = [logging.NullHandler()]  # as the CLI leaves it: kopf's must replace it
            configure_logging(False, name)
            assert root.level == expected and len(root.handlers) == 1
            assert not isinstance(root.handlers[0], logging.NullHandler)
        configure_logging(True, "error")
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:], root.level = handlers, level
