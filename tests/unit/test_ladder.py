"""`trunkline ladder` on a recorded trace (OTLP/JSON as a collector's file exporter writes it, made by
edge/tracing.py): the chart, found by trace id or Call-ID, the HTML page, and hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkline.cli import main
from trunkline.ladder import LadderError, ladder, ladder_rows, pick_trace, spans_from_jaeger, spans_from_otlp

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "traces" / "call.otlp.json"
TRACE_ID = "26e3afc72a5bd1db8fc6ad281d761f0f"
CALL_ID = "3848276298220188511@pbx.example"


def _arrows(chart: str) -> list[str]:
    """Each row as `label direction` (the chart's arrows without their spacing)."""
    out = []
    for line in chart.splitlines()[1:]:
        lanes = line[10:]
        label = lanes.replace("|", " ").replace("-", " ").replace(">", " ").replace("<", " ").strip()
        out.append(f"{label} {'<' if '<' in lanes else '>'}")
    return out


def test_the_recorded_call_draws_its_ladder_by_call_id_and_by_trace_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    by_call = ladder(CALL_ID, None, str(RECORDED), None)
    assert ladder(TRACE_ID, None, str(RECORDED), None) == by_call
    header = by_call.splitlines()[0].split()
    assert header == ["A", "127.0.0.1:5070", "edge", "relay", "B", "127.0.0.1:5080"]
    assert _arrows(by_call) == [
        "INVITE >", "100 Trying <", "CreateSession >", "OK <", "INVITE >", "180 Ringing <", "180 Ringing <",
        "200 OK <", "ACK >", "200 OK <", "ACK >", "BYE >", "BYE >", "200 OK <", "200 OK <",
    ]  # fmt: skip
    assert main(["ladder", CALL_ID, "--otlp-file", str(RECORDED)]) == 0
    assert capsys.readouterr().out == by_call


def test_the_html_page_holds_the_ladder_and_every_span(tmp_path: Path) -> None:
    out = tmp_path / "call.html"
    ladder(CALL_ID, None, str(RECORDED), str(out))
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "180 Ringing" in page and "&lt;" in page
    for name in ("call", "auth", "admission", "routing", "attempt", "BYE", "MediaRelay/CreateSession"):
        assert f">{name}<" in page or name in page
    assert "<script" not in page  # self-contained, nothing to fetch or run


def test_jaeger_json_gives_the_same_rows() -> None:
    spans = pick_trace(spans_from_otlp(RECORDED.read_text()), TRACE_ID)
    jaeger = {
        "processes": {"p1": {"serviceName": "trunkline-edge"}},
        "spans": [
            {
                "traceID": s.trace_id, "spanID": s.span_id, "operationName": s.name, "processID": "p1",
                "references": [{"refType": "CHILD_OF", "spanID": s.parent_id}] if s.parent_id else [],
                "startTime": s.start_ns // 1000, "duration": (s.end_ns - s.start_ns) // 1000,
                "tags": [{"key": "span.kind", "value": s.kind}]
                + [{"key": k, "value": v} for k, v in s.attributes.items()],
                "logs": [
                    {"timestamp": t // 1000, "fields": [{"key": "event", "value": n}]
                     + [{"key": k, "value": v} for k, v in a.items()]}
                    for t, n, a in s.events
                ],
            }
            for s in spans
        ],
    }  # fmt: skip
    columns, rows = ladder_rows(spans_from_jaeger(jaeger))
    expected_columns, expected_rows = ladder_rows(spans)
    assert columns == expected_columns
    assert [(r.source, r.target, r.label) for r in rows] == [
        (r.source, r.target, r.label) for r in expected_rows
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{}",
        "[1, 2]",
        "[1, 2]\n{",
        '{"resourceSpans": 5}',
        '{"resourceSpans": [{"scopeSpans": [{"spans": []}]}]}',
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x"}]}]}]}',
        '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 1, "spanId": "x", "kind": "z"}]}]}]}',
    ],
)
def test_hostile_or_empty_files_are_one_readable_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(LadderError):
        ladder(CALL_ID, None, str(path), None)


def test_unknown_ids_and_missing_sources_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ladder", "no-such-call", "--otlp-file", str(RECORDED)]) == 1
    assert "no trace for 'no-such-call'" in capsys.readouterr().err
    assert main(["ladder", CALL_ID, "--otlp-file", "/nonexistent/file"]) == 1
    assert main(["ladder", CALL_ID, "--jaeger", "http://127.0.0.1:1"]) == 1
    assert "trunkline ladder:" in capsys.readouterr().err
