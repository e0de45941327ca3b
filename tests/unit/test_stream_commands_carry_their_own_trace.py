"""A command on a long-lived stream (MediaRelay.Sessions) is traced on its own: a CLIENT span under the
caller's span hands its traceparent to the command, and the receiver's SERVER span continues it. A
traceparent that is absent, malformed or oversized starts nothing (no root trace from a peer's bytes)."""

from __future__ import annotations

from opentelemetry import trace

from tests.support.spans import memory_spans, tracing_off
from trunkline.core.rpc_tracing import command_client_span, command_server_span

SERVICE = "trunkline.media.v1.MediaRelay"


def test_a_command_s_server_span_continues_the_client_span_that_sent_it() -> None:
    with memory_spans() as spans:
        with trace.get_tracer("test").start_as_current_span("call") as call:
            with command_client_span(SERVICE, "CreateSession") as sent:
                traceparent = sent.traceparent
            sent.status(0)
        with command_server_span(SERVICE, "CreateSession", traceparent) as received:
            received.status(3)  # INVALID_ARGUMENT
        by_name = {(s.name, s.kind.name): s for s in spans.get_finished_spans()}
    client = by_name[(f"{SERVICE}/CreateSession", "CLIENT")]
    server = by_name[(f"{SERVICE}/CreateSession", "SERVER")]
    assert client.parent is not None and client.parent.span_id == call.get_span_context().span_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.context.trace_id == call.get_span_context().trace_id
    assert server.attributes is not None and server.attributes["rpc.grpc.status_code"] == 3
    assert server.status.status_code is trace.StatusCode.ERROR
    assert server.attributes["rpc.method"] == "CreateSession"


def test_no_trace_no_span_and_a_bad_traceparent_starts_nothing() -> None:
    valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with memory_spans() as spans:
        with command_client_span(SERVICE, "UpdateSession") as sent:  # outside any trace
            assert sent.traceparent == ""
        for bad in (
            "",
            "00-zz-yy-01",
            "garbage",
            valid + "x" * 100,
            "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
        ):
            with command_server_span(SERVICE, "UpdateSession", bad) as received:
                received.status(0)
        assert spans.get_finished_spans() == ()
        with tracing_off(), command_server_span(SERVICE, "UpdateSession", valid):
            pass
        assert spans.get_finished_spans() == ()
