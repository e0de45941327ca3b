"""The call span model: a root SERVER span with the call's identity, children, SIP message events,
the traceparent a failed-over call continues from; and nothing at all while tracing is off."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.spans import memory_spans, tracing_off
from trunkline.core.logs import JsonFormatter
from trunkline.edge import trace_headers, tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with memory_spans() as exporter:
        yield exporter


def _call(traceparent: str | None = None) -> tracing.NoTrace:
    return tracing.start_call(
        "a84b4c76e66710", "acme", "inbound", "+14155550100", "+3225550199", "127.0.0.1:5070", "UDP",
        traceparent,
    )  # fmt: skip


def test_a_call_is_one_trace_with_children_and_message_events(spans: InMemorySpanExporter) -> None:
    call = _call()
    call.message("a", "received", "INVITE sip:+3225550199@edge SIP/2.0", 812, "127.0.0.1:5070")
    with call.step("auth", sip__auth__method="digest") as auth:
        auth.set(outcome="ok")
    with call.step("admission", rule="channels", outcome="admitted"):
        pass
    with call.step("routing", carrier="telco", prefix="+32"):
        pass
    attempt = call.attempt("127.0.0.1:5080", "UDP", carrier="telco", gateway="gw1")
    attempt.message("b", "sent", "INVITE sip:+3225550199@127.0.0.1:5080 SIP/2.0", 790)
    attempt.response(180)
    attempt.message("b", "received", "SIP/2.0 180 Ringing", 320)
    attempt.response(200)
    attempt.end()
    call.message("a", "sent", "SIP/2.0 200 OK", 640)
    bye = call.transaction("BYE", "b")
    bye.message("b", "received", "BYE sip:edge SIP/2.0", 300)
    bye.end()
    call.finish(200, hangup_side="b", reason="normal")

    by_name = {span.name: span for span in spans.get_finished_spans()}
    root = by_name["call"]
    assert root.kind is SpanKind.SERVER and root.parent is None
    assert root.attributes is not None
    assert root.attributes["sip.call_id"] == "a84b4c76e66710"
    assert root.attributes["trunkline.trunk"] == "acme"
    assert root.attributes["sip.caller"] == "+14155550100"
    assert root.attributes["trunkline.hangup_side"] == "b" and root.attributes["sip.status_code"] == 200
    for name in ("auth", "admission", "routing", "attempt", "BYE"):
        span = by_name[name]
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
    assert by_name["auth"].attributes == {"sip.auth.method": "digest", "trunkline.outcome": "ok"}
    attempt_span = by_name["attempt"]
    assert attempt_span.kind is SpanKind.CLIENT
    assert attempt_span.attributes is not None and attempt_span.attributes["sip.status_code"] == 200
    assert attempt_span.attributes["sip.pdd_ms"] >= 0
    events = [(e.attributes or {}) for s in spans.get_finished_spans() for e in s.events]
    assert {e.get("sip.method") or e.get("sip.status_code") for e in events} == {"INVITE", 180, 200, "BYE"}
    assert call.traceparent and call.traceparent.split("-")[1] == call.trace_id


def test_an_adopted_call_continues_the_original_trace(spans: InMemorySpanExporter) -> None:
    first = _call()
    first.finish(200)
    second = _call(first.traceparent)
    second.finish(200, hangup_side="a", reason="BYE after failover")
    one, two = spans.get_finished_spans()
    assert two.context.trace_id == one.context.trace_id
    assert two.parent is not None and two.parent.span_id == one.context.span_id


def test_log_lines_inside_a_call_step_carry_its_trace_ids(spans: InMemorySpanExporter) -> None:
    call = _call()
    record = logging.LogRecord("trunkline.edge", logging.INFO, __file__, 1, "admitted", None, None)
    with call.step("admission"):
        line = json.loads(JsonFormatter().format(record))
    call.finish(200)
    assert line["trace_id"] == call.trace_id and len(line["span_id"]) == 16
    with tracing_off():
        assert "trace_id" not in json.loads(JsonFormatter().format(record))


def test_tracing_off_costs_a_shared_no_op() -> None:
    with tracing_off():
        call = _call()
        assert call is tracing.NO_TRACE and not call.recording and call.traceparent is None
        call.message("a", "received", "INVITE sip:x SIP/2.0", 10)
        with call.step("auth") as step:
            step.set(outcome="ok")
        assert call.attempt("x", "UDP") is tracing.NO_ATTEMPT
        call.finish(503, "edge", "no route")


def test_message_attributes_are_bounded() -> None:
    attrs = tracing.message_attributes("a", "received", "SIP/2.0 486 " + "Busy" * 100, 99, "")
    assert attrs["sip.status_code"] == 486 and len(attrs["sip.reason"]) == 32
    assert len(tracing.message_attributes("a", "sent", "X" * 500 + " sip:x", 1, "")["sip.method"]) == 32
    assert tracing.message_attributes("b", "sent", "SIP/2.0 abc", 1, "p")["sip.status_code"] == 0


def test_an_unsampled_call_costs_the_shared_no_op(spans: InMemorySpanExporter) -> None:
    # A record whose trace was not sampled (flags 00): the parent-based sampler keeps it unsampled.
    call = _call("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    assert call is tracing.NO_TRACE
    call.finish(200)
    assert spans.get_finished_spans() == ()


def test_an_attempt_names_itself_and_the_peers_tracestate_in_its_headers(spans: InMemorySpanExporter) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    call = tracing.start_call("c1", "acme", "outbound", "+1", "+2", "127.0.0.2:5060", "udp", parent,
                              tracestate="vendor=abc")  # fmt: skip
    attempt = call.attempt("127.0.0.1:5080", "udp")
    headers = dict(trace_headers.headers(attempt))
    attempt.end()
    call.finish(200)
    [span] = [s for s in spans.get_finished_spans() if s.name == "attempt"]
    assert headers["traceparent"].split("-")[1:3] == [
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
    ]
    assert headers["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"  # the peer's trace
    assert headers["tracestate"] == "vendor=abc"
    [root] = [s for s in spans.get_finished_spans() if s.name == "call"]
    assert root.parent is not None and root.parent.span_id == 0x00F067AA0BA902B7


def test_no_headers_while_tracing_is_off() -> None:
    with tracing_off():
        call = tracing.start_call("c1", "acme", "outbound", "+1", "+2", "127.0.0.2:5060", "udp")
        assert trace_headers.headers(call.attempt("127.0.0.1:5080", "udp")) == []
