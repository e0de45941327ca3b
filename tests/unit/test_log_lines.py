"""Log lines: logfmt text and JSON, UTC RFC 3339 with milliseconds, fields, error text."""

from __future__ import annotations

import json
import logging
import re

import pytest

from trunkline.core.logs import JsonFormatter, LogfmtFormatter, logfmt_value, utc_stamp

LOGFMT_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')


def _record(message: str = "call rejected", **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("trunkline.edge", logging.WARNING, __file__, 1, message, None, None)
    record.created = 1_795_000_000.5129
    record.fields = fields
    return record


def _parse_logfmt(line: str) -> dict[str, str]:
    pairs = LOGFMT_PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, "every byte belongs to a pair"
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


def test_timestamps_are_utc_rfc3339_with_milliseconds() -> None:
    assert utc_stamp(0.25) == "1970-01-01T00:00:00.250Z"
    assert utc_stamp(1_795_000_000.5129) == "2026-11-18T11:06:40.512Z"
    assert utc_stamp(1_795_000_001.0) == "2026-11-18T11:06:41.000Z"


def test_text_is_logfmt_with_quoted_values() -> None:
    line = LogfmtFormatter().format(
        _record(trunk="acme", reason='said "no" = bad', empty="", n=3, ok=True, tab="a\tb")
    )
    fields = _parse_logfmt(line)
    assert fields == {
        "time": "2026-11-18T11:06:40.512Z", "level": "WARNING", "component": "trunkline.edge",
        "msg": "call rejected", "trunk": "acme", "reason": 'said "no" = bad', "empty": "", "n": "3",
        "ok": "true", "tab": "a\tb",
    }  # fmt: skip
    assert "trace_id" not in fields  # tracing off: no ids


@pytest.mark.parametrize("value", ["plain", "", "two words", 'q"uote', "back\\slash", "k=v", "\x00\n"])
def test_logfmt_values_round_trip(value: str) -> None:
    text = logfmt_value(value)
    assert (json.loads(text) if text.startswith('"') else text) == value
    assert " " not in text or text.startswith('"')


def test_json_lines_carry_fields_and_never_lose_reserved_names() -> None:
    line = JsonFormatter().format(_record(trunk="acme", level="spoofed", addr=("127.0.0.1", 5060)))
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["field.level"] == "spoofed"
    assert doc["time"] == "2026-11-18T11:06:40.512Z" and doc["component"] == "trunkline.edge"
    assert doc["msg"] == "call rejected" and doc["trunk"] == "acme"
    assert doc["addr"] == ["127.0.0.1", 5060]


def test_exceptions_are_one_field() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = _record()
        record.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in doc["error"]
    assert "\n" not in LogfmtFormatter().format(record)
