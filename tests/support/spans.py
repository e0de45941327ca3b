"""In-process tracing for unit tests: every span ends in an in-memory exporter (installed once: the
OpenTelemetry tracer provider is global), and a switch to run code with tracing off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trunkline.core import telemetry

_exporter: InMemorySpanExporter | None = None
_provider: TracerProvider | None = None


@contextmanager
def memory_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into a fresh (cleared) in-memory exporter; off again afterwards."""
    global _exporter, _provider
    if _exporter is None:
        _exporter = InMemorySpanExporter()
        _provider = TracerProvider()
        _provider.add_span_processor(SimpleSpanProcessor(_exporter))
        telemetry.install(_provider)
    assert _provider is not None
    telemetry._provider = _provider
    _exporter.clear()
    try:
        yield _exporter
    finally:
        telemetry._provider = None


@contextmanager
def tracing_off() -> Iterator[None]:
    saved, telemetry._provider = telemetry._provider, None
    try:
        yield
    finally:
        telemetry._provider = saved
