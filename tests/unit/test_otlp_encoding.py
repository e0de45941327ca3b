"""core/otlp_encoding.py writes the same OTLP request the SDK's encoder builds, for every field a
span can carry (the exporters send it to Jaeger in tests/integration/test_traces_cross_processes.py)."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from trunkline.core import otlp_encoding


def _spans() -> Sequence[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "edge", "k8s.pod.name": "edge-0"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(
        "trunkline.edge", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0"
    )
    other = provider.get_tracer("trunkline.rpc")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "x1")]),
    )
    call = tracer.start_span(
        "call",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={"sip.call_id": "a84b4c76e66710@pbx", "trunkline.trunk": "acme", "client.address": "é€"},
        links=[Link(remote, {"link.reason": "adopted"})],
    )
    for size in (900, 300, 300):  # repeated pairs come from the cache
        call.add_event("sip.message", {"sip.leg": "a", "sip.direction": "received", "sip.size": size})
    call.add_event("sip.message", {"sip.status_code": 200, "sip.reason": "OK", "sip.leg": "b"})
    attempt = other.start_span("attempt", context=set_span_in_context(call), kind=SpanKind.CLIENT)
    attempt.set_attributes(
        {
            "flag": True,
            "one": 1,  # equal to True as a dict key: must not share True's cached encoding
            "negative": -5,
            "huge": 2**62,
            "ratio": 0.25,
            "whole": 1.0,
            "names": ("a", "b"),
            "codes": (180, 200),
            "empty": "",
        }
    )
    attempt.set_status(Status(StatusCode.ERROR, "503 Service Unavailable"))
    attempt.end()
    ok = tracer.start_span("BYE", context=set_span_in_context(call))
    ok.set_status(Status(StatusCode.OK))
    ok.end()
    call.end()
    return memory.get_finished_spans()


def test_the_request_equals_the_sdk_encoders() -> None:
    spans = _spans()
    otlp_encoding.clear_cache()
    for _ in range(2):  # the second time from cached attribute encodings
        ours = ExportTraceServiceRequest.FromString(otlp_encoding.encode_spans(spans))
        assert ours == sdk_encode_spans(spans)
    scopes = ours.resource_spans[0].scope_spans
    assert [scope.scope.name for scope in scopes] == ["trunkline.rpc", "trunkline.edge"]
    assert [span.name for span in scopes[1].spans] == ["BYE", "call"]
    call = scopes[1].spans[1]
    assert call.flags == 0x300 and call.trace_state == "vendor=x1" and len(call.events) == 4


def test_an_unencodable_string_is_replaced_not_a_lost_batch() -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("t").start_span("call", attributes={"sip.caller": "\udc80x"}).end()
    request = ExportTraceServiceRequest.FromString(otlp_encoding.encode_spans(memory.get_finished_spans()))
    value = request.resource_spans[0].scope_spans[0].spans[0].attributes[0].value.string_value
    assert value == "?x"


def test_the_cache_stays_bounded() -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for n in range(otlp_encoding._CACHE_LIMIT + 10):
        tracer.start_span("call", attributes={"sip.call_id": f"{n}@pbx"}).end()
    otlp_encoding.encode_spans(memory.get_finished_spans())
    assert len(otlp_encoding._pair_cache) <= otlp_encoding._CACHE_LIMIT
