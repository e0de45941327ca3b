"""The operator's reconciles are spans (one per namespace sweep), errors marked; none while off."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.support.spans import memory_spans, tracing_off
from trunkline.operator.handlers import Sweeper


async def _sweep(work: object, namespace: str, spans: InMemorySpanExporter, expect: int) -> None:
    done = asyncio.Event()

    def run(ns: str) -> None:
        try:
            if callable(work):
                work(ns)
        finally:
            done.set()

    sweeper = Sweeper(run, delay=0.0, retry=3600)
    sweeper.request(namespace)
    await asyncio.wait_for(done.wait(), 30)
    deadline = asyncio.get_running_loop().time() + 30
    while len(spans.get_finished_spans()) < expect and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # the span ends once the worker thread has handed the result back
    sweeper.cancel()


async def test_a_namespace_sweep_is_a_span_and_a_failed_one_an_error() -> None:
    def fail(_: str) -> None:
        raise RuntimeError("API server said no")

    with memory_spans() as spans:
        await _sweep(None, "voice", spans, 1)
        await _sweep(fail, "broken", spans, 2)
        ok, failed = spans.get_finished_spans()
    assert ok.name == "reconcile namespace" and ok.attributes == {"k8s.namespace.name": "voice"}
    assert failed.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in failed.events)


async def test_no_spans_while_tracing_is_off() -> None:
    with memory_spans() as spans, tracing_off():
        await _sweep(None, "voice", spans, 0)
    assert spans.get_finished_spans() == ()
