"""The edge's calls as traces and metrics see them: one trace per call (root span with the call's
identity, auth / admission / routing steps, a CLIENT span per attempt, a span per in-dialog
transaction, every SIP message an event), refused requests and REGISTERs as spans, the trace context
in the call's record (an adopting edge continues it) and its id in the CDR; counters that move."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from tests.support import edge_harness as world
from tests.support.spans import memory_spans, tracing_off
from trunkline.core.state import MemoryStore


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with memory_spans() as exporter:
        yield exporter


def _by_name(exporter: InMemorySpanExporter) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def _messages(span: Any) -> list[tuple[str, str, str]]:
    """(leg, direction, method or status) of each sip.message event of a span."""
    return [
        (e.attributes["sip.leg"], e.attributes["sip.direction"],
         str(e.attributes.get("sip.method") or e.attributes.get("sip.status_code")))
        for e in span.events if e.name == "sip.message"
    ]  # fmt: skip


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_an_answered_call_is_one_trace_with_steps_attempt_transactions_and_messages(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h)
    await h.stack.deliver(world.in_dialog("ACK", call.call_id, call.a_tag, 1), world.PBX)
    await h.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    await h.stack.reply(h.stack.requests("BYE")[-1], 200)
    named = _by_name(spans)
    root = named["call"][0]
    assert root.kind is SpanKind.SERVER and root.parent is None
    attrs = root.attributes
    assert attrs["sip.call_id"] == call.call_id and attrs["sip.b_call_id"] == call.b.request.call_id
    assert attrs["trunkline.trunk"] == "acme" and attrs["trunkline.direction"] == "outbound"
    assert attrs["sip.caller"] == "+14155550100" and attrs["sip.callee"] == "+442071234567"
    assert attrs["client.address"] == "127.0.0.2:5060" and attrs["network.transport"] == "udp"
    assert attrs["sip.status_code"] == 200 and attrs["trunkline.hangup_side"] == "caller"
    trace_id = root.context.trace_id
    for name in ("auth", "admission", "routing", "attempt", "BYE"):
        assert all(s.context.trace_id == trace_id for s in named[name]), name
        assert named[name][0].parent.span_id == root.context.span_id, name
    assert named["auth"][0].attributes["sip.auth.method"] == "ip-acl"
    assert named["admission"][0].attributes["trunkline.outcome"] == "admitted"
    assert named["routing"][0].attributes["trunkline.carrier"] == "pstn"
    attempt = named["attempt"][0]
    assert attempt.kind is SpanKind.CLIENT and attempt.attributes["server.address"] == "127.0.0.1:5071"
    assert attempt.attributes["sip.status_code"] == 200 and "sip.pdd_ms" in attempt.attributes
    # One BYE transaction from the caller (received) and one toward the callee (sent by the edge).
    assert sorted(s.attributes["sip.leg"] for s in named["BYE"]) == ["a", "b"]
    # Events of all the call's spans (a BYE the edge sends has its own, which may outlive the call's).
    ladder = [m for span in spans.get_finished_spans() for m in _messages(span)]
    for step in [("a", "received", "INVITE"), ("b", "sent", "INVITE"), ("b", "received", "200"),
                 ("a", "sent", "200"), ("a", "received", "ACK"), ("b", "sent", "ACK"),
                 ("a", "received", "BYE"), ("b", "sent", "BYE")]:  # fmt: skip
        assert step in ladder, (step, ladder)
    first = _messages(root)
    assert first.index(("a", "received", "INVITE")) < first.index(("b", "sent", "INVITE"))
    record = h.cdr.records[-1]
    assert record.trace_id == format(trace_id, "032x") and '"trace_id"' in record.to_json()
    assert len(h.edge.traces) == 0  # nothing kept of an ended call


async def test_refused_requests_and_registers_are_spans_too(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    h = world.build(tmp_path)
    await h.stack.deliver(world.invite(to="+33123456789"), world.PBX)  # outside the allowed prefixes
    await h.stack.deliver(world.invite(), world.STRANGER)  # no credentials: challenged
    register = world.invite().replace("INVITE", "REGISTER", 1).replace("CSeq: 1 INVITE", "CSeq: 1 REGISTER")
    await h.stack.deliver(register, world.STRANGER)
    calls = _by_name(spans)["call"]
    refused = next(s for s in calls if s.attributes.get("trunkline.rule") == "allowedPrefixes")
    assert refused.attributes["sip.status_code"] == 403 and refused.attributes["trunkline.trunk"] == "acme"
    challenged = next(s for s in calls if s.attributes["client.address"] == "127.0.0.9:5060")
    assert challenged.attributes["sip.status_code"] == 407
    assert ("a", "sent", "407") in _messages(challenged)
    registers = _by_name(spans)["REGISTER"]
    assert registers[0].attributes["sip.status_code"] == 401
    assert len(h.edge.traces) == 0


async def test_every_attempt_of_a_failed_over_call_is_a_client_span_and_none_is_kept(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    h = world.build(tmp_path)
    await h.stack.deliver(world.invite(), world.PBX)
    await h.stack.reply(h.stack.requests("INVITE")[0], 503)
    second = h.stack.requests("INVITE")[1]
    await h.stack.reply(second, 486)
    assert h.stack.responses[-1].status == 486
    attempts = _by_name(spans)["attempt"]
    assert [a.attributes["sip.status_code"] for a in attempts] == [503, 486]
    assert [a.attributes["server.address"] for a in attempts] == ["127.0.0.1:5071", "127.0.0.1:5072"]
    [call] = _by_name(spans)["call"]
    assert call.attributes["sip.status_code"] == 486 and call.attributes["trunkline.hangup_side"] == "nobody"
    assert len(h.edge.traces) == 0
    registry = h.edge.metrics.registry
    for gateway, outcome in (("sip:127.0.0.1:5071", "rejected"), ("sip:127.0.0.1:5072", "rejected")):
        labels = {"carrier": "pstn", "gateway": gateway, "outcome": outcome}
        assert _value(registry, "trunkline_carrier_attempts_total", **labels) == 1
    assert _value(registry, "trunkline_calls_total", trunk="acme", direction="outbound", outcome="busy") == 1


async def test_a_call_adopted_by_another_edge_continues_its_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    store = MemoryStore()
    first = world.build(tmp_path, store=store, owner="edge-1")
    call = await world.answered_call(first)
    await first.stack.deliver(world.in_dialog("ACK", call.call_id, call.a_tag, 1), world.PBX)
    second = world.build(tmp_path, store=store, owner="edge-2")
    await second.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert second.stack.responses[-1].status == 200
    held = first.edge.ctx.calls.get(call.call_id)
    assert held is not None and held.record.traceparent  # the first edge's call span (still open)
    adopted = next(s for s in spans.get_finished_spans() if s.name == "call")
    assert adopted.attributes["trunkline.adopted"] is True
    parent = f"00-{adopted.context.trace_id:032x}-{adopted.parent.span_id:016x}-"
    assert held.record.traceparent.startswith(parent)  # continued under the first edge's call span
    assert format(adopted.context.trace_id, "032x") == second.cdr.records[-1].trace_id
    bye = next(s for s in spans.get_finished_spans() if s.name == "BYE" and s.attributes["sip.leg"] == "a")
    assert bye.context.trace_id == adopted.context.trace_id
    assert ("a", "received", "BYE") in _messages(adopted)


async def test_with_tracing_off_nothing_is_recorded_or_kept(tmp_path: Path) -> None:
    with tracing_off():
        h = world.build(tmp_path)
        call = await world.answered_call(h)
        assert len(h.edge.traces) == 0
        await h.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert h.cdr.records[-1].trace_id is None


async def test_metrics_move_with_calls_messages_rejections_and_attempts(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    registry = h.edge.metrics.registry
    call = await world.answered_call(h)
    assert _value(registry, "trunkline_active_calls", trunk="acme") == 1
    await h.stack.advance(30)
    await h.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert _value(registry, "trunkline_active_calls", trunk="acme") == 0
    answered = {"trunk": "acme", "direction": "outbound", "outcome": "answered"}
    assert _value(registry, "trunkline_calls_total", **answered) == 1
    assert _value(registry, "trunkline_call_duration_seconds_count", trunk="acme", direction="outbound") == 1
    assert _value(registry, "trunkline_call_duration_seconds_sum", trunk="acme", direction="outbound") >= 30
    assert _value(registry, "trunkline_post_dial_delay_seconds_count", trunk="acme") == 1
    assert _value(registry, "trunkline_sip_requests_total", method="INVITE", direction="received") == 1
    assert _value(registry, "trunkline_sip_requests_total", method="INVITE", direction="sent") == 1
    assert _value(registry, "trunkline_sip_requests_total", method="BYE", direction="sent") == 1
    assert _value(registry, "trunkline_sip_responses_total", method="INVITE", status_class="2xx",
                  direction="sent") == 1  # fmt: skip
    assert _value(registry, "trunkline_sip_responses_total", method="INVITE", status_class="2xx",
                  direction="received") == 1  # fmt: skip
    assert _value(registry, "trunkline_carrier_attempts_total", carrier="pstn", gateway="sip:127.0.0.1:5071",
                  outcome="answered") == 1  # fmt: skip
    assert _value(registry, "trunkline_store_operation_seconds_count", operation="admit") == 1
    assert _value(registry, "trunkline_store_operation_seconds_count", operation="release") == 1
    assert _value(registry, "trunkline_store_operation_seconds_count", operation="dialog") >= 1
    await h.stack.deliver(world.invite(to="+33123456789"), world.PBX)
    assert _value(registry, "trunkline_rejections_total", rule="prefix") == 1
    bad = world.invite(headers=('Proxy-Authorization: Digest username="acme", realm="acme", nonce="x", '
                                'uri="sip:x", response="00"',))  # fmt: skip
    await h.stack.deliver(bad, world.STRANGER)
    assert _value(registry, "trunkline_rejections_total", rule="digest") == 1


def test_peer_addresses_are_formatted_once_and_kept_bounded() -> None:
    from trunkline.edge import trace_messages

    assert trace_messages.peer(("127.0.0.1", 5070)) == "127.0.0.1:5070"
    assert trace_messages.peer(("127.0.0.1", 5070)) is trace_messages.peer(("127.0.0.1", 5070))
    assert trace_messages.peer(None) == ""
    for port in range(trace_messages._PEERS_KEPT * 2):  # every source port new: a flood of peers
        assert trace_messages.peer(("127.0.0.2", port)) == f"127.0.0.2:{port}"
    assert len(trace_messages._peers) <= trace_messages._PEERS_KEPT
