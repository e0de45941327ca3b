"""Logging: stdlib logging, one line per event, in logfmt (`text`) or JSON (`json`).

Every line has a UTC RFC 3339 timestamp with milliseconds, the level, the component (logger name), the
message and the event's structured fields; a line written inside a traced span also has `trace_id`
and `span_id`, so a log search and the call's trace find each other.

  text: time=2026-11-22T04:16:28.513Z level=INFO component=trunkline.edge msg="call rejected" trunk=acme
  json: {"time":"2026-11-22T04:16:28.513Z","level":"INFO","component":"trunkline.edge","msg":...}
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from trunkline.core import telemetry

FORMATS = ("text", "json")
_RESERVED = ("time", "level", "component", "msg", "trace_id", "span_id", "error")


def utc_stamp(created: float, _cache: list[Any] = [-1, ""]) -> str:  # noqa: B006 - per-second cache
    """RFC 3339 UTC with milliseconds: `2026-11-22T04:16:28.513Z` (the seconds part cached)."""
    second = int(created)
    if _cache[0] != second:
        _cache[0], _cache[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_cache[1]}.{int((created - second) * 1000):03d}Z"


def _trace_ids() -> tuple[str, str] | None:
    """The current span's ids (hex), when tracing is on and a span is being recorded."""
    if not telemetry.enabled():
        return None
    from opentelemetry import trace

    from trunkline.core.lean_spans import LeanSpan

    span = trace.get_current_span()
    if type(span) is LeanSpan:  # the edge's call spans keep theirs formatted
        return span.hex_ids()
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The line's fields in order: time, level, component, msg, trace ids, the event's fields, error."""
    fields: dict[str, Any] = {
        "time": utc_stamp(record.created),
        "level": record.levelname,
        "component": record.name,
        "msg": record.getMessage(),
    }
    ids = _trace_ids()
    if ids:
        fields["trace_id"], fields["span_id"] = ids
    extra: dict[str, Any] | None = getattr(record, "fields", None)
    if extra:
        for key, value in extra.items():
            fields[f"field.{key}" if key in _RESERVED else key] = value
    if record.exc_info:
        fields["error"] = logging.Formatter().formatException(record.exc_info)
    return fields


class LogfmtFormatter(logging.Formatter):
    """`key=value` pairs; a value with a space, `=`, a quote, a control character or nothing is
    double-quoted with `\\` escapes (logfmt as Go's and Heroku's parsers read it)."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in record_fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values that JSON has no type for become their text."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_fields(record), default=str, ensure_ascii=False, separators=(",", ":"))


# What makes a logfmt value need quotes: a space or control character, a quote, `=`, a backslash, DEL.
_NEEDS_QUOTES = re.compile(r'[\x00-\x20"=\\\x7f]')


def logfmt_value(value: Any) -> str:
    text = value if type(value) is str else str(value).lower() if isinstance(value, bool) else str(value)
    if text and _NEEDS_QUOTES.search(text) is None:  # one C-level scan (a line per call: a hot path)
        return text
    return json.dumps(text, ensure_ascii=False)  # JSON string escapes are what logfmt readers undo


def setup(level: str = "INFO", log_format: str = "text") -> None:
    """Send every logger's lines to standard error in `log_format` (text or json)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    # What our lines never show, LogRecord need not look up (thread, process; logging HOWTO,
    # "Optimization"): it is a hot path at one line per call.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor the caller's file and line: finding them walks the stack, a third of a line's cost.
    logging._srcfile = None  # the logging HOWTO's documented switch
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured fields (rendered as key=value or JSON members)."""
    logger.log(level, message, extra={"fields": fields})
