"""The OTLP span exporters (gRPC, HTTP/protobuf) with trunkline's own encoding (core/otlp_encoding.py).

They are the SDK's exporters, which keep reading the OTEL_EXPORTER_OTLP_* settings (headers,
certificates, timeout, compression) and keep their retries and reconnects; only the request body is
ours: bytes written directly rather than a protobuf object tree, the larger part of what tracing cost
per call. Imported only when tracing is on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as SdkGrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as SdkHttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from trunkline.core.otlp_encoding import encode_spans

_log = logging.getLogger(__name__)
_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _RawTraceService:
    """The TraceService stub the SDK's gRPC exporter calls, sending bytes already encoded."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=bytes,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class GrpcSpanExporter(SdkGrpcExporter):
    """OTLP/gRPC: the SDK's channel, metadata, retries and reconnects; the body from encode_spans."""

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]  # also on reconnects
        self._client = _RawTraceService(self._channel)  # type: ignore[assignment]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        return encode_spans(data)


class HttpSpanExporter(SdkHttpExporter):
    """OTLP/HTTP protobuf: the SDK's session, headers, compression and retries; our body."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            body = encode_spans(spans)
        except Exception:  # a span we cannot encode must not end the export thread
            _log.exception("OTLP: a batch of %d spans could not be encoded", len(spans))
            return SpanExportResult.FAILURE
        result = self._client.export(body)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
