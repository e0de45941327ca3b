"""Tracing across processes into a real Jaeger: a client span's gRPC calls to `trunkline control` and
`trunkline media` (separate processes, tracing on) show up as those services' SERVER spans, children
of the client's spans, in the same trace. With Jaeger stopped the calls still work and the relay
counts the spans it could not deliver in /metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.support.jaeger import Jaeger, parent_id, spans_by_service, tags
from tests.support.media_relay import BIN, RelayProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tests" / "support" / "traced_rpc_client.py"
# Short export delays and timeouts: the test waits for spans, and for drops, in seconds, not minutes.
CALL_ID = "7f0c2a9e41@pbx.example"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_EXPORTER_OTLP_TIMEOUT": "3"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, "PYTHONSAFEPATH": "1", **FAST_EXPORT, **extra}


def _client(relay: str, session: str, control: str, **env: str) -> tuple[str, str]:
    command = [sys.executable, str(CLIENT), relay, session, control]
    done = subprocess.run(command, env=_env(**env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    trace_id, span_id = done.stdout.split()[:2]
    return trace_id, span_id


def _json_lines(path: Path, containing: str) -> list[dict[str, str]]:
    """The JSON log lines of `path` whose message contains `containing`."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    return [doc for doc in map(json.loads, lines) if containing in doc["msg"]]


def _dropped(http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "trunkline_trace_spans_dropped":
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    raise AssertionError("no trunkline_trace_spans_dropped_total on /metrics")


def test_relay_and_control_spans_continue_the_callers_trace(
    jaeger: Jaeger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control_addr = f"127.0.0.1:{free_port()}"
    control_log = (tmp_path / "control.log").open("w")
    control = subprocess.Popen(
        [BIN, "control", "-f", str(ROOT / "examples"), "--listen", control_addr, "--insecure-grpc",
         "--otlp-endpoint", jaeger.otlp_grpc, "--log-format", "json"],
        env=_env(), stdout=control_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    http_port = free_port()
    relay = RelayProcess(
        tmp_path / "media", ["--otlp-endpoint", jaeger.otlp_grpc, "--http-listen", f"127.0.0.1:{http_port}"]
    )
    for key, value in FAST_EXPORT.items():  # RelayProcess passes this process's environment on
        monkeypatch.setenv(key, value)
    try:
        relay.start()
        # The client exports over OTLP/HTTP, the servers over OTLP/gRPC: both protocols into one trace.
        trace_id, root_id = _client(
            relay.target, CALL_ID, control_addr, OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_http,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_SERVICE_NAME="test-edge",
        )  # fmt: skip

        def complete(trace: dict[str, object]) -> bool:
            found = spans_by_service(trace)  # type: ignore[arg-type]
            media, control = found.get("trunkline-media", []), found.get("trunkline-control", [])
            return len(media) >= 2 and len(control) >= 1 and "test-edge" in found

        trace = jaeger.wait_for_trace(trace_id, complete)
        services = spans_by_service(trace)
        client_spans = {s["spanID"]: s for s in services["test-edge"]}
        assert client_spans[root_id]["operationName"] == "call"
        for server_span in services["trunkline-media"] + services["trunkline-control"]:
            assert tags(server_span)["span.kind"] == "server"
            assert tags(server_span)["rpc.system"] == "grpc"
            caller = client_spans[parent_id(server_span)]  # a child of the other process's client span
            assert tags(caller)["span.kind"] == "client"
            assert caller["operationName"] == server_span["operationName"]
            assert client_spans[parent_id(caller)]["operationName"] in ("attempt", "call")
        assert {s["operationName"] for s in services["trunkline-media"]} == {
            "trunkline.media.v1.MediaRelay/CreateSession", "trunkline.media.v1.MediaRelay/DeleteSession",
        }  # fmt: skip
        assert [s["operationName"] for s in services["trunkline-control"]] == [
            "trunkline.control.v1.Control/PickRelay"
        ]
        media_process = next(p for p in trace["processes"].values() if p["serviceName"] == "trunkline-media")
        assert {t["key"] for t in media_process["tags"]} >= {"service.version", "service.instance.id"}

        # The ladder, from Jaeger, by either leg's Call-ID and by trace id.
        chart = subprocess.run(
            [BIN, "ladder", CALL_ID, "--jaeger", jaeger.query_url], env=_env(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert chart.returncode == 0, chart.stderr
        labels = [line.split("|", 1)[1] for line in chart.stdout.splitlines()[1:]]
        for expected in ("INVITE", "CreateSession", "200 OK", "BYE", "DeleteSession"):
            assert any(expected in label for label in labels), chart.stdout
        by_trace = subprocess.run(
            [BIN, "ladder", trace_id, "--jaeger", jaeger.query_url], env=_env(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert by_trace.stdout == chart.stdout
        by_b_leg = subprocess.run(
            [BIN, "ladder", f"b-{CALL_ID}", "--jaeger", jaeger.query_url], env=_env(), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert by_b_leg.returncode == 0, by_b_leg.stderr

        # --log-format json: SIGHUP makes control log a reload, as one JSON object.
        control.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while not (reloads := _json_lines(tmp_path / "control.log", "reloaded")):
            assert time.monotonic() < deadline, (tmp_path / "control.log").read_text()
            time.sleep(0.2)
        assert reloads[0]["level"] == "INFO" and reloads[0]["component"].startswith("trunkline.control")
        assert reloads[0]["time"].endswith("Z")

        # Backend gone: the calls still succeed, and the spans that cannot be delivered are counted.
        jaeger.stop()
        before = _dropped(http_port)
        _client(relay.target, "traced-2", control_addr, OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp_grpc)
        deadline = time.monotonic() + 90
        while _dropped(http_port) <= before:
            assert time.monotonic() < deadline, "the relay never counted its undeliverable spans"
            time.sleep(0.5)
    finally:
        relay.stop()
        control.terminate()
        control.wait(15)
