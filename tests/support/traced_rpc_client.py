"""Run as a script: one media relay gRPC call inside a span, traced like the edge does it.

  python traced_rpc_client.py RELAY_HOST:PORT SESSION_ID [CONTROL_HOST:PORT]   (OTEL_* from env)

Prints `trace_id span_id` of its own span, then exports and exits: the process boundary a test needs
to show a trace continued by another process."""

from __future__ import annotations

import asyncio
import sys

import grpc
from opentelemetry import trace

from trunkline.control.v1 import control_pb2, control_pb2_grpc
from trunkline.core import rpc, telemetry
from trunkline.media.v1 import media_pb2, media_pb2_grpc


async def call(target: str, session_id: str, control: str | None) -> None:
    tracer = trace.get_tracer("tests.traced_rpc_client")
    with tracer.start_as_current_span("test.call", kind=trace.SpanKind.SERVER) as span:
        context = span.get_span_context()
        print(format(context.trace_id, "032x"), format(context.span_id, "016x"), flush=True)
        if control:
            async with rpc.insecure_channel(control) as channel:
                picker = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
                try:
                    await picker.PickRelay(control_pb2.PickRelayRequest(), timeout=10)
                except grpc.aio.AioRpcError as exc:  # no relay registered yet: a traced answer too
                    if exc.code() is not grpc.StatusCode.NOT_FOUND:
                        raise
        async with rpc.insecure_channel(target) as channel:
            stub = media_pb2_grpc.MediaRelayStub(channel)  # type: ignore[no-untyped-call]
            leg = media_pb2.LegSpec(remote_address="127.0.0.1", remote_rtp_port=4000)
            await stub.CreateSession(
                media_pb2.CreateSessionRequest(session_id=session_id, leg_a=leg, leg_b=leg), timeout=10
            )
            await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id=session_id), timeout=10)


def main() -> int:
    if not telemetry.setup("test-client"):
        print("tracing is off: no OTLP endpoint in the environment", file=sys.stderr)
        return 2
    asyncio.run(call(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    telemetry.shutdown(timeout=10)
    print("exported", telemetry.COUNTS.exported, "dropped", telemetry.COUNTS.dropped, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
