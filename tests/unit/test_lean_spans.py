"""core/lean_spans.py: the edge's call spans without the SDK's span objects. They go through the SDK's
processors, read like its ReadableSpans, carry the sampler's decision, the provider's resource and
limits, propagate as API spans, and our encoder writes them as the SDK's encoder would."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from trunkline.core import otlp_encoding, telemetry
from trunkline.core.lean_spans import Current, LeanSpan, Recorder, make_current, restore

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def _recorder(memory: InMemorySpanExporter, **provider_args: object) -> Recorder:
    provider = TracerProvider(resource=Resource({"service.name": "edge"}), **provider_args)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return Recorder(provider, "trunkline.edge")


def _call(recorder: Recorder, parent: str | None = None) -> None:
    context = None
    if parent:
        context = TraceContextTextMapPropagator().extract({"traceparent": parent, "tracestate": "vendor=x1"})
    root = recorder.start_root("call", SpanKind.SERVER, {"sip.call_id": "a84b@pbx"}, context)
    assert root is not None
    root.message(("a", "received", 900, False, 0, "INVITE", "127.0.0.1:5070"))
    attempt = recorder.start_child(root, "attempt", SpanKind.CLIENT, {"server.address": "127.0.0.1:5080"})
    for _ in range(2):  # the second from the encoder's cache
        attempt.message(("b", "received", 300, True, 180, "Ringing", ""))
    attempt.set_status(Status(StatusCode.ERROR, "503"))
    attempt.end()
    bye = recorder.start_child(root, "BYE", SpanKind.INTERNAL, {"sip.method": "BYE"})
    bye.message(("a", "received", 300, False, 0, "BYE", ""))
    bye.record_exception(ValueError("boom"))  # another kind of event: the general encoding path
    bye.message(("a", "sent", 300, True, 200, "OK", ""))
    bye.end()
    root.set_attribute("sip.status_code", 200)
    root.end()


def test_lean_spans_encode_as_the_sdk_encoder_writes_them(memory: InMemorySpanExporter) -> None:
    recorder = _recorder(memory)
    _call(recorder, PARENT)
    spans = memory.get_finished_spans()
    assert [type(span) for span in spans] == [LeanSpan] * 3
    otlp_encoding.clear_cache()
    for _ in range(2):
        ours = ExportTraceServiceRequest.FromString(otlp_encoding.encode_spans(spans))
        assert ours == sdk_encode_spans(spans)
    written = {span.name: span for span in ours.resource_spans[0].scope_spans[0].spans}
    assert written["call"].flags == 0x300 and written["call"].trace_state == "vendor=x1"
    assert written["call"].parent_span_id == bytes.fromhex("b7ad6b7169203331")
    assert written["attempt"].parent_span_id == written["call"].span_id
    child = next(span for span in spans if span.name == "attempt").context
    assert child == SpanContext(child.trace_id, child.span_id, False, child.trace_flags, child.trace_state)
    assert child.is_valid and not child.is_remote
    assert [e.name for e in written["BYE"].events] == ["sip.message", "exception", "sip.message"]
    ringing = written["attempt"].events[1]
    assert {kv.key: kv.value.int_value for kv in ringing.attributes}["sip.status_code"] == 180


def test_spans_of_two_resources_and_scopes_interleaved_group_as_the_sdk_encoder_groups_them() -> None:
    """A batch mixes processes' resources, lean and SDK spans, scopes, in any order: the request
    holds each span once, under its own resource and scope, as the SDK's encoder writes it."""
    memory = InMemorySpanExporter()
    providers = []
    for service in ("edge", "relay"):
        provider = TracerProvider(resource=Resource({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        providers.append(provider)
    recorders = [Recorder(provider, "trunkline.edge") for provider in providers]
    tracers = [provider.get_tracer("trunkline.rpc") for provider in providers]
    for n in range(3):
        for recorder, tracer in zip(recorders, tracers, strict=True):
            root = recorder.start_root(f"call {n}", SpanKind.SERVER, {"sip.call_id": f"{n}@pbx"})
            assert root is not None
            root.message(("a", "received", 900, False, 0, "INVITE", ""))
            tracer.start_span(f"rpc {n}").end()
            root.end()
    spans = memory.get_finished_spans()
    ours = ExportTraceServiceRequest.FromString(otlp_encoding.encode_spans(spans))
    assert ours == sdk_encode_spans(spans)
    assert len(ours.resource_spans) == 2
    assert [[len(scope.spans) for scope in r.scope_spans] for r in ours.resource_spans] == [[3, 3], [3, 3]]


def test_a_span_made_current_keeps_the_context_s_other_values_and_is_undone(
    memory: InMemorySpanExporter,
) -> None:
    """make_current sets OpenTelemetry's context variable directly: the result must be what
    `attach(set_span_in_context(span))` gives (other values kept), and restore what detach does."""
    recorder = _recorder(memory)
    root = recorder.start_root("call", SpanKind.SERVER, {})
    assert root is not None
    child = recorder.start_child(root, "auth", SpanKind.INTERNAL, {})
    outer = otel_context.attach(otel_context.set_value("tenant", "acme"))
    try:
        with Current(root):
            assert trace.get_current_span() is root
            token = make_current(child)
            assert trace.get_current_span() is child
            assert otel_context.get_value("tenant") == "acme"
            restore(token)
            assert trace.get_current_span() is root
        assert trace.get_current_span() is trace.INVALID_SPAN
        assert otel_context.get_value("tenant") == "acme"
    finally:
        otel_context.detach(outer)


def test_they_read_as_readable_spans_and_propagate(memory: InMemorySpanExporter) -> None:
    recorder = _recorder(memory)
    root = recorder.start_root("call", SpanKind.SERVER, {})
    assert root is not None
    with trace.use_span(root, end_on_exit=False):
        assert trace.get_current_span() is root
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    assert carrier["traceparent"].split("-")[2] == f"{root.context.span_id:016x}"
    root.message(("a", "sent", 10, True, 486, "Busy Here", ""))
    root.end()
    root.set_attribute("late", 1)  # after the end: ignored, as the SDK does
    (span,) = memory.get_finished_spans()
    assert span.resource.attributes["service.name"] == "edge"
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "trunkline.edge"
    assert span.end_time is not None and span.start_time is not None and span.end_time >= span.start_time
    assert span.attributes == {}
    attributes = {"sip.leg": "a", "sip.direction": "sent", "sip.size": 10, "sip.status_code": 486}
    assert span.events[0].attributes == {**attributes, "sip.reason": "Busy Here"}


def test_the_sampler_decides_for_the_root(memory: InMemorySpanExporter) -> None:
    assert _recorder(memory, sampler=ALWAYS_OFF).start_root("call", SpanKind.SERVER, {}) is None
    ratio = _recorder(memory, sampler=TraceIdRatioBased(0.5))
    sampled = [ratio.start_root("call", SpanKind.SERVER, {}) for _ in range(400)]
    assert 100 < sum(span is not None for span in sampled) < 300


def test_the_providers_limits_bound_a_span(memory: InMemorySpanExporter) -> None:
    recorder = _recorder(memory, span_limits=SpanLimits(max_events=3, max_span_attributes=2))
    root = recorder.start_root("call", SpanKind.SERVER, {})
    assert root is not None
    for n in range(5):
        root.message(("a", "received", n, False, 0, "INFO", ""))
        root.set_attribute(f"k{n}", n)
    root.set_attribute("k0", "again")  # a key already there is replaced, not dropped
    root.end()
    (span,) = memory.get_finished_spans()
    assert len(span.events) == 3 and span.dropped_events == 2
    assert span.attributes == {"k0": "again", "k1": 1} and span.dropped_attributes == 3
    request = ExportTraceServiceRequest.FromString(otlp_encoding.encode_spans([span]))
    assert request.resource_spans[0].scope_spans[0].spans[0].dropped_events_count == 2


def test_the_event_encoding_cache_stays_bounded(memory: InMemorySpanExporter) -> None:
    recorder = _recorder(memory)
    for n in range(otlp_encoding._CACHE_LIMIT // 100 + 2):  # every event a new size: no two alike
        root = recorder.start_root("call", SpanKind.SERVER, {})
        assert root is not None
        for size in range(100):
            root.message(("a", "received", n * 100 + size, False, 0, "INFO", ""))
        root.end()
    request = ExportTraceServiceRequest.FromString(otlp_encoding.encode_spans(memory.get_finished_spans()))
    assert len(otlp_encoding._message_cache) <= otlp_encoding._CACHE_LIMIT
    last = request.resource_spans[0].scope_spans[0].spans[-1].events[-1]
    assert {kv.key: kv.value.int_value for kv in last.attributes}["sip.size"] == (n + 1) * 100 - 1


def test_ended_spans_go_straight_into_the_batch_queue_and_a_full_queue_counts_its_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the edge's one batch processor, a lean span ends into its queue (Recorder.sink is the
    processor's enqueue): exported by the worker, and when the backend stalls and the queue is full,
    the oldest spans are dropped and counted, never waited for."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    exporting, release = threading.Event(), threading.Event()
    exported: list[str] = []

    class Stalled(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            exporting.set()
            release.wait(10)
            exported.extend(span.name for span in spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    processor = telemetry._counting_processor(Stalled())
    provider.add_span_processor(processor)
    recorder = Recorder(provider, "trunkline.edge")
    assert recorder.sink == processor.enqueue
    before = (telemetry.COUNTS.exported, telemetry.COUNTS.dropped)
    root = recorder.start_root("call", SpanKind.SERVER, {})
    assert root is not None
    for n in range(4):  # a full batch wakes the worker, which then stalls in the export
        recorder.start_child(root, f"early {n}", SpanKind.INTERNAL, {}).end()
    assert exporting.wait(10)
    for n in range(6):  # 4 fit the queue, the 2 oldest are pushed out
        recorder.start_child(root, f"late {n}", SpanKind.INTERNAL, {}).end()
    assert telemetry.COUNTS.dropped - before[1] == 2
    release.set()
    provider.force_flush()
    provider.shutdown()
    assert exported == [f"early {n}" for n in range(4)] + [f"late {n}" for n in range(2, 6)]
    assert telemetry.COUNTS.exported - before[0] == 8
