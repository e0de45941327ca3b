"""The edge's CallRecord becomes the billing record (core/cdr.py) field by field."""

from __future__ import annotations

import json

from trunkline.core.cdr import CdrSettings, MediaFigures
from trunkline.edge.cdr import Attempt, CallRecord, Direction, HungUp, to_cdr


def test_an_answered_call_maps_onto_a_cdr() -> None:
    record = CallRecord(
        "abc@pbx", "voice/acme", Direction.OUTBOUND, "+15550001", "+15550002", setup=1_800_000_000.0,
        answer=1_800_000_003.5, end=1_800_000_063.6, status=200, hung_up=HungUp.CALLEE,
        attempts=[Attempt("sip:gw1", 503), Attempt("sip:gw2", 200)], reason="BYE",
    )  # fmt: skip
    cdr = to_cdr(
        record, CdrSettings("sbc", "voice", "trunkline:cdr"), source="127.0.0.1:5070", transport="tcp",
        carrier="pstn", gateway="gw2", ring=1_800_000_001.0, q850_cause=16, codec="PCMU", relay="relay-0",
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
                        end=101.0, status=999, attempts=[Attempt("sip:" + "g" * 5000, 42)] * 100)  # fmt: skip
    cdr = to_cdr(record, CdrSettings(), q850_cause=4000)
    assert to_cdr(CallRecord("y", "t", Direction.INBOUND, None, "1", setup=0.0, answer=1.0, end=1e10),
                  CdrSettings()).billable_seconds == 2**31 - 1  # fmt: skip
    assert to_cdr(CallRecord("z", "t", Direction.INBOUND, None, "1", setup=-5.0, end=1e15),
                  CdrSettings()).end_at.year == 9999  # fmt: skip
    assert (cdr.final_status, cdr.q850_cause, len(cdr.attempts), len(cdr.callee)) == (None, None, 64, 512)
