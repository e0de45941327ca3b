"""Run as a script: a call's trace as the edge builds it (edge/tracing.py: call span, SIP message
events, an attempt) with real gRPC calls to control and the media relay under the attempt.

  python traced_rpc_client.py RELAY_HOST:PORT CALL_ID [CONTROL_HOST:PORT]   (OTEL_* from env)

Prints `trace_id span_id` of the call's span, then exports and exits: the process boundary a test
needs to show a trace continued by other processes."""

from __future__ import annotations

import asyncio
import sys

import grpc
from opentelemetry import trace

from trunkline.control.v1 import control_pb2, control_pb2_grpc
from trunkline.core import rpc, telemetry
from trunkline.edge import tracing
from trunkline.media.v1 import media_pb2, media_pb2_grpc


async def call(target: str, call_id: str, control: str | None) -> None:
    call = tracing.start_call(
        call_id, "acme", "inbound", "+14155550100", "+3225550199", "127.0.0.1:5070", "UDP"
    )
    assert isinstance(call, tracing.CallTrace)
    print(call.trace_id, format(call.span.get_span_context().span_id, "016x"), flush=True)
    call.message("a", "received", "INVITE sip:+3225550199@edge SIP/2.0", 900, "127.0.0.1:5070")
    attempt = call.attempt("127.0.0.1:5080", "UDP", b_call_id=f"b-{call_id}")
    with trace.use_span(attempt.context(), end_on_exit=False):
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
                media_pb2.CreateSessionRequest(session_id=call_id, leg_a=leg, leg_b=leg), timeout=10
            )
            attempt.message("b", "sent", "INVITE sip:+3225550199@127.0.0.1:5080 SIP/2.0", 880)
            attempt.message("b", "received", "SIP/2.0 200 OK", 700)
            attempt.response(200)
            attempt.end()
            call.message("a", "sent", "SIP/2.0 200 OK", 720)
            bye = call.transaction("BYE", "a")
            bye.message("a", "received", "BYE sip:edge SIP/2.0", 380)
            with trace.use_span(call.span, end_on_exit=False):
                await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id=call_id), timeout=10)
            bye.message("a", "sent", "SIP/2.0 200 OK", 300)
            bye.end()
    call.finish(200, "a", "normal")


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
