"""core/otlp_export.py: the gRPC and HTTP exporters deliver core/otlp_encoding.py's request to a
real OTLP receiver on loopback (a gRPC server and an HTTP server here), which parses it to the same
message the SDK's encoder builds; the gRPC exporter keeps sending our bytes after a reconnect."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, set_span_in_context

from trunkline.core.otlp_export import GrpcSpanExporter, HttpSpanExporter

TIMEOUT = 30.0


def _spans() -> Sequence[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "test-edge"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("trunkline.edge")
    call = tracer.start_span("call", kind=SpanKind.SERVER, attributes={"sip.call_id": "x@pbx"})
    call.add_event("sip.message", {"sip.leg": "a", "sip.direction": "received", "sip.size": 900})
    tracer.start_span("auth", context=set_span_in_context(call), attributes={"trunkline.outcome": "ok"}).end()
    call.end()
    return memory.get_finished_spans()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[int, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    def export(request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
        received.append(request)
        return ExportTraceServiceResponse()

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=ExportTraceServiceRequest.FromString,
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, received
    finally:
        server.stop(None)


def test_grpc_exporter_sends_our_request_also_after_a_reconnect(
    grpc_receiver: tuple[int, list[ExportTraceServiceRequest]],
) -> None:
    port, received = grpc_receiver
    spans = _spans()
    exporter = GrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, timeout=TIMEOUT)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter._initialize_channel_and_stub()  # what the SDK does after UNAVAILABLE
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert received == [sdk_encode_spans(spans)] * 2


def test_http_exporter_posts_our_request() -> None:
    bodies: list[tuple[str, str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            bodies.append((self.path, self.headers["Content-Type"], body))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    spans = _spans()
    exporter = HttpSpanExporter(
        endpoint=f"http://127.0.0.1:{server.server_address[1]}/v1/traces", timeout=TIMEOUT
    )
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
        server.shutdown()
        server.server_close()
    assert [(path, kind) for path, kind, _ in bodies] == [("/v1/traces", "application/x-protobuf")]
    assert ExportTraceServiceRequest.FromString(bodies[0][2]) == sdk_encode_spans(spans)
    assert exporter.export(spans) is SpanExportResult.FAILURE  # shut down: refused, not raised
