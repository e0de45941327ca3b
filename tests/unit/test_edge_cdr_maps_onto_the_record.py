"""The edge's CallRecord becomes the billing record (core/cdr.py) field by field."""

from __future__ import annotations

import json

from trunkline.core.cdr import CdrSettings, MediaFigures
from trunkline.edge.cdr import Attempt, CallRecord, Direction, HungUp, to_cdr
from trunkline.edge.handover import call_record_from_data, call_record_to_data


def test_an_answered_call_maps_onto_a_cdr() -> None:
    record = CallRecord(
        "abc@pbx", "voice/acme", Direction.OUTBOUND, "+15550001", "+15550002", setup=1_800_000_000.0,
        answer=1_800_000_003.5, end=1_800_000_063.6, status=200, hung_up=HungUp.CALLEE,
        attempts=[Attempt("sip:gw1", 503, "192.0.2.1:5060"), Attempt("sip:gw2", 200, "[2001:db8::2]:5060")],
        reason="BYE", carrier="voice/pstn", gateway="[2001:db8::2]:5060",
    )  # fmt: skip
    cdr = to_cdr(
        record, CdrSettings("sbc", "voice", "trunkline:cdr"), source="127.0.0.1:5070", transport="tcp",
        ring=1_800_000_001.0, q850_cause=16, codec="PCMU", relay="relay-0",
        media=MediaFigures(packets_in=3000, packets_out=2990, packets_lost=10),
    )  # fmt: skip
    data = json.loads(cdr.to_json())
    assert data["installation"] == "sbc" and data["namespace"] == "voice" and data["trunk"] == "voice/acme"
    assert data["direction"] == "outbound" and data["hangup_side"] == "callee"
    assert data["invite_at"] == "2027-01-15T08:00:00.000Z"
    assert data["ring_at"] == "2027-01-15T08:00:01.000Z"
    assert data["duration_seconds"] == 63.6
    assert data["billable_seconds"] == 61  # 60.1 s answered, rounded up
    assert [a["status"] for a in data["attempts"]] == [503, 200]
    assert [a["gateway"] for a in data["attempts"]] == ["192.0.2.1:5060", "[2001:db8::2]:5060"]
    assert (data["carrier"], data["gateway"]) == ("voice/pstn", "[2001:db8::2]:5060")
    assert data["media"]["packets_lost"] == 10 and data["q850_cause"] == 16


def test_an_unanswered_call_bills_nothing() -> None:
    record = CallRecord("x@pbx", "voice/acme", Direction.INBOUND, None, "+15550002", setup=100.0, end=130.0,
                        status=486)  # fmt: skip
    cdr = to_cdr(record, CdrSettings())
    assert (cdr.billable_seconds, cdr.answer_at, cdr.hangup_side.value, cdr.final_status) == (
        0,
        None,
        "nobody",
        486,
    )


def test_hostile_values_are_bounded_not_fatal() -> None:
    record = CallRecord("x" * 5000, "voice/acme", Direction.INBOUND, "1" * 5000, "2" * 5000, setup=100.0,
                        end=101.0, status=999, attempts=[Attempt("sip:" + "g" * 5000, 42, "h" * 5000)] * 100,
                        carrier="c" * 5000, gateway="g" * 5000)  # fmt: skip
    cdr = to_cdr(record, CdrSettings(), q850_cause=4000)
    assert to_cdr(CallRecord("y", "t", Direction.INBOUND, None, "1", setup=0.0, answer=1.0, end=1e10),
                  CdrSettings()).billable_seconds == 2**31 - 1  # fmt: skip
    assert to_cdr(CallRecord("z", "t", Direction.INBOUND, None, "1", setup=-5.0, end=1e15),
                  CdrSettings()).end_at.year == 9999  # fmt: skip
    assert (cdr.final_status, cdr.q850_cause, len(cdr.attempts), len(cdr.callee)) == (None, None, 64, 512)
    lengths = (len(cdr.carrier or ""), len(cdr.gateway or ""), len(cdr.attempts[0].gateway or ""))
    assert lengths == (253, 256, 256)


def test_carrier_and_gateway_travel_with_the_call_to_another_edge() -> None:
    """An edge that adopts the call writes its CDR: the carrier side must survive the handover, and
    a record written by an edge of the previous release (no such fields) still reads."""
    record = CallRecord("h@pbx", "acme", Direction.OUTBOUND, "+15550001", "+15550002", setup=1.0,
                        attempts=[Attempt("sip:gw1", None, "192.0.2.1:5060"),
                                  Attempt("sip:gw2", 200, "192.0.2.2:5080")],
                        carrier="voice/pstn", gateway="192.0.2.2:5080")  # fmt: skip
    data = json.loads(json.dumps(call_record_to_data(record)))
    again = call_record_from_data(data)
    assert (again.carrier, again.gateway) == ("voice/pstn", "192.0.2.2:5080")
    gateways = [(a.target, a.status, a.gateway) for a in again.attempts]
    assert gateways == [("sip:gw1", None, "192.0.2.1:5060"), ("sip:gw2", 200, "192.0.2.2:5080")]
    for key in ("carrier", "gateway", "attempt_gateways"):
        del data[key]
    older = call_record_from_data(data)
    assert (older.carrier, older.gateway, older.attempts[1].gateway) == (None, None, None)
    data["carrier"], data["attempt_gateways"] = "x" * 1000, "not a list"
    hostile = call_record_from_data(data)
    assert hostile.carrier is None and hostile.attempts[0].gateway is None


def test_the_embedded_json_lines_name_the_carrier_and_gateway() -> None:
    record = CallRecord("j@pbx", "acme", Direction.INBOUND, "+15550001", "+15550002", setup=1.0,
                        carrier="default/pstn", gateway="127.0.0.1:5060")  # fmt: skip
    line = json.loads(record.to_json())
    assert (line["carrier"], line["gateway"]) == ("default/pstn", "127.0.0.1:5060")
