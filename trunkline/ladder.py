"""`trunkline ladder CALL-ID|TRACE-ID [--jaeger URL | --otlp-file FILE] [--html OUT]`: a call's SIP
message sequence chart, rebuilt from its trace alone (the `sip.message` events of edge/tracing.py and
the edge's gRPC client spans toward the media relay).

Columns: A (the caller's side, leg a), the edge, the relay (when the call anchored media), B (the
callee's side, leg b). Input: Jaeger's HTTP query API, or a file of OTLP/JSON (one export request per
line or one document, as a collector's file exporter writes). Pure functions below the I/O helpers.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
WIDTH = 22  # characters per column in the text chart
CALL_ID_KEYS = ("sip.call_id", "sip.b_call_id")  # the caller's leg, the callee's leg
MAX_SPANS = 100_000  # a hostile or huge file: refuse rather than use unbounded memory


class LadderError(Exception):
    """Nothing to draw (unknown id, unreadable input): one readable line."""


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str  # server, client, internal, ...
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Row:
    time_ns: int
    source: str  # column names
    target: str
    label: str


# ---------------------------------------------------------------- reading traces


def _hex_id(value: str, size: int) -> str:
    """OTLP/JSON ids are hex; protobuf's own JSON mapping writes them base64: accept both."""
    if len(value) == size * 2 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value


def _otlp_value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return json.dumps(value)


def _otlp_attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _otlp_value(item.get("value", {})) for item in items or ()}


