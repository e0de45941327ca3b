"""A SIPp call through `trunkline up --otlp-endpoint` into a real Jaeger: the call is one trace (root
SERVER span with the call's identity, auth / admission / routing / attempt / BYE children, the relay's
gRPC spans under it, every SIP message an event), `trunkline ladder --jaeger` draws it, its CDR and
its JSON log lines carry the trace id, and /metrics counts the call, its messages and a rejection."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import sipp
from tests.support.jaeger import Jaeger, parent_id, spans_by_service, tags
from tests.support.media_relay import RelayProcess
from tests.support.processes import TRUNKLINE
from tests.support.trunkline_up import Up, manifests

pytestmark = pytest.mark.integration

# Short export delays: the test waits for spans in seconds, not minutes.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_EXPORTER_OTLP_TIMEOUT": "3"}


@pytest.fixture
def up(
    tmp_path: Path, jaeger: Jaeger, carrier_port: int, pbx_port: int, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Up]:
    for key, value in FAST_EXPORT.items():  # Up passes this process's environment on
        monkeypatch.setenv(key, value)
    running = Up(tmp_path / "up", manifests(carrier_port, pbx_port),
                 ["--otlp-endpoint", jaeger.otlp_grpc, "--log-format", "json"]).start()  # fmt: skip
    yield running
    running.stop()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, frozenset(labels.items())), 0.0)


def _events(span: dict[str, Any]) -> list[dict[str, Any]]:
    """The sip.message events of a Jaeger span (its logs), as attribute dicts."""
    out = []
    for log in span.get("logs", []):
        fields = {f["key"]: f["value"] for f in log["fields"]}
        if fields.get("event") == "sip.message":
            out.append(fields)
    return out


def test_a_call_is_one_trace_with_its_messages_and_counted_in_metrics(
    up: Up, jaeger: Jaeger, tmp_path: Path, carrier_port: int
) -> None:
    carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_port)
    try:
        # On a loaded machine the relay's first session may miss its gRPC deadline (the call gets 503):
        # up to three calls, until one is answered; the one answered is the one checked.
        for placed in range(1, 4):
            result = sipp.uac(tmp_path / f"pbx-{placed}", up.sip, "127.0.0.2", "+442071234567")
            if result.ok:
                break
    finally:
        carrier_out = sipp.stop(carrier)
    assert result.ok, result.output + carrier_out + up.output()
    cdrs = up.wait_cdrs(placed, timeout=20)
    [cdr] = [c for c in cdrs if c["status"] == 200]
    trace_id = str(cdr["trace_id"])
    assert len(trace_id) == 32, cdr

    def complete(trace: dict[str, Any]) -> bool:
        names = [s["operationName"] for s in trace["spans"]]
        byes = names.count("BYE")  # the caller's, and the edge's to the callee (exported apart)
        return {"call", "auth", "admission", "routing", "attempt"} <= set(names) and byes == 2

    trace = jaeger.wait_for_trace(trace_id, complete)
    spans = trace["spans"]
    [root] = [s for s in spans if s["operationName"] == "call"]
    attrs = tags(root)
    assert attrs["span.kind"] == "server" and parent_id(root) is None
    assert attrs["sip.call_id"] == cdr["call_id"] and attrs["trunkline.trunk"] == "acme"
    assert attrs["trunkline.direction"] == "outbound" and attrs["sip.callee"] == "+442071234567"
    assert attrs["sip.caller"] == "+14155550100" and attrs["client.address"].startswith("127.0.0.2:")
    assert attrs["sip.status_code"] == 200 and attrs["trunkline.hangup_side"] == "caller"
    by_id = {s["spanID"]: s for s in spans}
    for name in ("auth", "admission", "routing", "attempt"):
        [child] = [s for s in spans if s["operationName"] == name]
        assert parent_id(child) == root["spanID"], name
    [attempt] = [s for s in spans if s["operationName"] == "attempt"]
    assert tags(attempt)["span.kind"] == "client" and tags(attempt)["sip.status_code"] == 200
    assert tags(attempt)["server.address"] == f"127.0.0.1:{carrier_port}"
    # The relay's session calls are gRPC spans under the call (its media plane continues the trace).
    media = [s for s in spans if "MediaRelay/" in s["operationName"]]
    assert any(tags(s)["span.kind"] == "client" for s in media), [s["operationName"] for s in spans]
    servers = [s for s in media if tags(s)["span.kind"] == "server"]
    assert servers
    for server in servers:  # each a child of the edge's client span of the same call
        client = by_id[parent_id(server) or ""]
        assert tags(client)["span.kind"] == "client" and client["operationName"] == server["operationName"]
    seen = {(e["sip.leg"], e["sip.direction"], str(e.get("sip.method") or e.get("sip.status_code")))
            for s in spans for e in _events(s)}  # fmt: skip
    for step in [("a", "received", "INVITE"), ("b", "sent", "INVITE"), ("b", "received", "200"),
                 ("a", "sent", "200"), ("a", "received", "ACK"), ("b", "sent", "ACK"),
                 ("a", "received", "BYE"), ("a", "sent", "200"), ("b", "sent", "BYE"),
                 ("b", "received", "200")]:  # fmt: skip
        assert step in seen, (step, seen)

    ladder = subprocess.run([TRUNKLINE, "ladder", str(cdr["call_id"]), "--jaeger", jaeger.query_url],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ladder.returncode == 0, ladder.stdout + ladder.stderr
    for label in ("INVITE", "200", "ACK", "BYE", "CreateSession"):
        assert label in ladder.stdout, ladder.stdout
    assert ladder.stdout.index("INVITE") < ladder.stdout.index("BYE")

    lines = [json.loads(line) for line in up.output().splitlines() if line.startswith("{")]
    answered = [doc for doc in lines if doc.get("msg") == "call answered"]
    assert answered and answered[0].get("trace_id") == trace_id, answered

    text = up.metrics()
    outbound = {"trunk": "acme", "direction": "outbound"}
    assert _value(text, "trunkline_calls_total", **outbound, outcome="answered") == 1
    assert _value(text, "trunkline_active_calls", trunk="acme") == 0
    assert _value(text, "trunkline_call_duration_seconds_count", **outbound) == 1
    assert _value(text, "trunkline_post_dial_delay_seconds_count", trunk="acme") == 1
    assert _value(text, "trunkline_sip_requests_total", method="INVITE", direction="received") == placed
    assert _value(text, "trunkline_sip_requests_total", method="BYE", direction="sent") == 1
    assert _value(text, "trunkline_sip_responses_total", method="INVITE", status_class="2xx",
                  direction="sent") == 1  # fmt: skip
    assert _value(text, "trunkline_carrier_attempts_total", carrier="pstn",
                  gateway=f"sip:127.0.0.1:{carrier_port}", outcome="answered") == 1  # fmt: skip
    assert _value(text, "trunkline_store_operation_seconds_count", operation="admit") == placed

    refused = sipp.uac(tmp_path / "refused", up.sip, "127.0.0.2", "+33123456789", timeout=20)
    assert not refused.ok  # outside the trunk's allowed prefixes: 403
    assert _value(up.metrics(), "trunkline_rejections_total", rule="prefix") == 1


def test_the_relay_process_continues_the_edge_process_trace(
    jaeger: Jaeger, tmp_path: Path, carrier_port: int, pbx_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in FAST_EXPORT.items():  # both processes take this process's environment
        monkeypatch.setenv(key, value)
    relay = RelayProcess(tmp_path / "media", ["--otlp-endpoint", jaeger.otlp_grpc]).start()
    flags = ["--media-relay", relay.target, "--insecure-grpc", "--otlp-endpoint", jaeger.otlp_grpc]
    edge = Up(tmp_path / "edge", manifests(carrier_port, pbx_port), flags, command="edge").start()
    carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_port)
    try:
        for placed in range(1, 4):  # see above: a first session may miss its deadline under load
            result = sipp.uac(tmp_path / f"pbx-{placed}", edge.sip, "127.0.0.2", "+442071234567")
            if result.ok:
                break
        cdrs = edge.wait_cdrs(placed, timeout=20)
    finally:
        carrier_out = sipp.stop(carrier)
        edge.stop()
        relay.stop()  # SIGTERM: its last spans are exported on the way out
    assert result.ok, result.output + carrier_out + edge.output()
    [cdr] = [c for c in cdrs if c["status"] == 200]

    def complete(trace: dict[str, Any]) -> bool:
        media = [s["operationName"] for s in spans_by_service(trace).get("trunkline-media", [])]
        names = {s["operationName"] for s in trace["spans"]}
        return any(m.endswith("/CreateSession") for m in media) and {"call", "attempt"} <= names

    trace = jaeger.wait_for_trace(str(cdr["trace_id"]), complete)
    services = spans_by_service(trace)
    assert set(services) == {"trunkline-edge", "trunkline-media"}, set(services)
    edge_spans = {s["spanID"]: s for s in services["trunkline-edge"]}
    for server in services["trunkline-media"]:
        assert tags(server)["span.kind"] == "server" and tags(server)["rpc.system"] == "grpc"
        client = edge_spans[parent_id(server) or ""]  # the edge process's client span of that call
        assert tags(client)["span.kind"] == "client" and client["operationName"] == server["operationName"]
        assert edge_spans[parent_id(client) or ""]["operationName"] in ("call", "attempt")
    created = [s for s in services["trunkline-media"] if s["operationName"].endswith("/CreateSession")]
    assert created  # the call's relay session, made in the relay process under the edge's call
