"""Two `trunkline edge` processes, tracing into a real Jaeger, share Redis and one address; the edge
that answered a call is killed mid-call, and the other carries it on. What the second edge does for
the call (the re-INVITE, the INFO, the callee's BYE) is in the call's original trace, under the first
edge's call span, and its CDR names that trace."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import sipp
from tests.support.jaeger import Jaeger, parent_id, spans_by_service, tags
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up, manifests

pytestmark = pytest.mark.integration

SERVICE_IP = "127.0.0.10"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_EXPORTER_OTLP_TIMEOUT": "3"}


def _attempt_trace(jaeger: Jaeger, timeout: float = 30.0) -> tuple[str, str]:
    """(trace id, call span id) of the first edge's call, from its attempt span once exported."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in jaeger.get("/api/services")["data"] or []:
            for trace in jaeger.get("/api/traces", service=service, operation="attempt")["data"] or []:
                attempt = next(s for s in trace["spans"] if s["operationName"] == "attempt")
                return trace["traceID"], parent_id(attempt) or ""
        time.sleep(0.5)
    raise AssertionError("the first edge's attempt span never reached Jaeger")


def test_the_edge_that_adopts_a_call_continues_its_trace(
    jaeger: Jaeger, redis: RedisProcess, tmp_path: Path, carrier_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in FAST_EXPORT.items():  # Up passes this process's environment on
        monkeypatch.setenv(key, value)
    service = f"{SERVICE_IP}:{free_port()}"
    secret = tmp_path / "nonce-secret"
    secret.write_text("the same for every edge")
    text = manifests(carrier_port, free_port())
    flags = ["--redis", redis.url, "--nonce-secret-file", str(secret), "--service-listen", service,
             "--otlp-endpoint", jaeger.otlp_grpc, "--log-format", "json"]  # fmt: skip
    first = Up(tmp_path / "a", text, [*flags, "--edge-id", "edge-a"], command="edge").start()
    second: Up | None = None
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port, scenario="gateway_midcall.xml")
    try:
        pbx = sipp.Background(lambda: sipp.uac(
            tmp_path / "pbx", service, "127.0.0.2", "+442071234567", scenario="pbx_midcall.xml",
            hold_ms=8000))  # fmt: skip
        first.wait_busy(1)
        trace_id, first_call_span = _attempt_trace(jaeger)
        second = Up(tmp_path / "b", text, [*flags, "--edge-id", "edge-b"], command="edge").start()
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait()
        result = pbx.result(timeout=60)
        [cdr] = second.wait_cdrs(1, timeout=20)
    finally:
        gateway_out = sipp.stop(gateway)
        if second is not None:
            second.stop()
        first.stop()
    assert result.ok, result.output + gateway_out + (second.output() if second else "")
    assert cdr["trace_id"] == trace_id and cdr["hung_up"] == "callee", cdr

    def complete(trace: dict[str, Any]) -> bool:
        names = [s["operationName"] for s in trace["spans"]]
        return "call" in names and {"BYE", "INFO"} <= set(names)

    trace = jaeger.wait_for_trace(trace_id, complete)
    [adopted] = [s for s in trace["spans"] if s["operationName"] == "call"]
    assert tags(adopted)["trunkline.adopted"] is True and tags(adopted)["span.kind"] == "server"
    assert parent_id(adopted) == first_call_span  # under the dead edge's call span, same trace
    bye = next(s for s in trace["spans"] if s["operationName"] == "BYE" and tags(s)["sip.leg"] == "b")
    assert parent_id(bye) == adopted["spanID"]
    logs = [log for span in trace["spans"] for log in span.get("logs", [])]
    received = [{f["key"]: f["value"] for f in log["fields"]} for log in logs]
    assert any(e.get("sip.method") == "BYE" and e.get("sip.leg") == "b" and e.get("sip.direction") ==
               "received" for e in received), received  # fmt: skip
    assert len(spans_by_service(trace)) == 1  # both edges are one service, in one trace
    processes = {p["serviceName"] + str(sorted(t["value"] for t in p["tags"] if t["key"] ==
                 "service.instance.id")) for p in trace["processes"].values()}  # fmt: skip
    assert len(processes) == 2, trace["processes"]  # the first edge's spans and the second's