def _otlp_event(event: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    return (
        int(event.get("timeUnixNano", 0)),
        str(event.get("name", "")),
        _otlp_attributes(event.get("attributes")),
    )


_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def spans_from_otlp(text: str) -> list[Span]:
    """Spans of an OTLP/JSON file: one ExportTraceServiceRequest per line, or one document."""
    try:
        return _spans_from_otlp(text)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # JSON, but not OTLP's shape
        raise LadderError(f"not OTLP/JSON traces ({type(exc).__name__}: {exc})") from None


def _spans_from_otlp(text: str) -> list[Span]:
    text = text.strip()
    try:
        documents = [json.loads(text)] if text.startswith("{") and "\n{" not in text else None
    except json.JSONDecodeError:
        documents = None
    if documents is None:
        try:
            documents = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise LadderError(f"not OTLP/JSON: {exc}") from None
    spans: list[Span] = []
    for document in documents:
        for resource_spans in document.get("resourceSpans", ()):
            resource = _otlp_attributes(resource_spans.get("resource", {}).get("attributes"))
            service = str(resource.get("service.name", "?"))
            for scope in resource_spans.get("scopeSpans", ()):
                for raw in scope.get("spans", ()):
                    if len(spans) >= MAX_SPANS:
                        raise LadderError(f"more than {MAX_SPANS} spans")
                    kind = raw.get("kind", 1)
                    if isinstance(kind, str):  # "SPAN_KIND_SERVER"
                        kind_name = kind.removeprefix("SPAN_KIND_").lower()
                    else:
                        kind_name = _KINDS.get(int(kind), "internal")
                    parent = raw.get("parentSpanId") or None
                    spans.append(Span(
                        _hex_id(raw["traceId"], 16), _hex_id(raw["spanId"], 8),
                        _hex_id(parent, 8) if parent else None, raw.get("name", ""), kind_name, service,
                        int(raw.get("startTimeUnixNano", 0)), int(raw.get("endTimeUnixNano", 0)),
                        _otlp_attributes(raw.get("attributes")),
                        [_otlp_event(e) for e in raw.get("events", ())],
                    ))  # fmt: skip
    return spans


def spans_from_jaeger(trace: dict[str, Any]) -> list[Span]:
    """Spans of one trace as Jaeger's HTTP API returns it (`/api/traces/ID` -> data[0])."""
    try:
        return _spans_from_jaeger(trace)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise LadderError(f"not a Jaeger trace ({type(exc).__name__}: {exc})") from None


def _spans_from_jaeger(trace: dict[str, Any]) -> list[Span]:
    services = {pid: p.get("serviceName", "?") for pid, p in trace.get("processes", {}).items()}
    spans = []
    for raw in trace.get("spans", ())[:MAX_SPANS]:
        tags = {t["key"]: t.get("value") for t in raw.get("tags", ())}
        parent = next(
            (r["spanID"] for r in raw.get("references", ()) if r.get("refType") == "CHILD_OF"), None
        )
        start = int(raw.get("startTime", 0)) * 1000
        events = []
        for log in raw.get("logs", ()):
            fields = {f["key"]: f.get("value") for f in log.get("fields", ())}
            events.append((int(log.get("timestamp", 0)) * 1000, str(fields.pop("event", "")), fields))
        spans.append(Span(
            raw["traceID"].rjust(32, "0"), raw["spanID"], parent, raw.get("operationName", ""),
            str(tags.get("span.kind", "internal")), services.get(raw.get("processID"), "?"),
            start, start + int(raw.get("duration", 0)) * 1000, tags, events,
        ))  # fmt: skip
    return spans


def pick_trace(spans: list[Span], ident: str) -> list[Span]:
    """The spans of the trace `ident` names: a trace id, or a Call-ID of either leg."""
    if TRACE_ID.match(ident):
        chosen = [s for s in spans if s.trace_id == ident.lower()]
    else:
        ids = {
            s.trace_id
            for s in spans
            if ident in (s.attributes.get("sip.call_id"), s.attributes.get("sip.b_call_id"))
        }
        chosen = [s for s in spans if s.trace_id in ids]
    if not chosen:
        raise LadderError(f"no trace for {ident!r}")
    return chosen


# ---------------------------------------------------------------- the chart


def ladder_rows(spans: list[Span]) -> tuple[list[str], list[Row]]:
    """Columns and rows (time ordered) from the SIP message events and the relay gRPC calls."""
    root = next((s for s in spans if s.name == "call" and s.kind == "server"), None)
    a_peer = str(root.attributes.get("client.address", "")) if root else ""
    b_peer = next((str(s.attributes["server.address"]) for s in spans if s.name == "attempt"
                   and "server.address" in s.attributes), "")  # fmt: skip
    a, edge, relay, b = f"A {a_peer}".strip(), "edge", "relay", f"B {b_peer}".strip()
    rows: list[Row] = []
    for span in spans:
        for time_ns, name, attrs in span.events:
            if name != "sip.message":
                continue
            label = str(
                attrs.get("sip.method") or f"{attrs.get('sip.status_code')} {attrs.get('sip.reason', '')}"
            )
            peer = a if attrs.get("sip.leg") == "a" else b
            received = attrs.get("sip.direction") == "received"
            rows.append(Row(time_ns, peer if received else edge, edge if received else peer, label.strip()))
        if span.kind == "client" and span.attributes.get("rpc.system") == "grpc" and "Media" in span.name:
            method = span.name.rpartition("/")[2]
            rows.append(Row(span.start_ns, edge, relay, method))
            code = span.attributes.get("rpc.grpc.status_code", 0)
            rows.append(Row(span.end_ns, relay, edge, "OK" if code in (0, "0") else f"gRPC {code}"))
    rows.sort(key=lambda r: r.time_ns)
    columns = [a, edge, *([relay] if any(relay in (r.source, r.target) for r in rows) else []), b]
    return columns, rows


def render_text(columns: list[str], rows: list[Row]) -> str:
    """The chart as text: a time column, then one lane per party, arrows between lanes."""
    start = rows[0].time_ns if rows else 0
    lanes = [i * WIDTH + WIDTH // 2 for i in range(len(columns))]
    width = len(columns) * WIDTH
    head = "".join(name[: WIDTH - 1].center(WIDTH) for name in columns)
    lines = [" " * 10 + head.rstrip()]
    for row in rows:
        line = [" "] * width
        for x in lanes:
            line[x] = "|"
        i, j = columns.index(row.source), columns.index(row.target)
        lo, hi = sorted((lanes[i], lanes[j]))
        for x in range(lo + 1, hi):
            line[x] = "-"
        if j > i:
            line[hi - 1] = ">"
        else:
            line[lo + 1] = "<"
        label = row.label[: max(0, hi - lo - 5)]
        begin = lo + 1 + (hi - lo - 1 - len(label)) // 2
        line[begin : begin + len(label)] = list(label)
        lines.append(f"{(row.time_ns - start) / 1e9:+8.3f}s " + "".join(line).rstrip())
    return "\n".join(lines) + "\n"


def render_html(columns: list[str], rows: list[Row], spans: list[Span]) -> str:
    """A self-contained page: the ladder, then each span's timing as a bar."""
    start = min((s.start_ns for s in spans), default=0)
    end = max((s.end_ns for s in spans), default=start + 1)
    total = max(end - start, 1)
    bars = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        left = 100 * (span.start_ns - start) / total
        size = max(0.3, 100 * (span.end_ns - span.start_ns) / total)
        bars.append(
            f"<tr><td>{html.escape(span.service)}</td><td>{html.escape(span.name)}</td>"
            f"<td>{(span.start_ns - start) / 1e6:.1f} ms</td>"
            f"<td>{(span.end_ns - span.start_ns) / 1e6:.1f} ms</td>"
            f'<td class="lane"><div style="margin-left:{left:.2f}%;width:{size:.2f}%"></div></td></tr>'
        )
    trace_id = spans[0].trace_id if spans else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>SIP ladder "
        f"{html.escape(trace_id)}</title><style>body{{font-family:sans-serif}}pre{{font-size:13px}}"
        "table{border-collapse:collapse;width:100%}td{padding:2px 6px;font-size:13px}"
        ".lane{width:50%}.lane div{background:#4a7ebb;height:10px}</style></head><body>"
        f"<h1>Trace {html.escape(trace_id)}</h1><pre>{html.escape(render_text(columns, rows))}</pre>"
        "<h2>Spans</h2><table><tr><th>service</th><th>span</th><th>start</th><th>duration</th><th></th></tr>"
        + "".join(bars)
        + "</table></body></html>\n"
    )


# ---------------------------------------------------------------- sources


def from_file(path: str, ident: str) -> list[Span]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise LadderError(f"cannot read {path}: {exc.strerror}") from None
    return pick_trace(spans_from_otlp(text), ident)


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=15) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise LadderError(f"{url}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise LadderError(f"{url}: {exc}") from None


def from_jaeger(base: str, ident: str) -> list[Span]:
    """The trace from Jaeger: by id, or by Call-ID (a tag search in each service, newest first)."""
    base = base.rstrip("/")
    if TRACE_ID.match(ident):
        found = _get(f"{base}/api/traces/{ident.lower()}")
        data = (found or {}).get("data") or []
        if not data:
            raise LadderError(f"Jaeger at {base} has no trace {ident}")
        return spans_from_jaeger(data[0])
    services = (_get(f"{base}/api/services") or {}).get("data") or []
    for service in services[:50]:
        for key in CALL_ID_KEYS:
            query = urllib.parse.urlencode(
                {"service": service, "tags": json.dumps({key: ident}), "limit": "5", "lookback": "7d"}
            )
            data = (_get(f"{base}/api/traces?{query}") or {}).get("data") or []
            if data:
                return spans_from_jaeger(data[0])
    raise LadderError(f"Jaeger at {base} has no call with Call-ID {ident!r}")


def ladder(ident: str, jaeger: str | None, otlp_file: str | None, html_out: str | None) -> str:
    """The chart as text (and the HTML page written to `html_out`); LadderError when impossible."""
    if otlp_file:
        spans = from_file(otlp_file, ident)
    elif jaeger:
        spans = from_jaeger(jaeger, ident)
    else:
        raise LadderError("give --jaeger URL or --otlp-file FILE")
    columns, rows = ladder_rows(spans)
    if not rows:
        raise LadderError(f"trace {spans[0].trace_id} has no SIP messages (was it recorded by an edge?)")
    if html_out:
        Path(html_out).write_text(render_html(columns, rows, spans))
    return render_text(columns, rows)
