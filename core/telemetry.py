"""Tracing for every trunkline process: OpenTelemetry SDK + OTLP exporter, configured the standard way.

On only when an OTLP endpoint is configured (`--otlp-endpoint`, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
OTEL_EXPORTER_OTLP_ENDPOINT) and OTEL_SDK_DISABLED is not true. Off, nothing is imported or set up:
callers test `enabled()` (one global read) before building spans, so tracing off costs ~nothing.

Protocol: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL, `grpc` (default) or
`http/protobuf`. Headers, certificates and timeouts: the exporters read OTEL_EXPORTER_OTLP_[TRACES_]*
themselves. Sampler: OTEL_TRACES_SAMPLER[_ARG] (default parentbased_always_on). Resource: service.name
(OTEL_SERVICE_NAME, default `trunkline-COMPONENT`), service.version, service.instance.id, k8s.pod.name
and k8s.namespace.name (POD_NAME, POD_NAMESPACE), then OTEL_RESOURCE_ATTRIBUTES over those.

The exporter never blocks the caller: a BatchSpanProcessor with a bounded queue (OTEL_BSP_MAX_QUEUE_SIZE,
default 2048) exports from its own thread; a full queue or a failed export drops spans, counted in
`trunkline_trace_spans_dropped_total` on /metrics.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from trunkline.core.version import package_version

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

PROTOCOLS = ("grpc", "http/protobuf")
_TRUE = ("true", "1", "yes", "on")


@dataclass(frozen=True)
class TelemetrySettings:
    """What the environment and the command line ask for; `endpoint` None: tracing off."""

    endpoint: str | None
    protocol: str
    service_name: str
    resource: Mapping[str, str]
    signal_endpoint: bool  # the endpoint is the full traces URL (not a base to add /v1/traces to)

    @classmethod
    def from_env(
        cls, component: str, otlp_endpoint: str | None = None, env: Mapping[str, str] | None = None
    ) -> TelemetrySettings:
        """ValueError with a readable message for a protocol we do not speak."""
        env = os.environ if env is None else env
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        ).strip()
        if protocol not in PROTOCOLS:
            raise ValueError(f"OTLP protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        endpoint, signal_endpoint = otlp_endpoint, False
        if not endpoint:
            endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
            signal_endpoint = endpoint is not None
        endpoint = endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
            endpoint = None
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint  # HOST:PORT, as the gRPC exporter also takes it
        resource = {
            "service.name": f"trunkline-{component}",
            "service.namespace": "trunkline",
            "service.version": package_version(),
            "service.instance.id": env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        }
        if env.get("POD_NAME"):
            resource["k8s.pod.name"] = env["POD_NAME"]
        if env.get("POD_NAMESPACE"):
            resource["k8s.namespace.name"] = env["POD_NAMESPACE"]
        if env.get("NODE_NAME"):
            resource["k8s.node.name"] = env["NODE_NAME"]
        resource.update(parse_key_values(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
        if env.get("OTEL_SERVICE_NAME"):
            resource["service.name"] = env["OTEL_SERVICE_NAME"]
        return cls(endpoint, protocol, resource["service.name"], resource, signal_endpoint)

    @property
    def traces_url(self) -> str | None:
        """Where the exporter sends: gRPC takes the endpoint as is, HTTP adds /v1/traces to a base."""
        if self.endpoint is None or self.protocol == "grpc" or self.signal_endpoint:
            return self.endpoint
        return self.endpoint.rstrip("/") + "/v1/traces"


def parse_key_values(text: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (OTEL_RESOURCE_ATTRIBUTES, W3C baggage-like, values percent-decoded); pairs
    without `=` are skipped, as the specification asks."""
    from urllib.parse import unquote

    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = unquote(value.strip())
    return pairs


class SpanCounts:
    """Spans exported and dropped by this process (queue full, export failed); read by /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the exporter's thread and the event loop both count
        self.exported = 0
        self.dropped = 0

    def add(self, exported: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self.exported += exported
            self.dropped += dropped


COUNTS = SpanCounts()
_provider: TracerProvider | None = None


def enabled() -> bool:
    """True when this process traces (setup() found an endpoint)."""
    return _provider is not None


def provider() -> TracerProvider:
    """This process's tracer provider (only while `enabled()`)."""
    if _provider is None:
        raise RuntimeError("tracing is off")
    return _provider


