"""CPU per call of the call span model (edge/tracing.py): tracing off, on at ratio 1.0 and at 0.01.

Run: .venv/bin/python -P bench/call_trace.py [calls]
Each mode runs in its own process (OpenTelemetry's tracer provider is global, set once): a call is
what the edge records for a plain answered call: the call span, auth/admission/routing steps, one
attempt, a BYE transaction and 13 SIP message events. Spans go through the real BatchSpanProcessor to
an exporter that encodes the OTLP request (core/otlp_encoding.py) and drops it (sending it and the
backend's cost are not counted). Printed: microseconds of CPU per call
and the ratio to "off" (the issue's budget: the edge's whole call costs ~1 ms of CPU, so +15% at 1.0
is ~150 us and +3% at 0.01 is ~30 us).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence


def one_call(n: int) -> None:
    from trunkline.edge import tracing

    call = tracing.start_call(
        f"{n}@pbx", "acme", "inbound", "+14155550100", "+3225550199", "10.0.0.1:5060", "UDP"
    )
    call.message("a", "received", "INVITE sip:+3225550199@edge SIP/2.0", 900, "10.0.0.1:5060")
    call.message("a", "sent", "SIP/2.0 100 Trying", 300)
    with call.step("auth", outcome="ok"), call.step("admission", rule="channels", outcome="admitted"):
        pass
    with call.step("routing", carrier="telco"):
        pass
    attempt = call.attempt("10.0.0.2:5060", "UDP", b_call_id=f"b{n}")
    attempt.message("b", "sent", "INVITE sip:+3225550199@10.0.0.2 SIP/2.0", 880)
    attempt.message("b", "received", "SIP/2.0 180 Ringing", 300)
    attempt.response(180)
    attempt.message("b", "received", "SIP/2.0 200 OK", 700)
    attempt.response(200)
    attempt.message("b", "sent", "ACK sip:x SIP/2.0", 300)
    attempt.end()
    call.message("a", "sent", "SIP/2.0 180 Ringing", 300)
    call.message("a", "sent", "SIP/2.0 200 OK", 700)
    call.message("a", "received", "ACK sip:edge SIP/2.0", 300)
    bye = call.transaction("BYE", "a")
    bye.message("a", "received", "BYE sip:edge SIP/2.0", 300)
    bye.message("b", "sent", "BYE sip:x SIP/2.0", 300)
    bye.message("b", "received", "SIP/2.0 200 OK", 300)
    bye.message("a", "sent", "SIP/2.0 200 OK", 300)
    bye.end()
    call.finish(200, "a", "normal")


def measure(mode: str, calls: int) -> float:
    """CPU seconds per call in this process, tracing as `mode` says (off, 1.0, 0.01)."""
    if mode != "off":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

        from trunkline.core import telemetry
        from trunkline.core.otlp_encoding import encode_spans

        class Discard(SpanExporter):
            def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
                encode_spans(spans)  # the request the OTLP exporters send, then dropped
                return SpanExportResult.SUCCESS

        provider = TracerProvider(sampler=ParentBasedTraceIdRatio(float(mode)))
        provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=100_000))
        telemetry.install(provider)
    for n in range(min(calls, 1000)):  # warm-up: imports, caches
        one_call(n)
    start = time.process_time()  # every thread of the process: the exporter's too
    for n in range(calls):
        one_call(n)
    return (time.process_time() - start) / calls


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--mode":
        print(measure(sys.argv[2], int(sys.argv[3])))
        return 0
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    results = {}
    for mode in ("off", "1.0", "0.01"):
        out = subprocess.run(
            [sys.executable, "-P", __file__, "--mode", mode, str(calls)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[mode] = float(out.stdout.split()[-1])
    print(f"{'tracing':>10} {'us CPU/call':>12} {'extra vs off':>13}")
    for mode, seconds in results.items():
        print(f"{mode:>10} {seconds * 1e6:12.1f} {(seconds - results['off']) * 1e6:+12.1f}us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