def setup(component: str, otlp_endpoint: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Configure tracing for this process once; True when on. ValueError for a bad protocol."""
    global _provider
    settings = TelemetrySettings.from_env(component, otlp_endpoint, env)
    if settings.endpoint is None or _provider is not None:
        return _provider is not None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource(dict(settings.resource)))  # sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(_counting_processor(_exporter(settings)))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def span(name: str, attributes: Mapping[str, str] | None = None) -> AbstractContextManager[object]:
    """A span around a unit of work (an operator reconcile), current inside; a shared no-op context
    while tracing is off. An exception marks the span as an error and propagates."""
    if _provider is None:
        return _NOTHING
    from opentelemetry import trace

    return trace.get_tracer("trunkline").start_as_current_span(name, attributes=attributes)


_NOTHING: AbstractContextManager[object] = nullcontext()


def install(provider: TracerProvider) -> None:
    """Trace into `provider` rather than OTLP (tests: an in-memory exporter); once per process, as
    OpenTelemetry's global provider."""
    global _provider
    from opentelemetry import trace

    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown(timeout: float = 5.0) -> None:
    """Export what is queued (bounded by `timeout`) and stop the exporter thread."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        provider.force_flush(int(timeout * 1000))
        provider.shutdown()


def _exporter(settings: TelemetrySettings) -> SpanExporter:
    from trunkline.core.otlp_export import GrpcSpanExporter, HttpSpanExporter

    url = settings.traces_url
    if settings.protocol == "grpc":
        return GrpcSpanExporter(endpoint=url, insecure=url is not None and url.startswith("http://"))
    return HttpSpanExporter(endpoint=url)


def _counting_processor(exporter: SpanExporter) -> Any:
    """A BatchSpanProcessor (bounded queue, own thread) whose drops are counted in COUNTS."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        def __init__(self, inner: SpanExporter) -> None:
            self.inner = inner

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            try:
                result = self.inner.export(spans)
            except Exception:  # an exporter bug must not end the export thread
                result = SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                COUNTS.add(exported=len(spans))
            else:
                COUNTS.add(dropped=len(spans))
            return result

        def shutdown(self) -> None:
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(self.inner.force_flush(timeout_millis))

    class CountingBatchProcessor(BatchSpanProcessor):
        def __init__(self, inner: SpanExporter) -> None:
            super().__init__(CountingExporter(inner))
            # The SDK drops the oldest span when its queue is full and only logs it; we count it.
            batch = getattr(self, "_batch_processor", None)
            self._queue: Any = getattr(batch, "_queue", None)
            self._capacity: int = getattr(batch, "_max_queue_size", 0)
            self._batch: Any = batch
            self._batch_size: int = getattr(batch, "_max_export_batch_size", 0)
            # Other SDK internals than these: the ended spans go the slow way (Recorder.sink).
            self.fast = self._queue is not None and hasattr(batch, "_worker_awaken")

        def on_end(self, span: ReadableSpan) -> None:
            sampled = span.context is not None and span.context.trace_flags.sampled
            if sampled and self._queue is not None and len(self._queue) >= self._capacity:
                COUNTS.add(dropped=1)
            super().on_end(span)

        def enqueue(self, span: ReadableSpan) -> None:
            """A sampled span (a LeanSpan: core/lean_spans.py) into the batch queue: what on_end and
            the SDK's emit do, less a process id check per span (the SDK also re-creates its queue
            and worker after a fork, with os.register_at_fork) and two layers of calls."""
            batch, queue = self._batch, self._queue
            if batch._shutdown:
                return
            if len(queue) >= self._capacity:
                COUNTS.add(dropped=1)  # the deque's maxlen drops the oldest
            queue.appendleft(span)
            if len(queue) >= self._batch_size:
                awaken = batch._worker_awaken  # read each time: a fork replaces it
                if not awaken.is_set():
                    awaken.set()

    return CountingBatchProcessor(exporter)


class TelemetryCollector(Collector):
    """/metrics: the span exporter's figures (zero while tracing is off)."""

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(
            "trunkline_trace_spans_exported", "Spans the OTLP exporter delivered", value=COUNTS.exported
        )
        yield CounterMetricFamily(
            "trunkline_trace_spans_dropped",
            "Spans lost: exporter queue full or the backend unreachable/refusing",
            value=COUNTS.dropped,
        )
