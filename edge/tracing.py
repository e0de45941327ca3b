"""The call span model: one trace per call, built by the edge's call handling (the rooms call it).

  call (SERVER, root or continuing a failed-over call's record)
  ├── auth       (sip.auth.method, sip.auth.outcome)
  ├── admission  (trunkline.rule, trunkline.outcome)
  ├── routing    (trunkline.carrier / target, trunkline.prefix)
  ├── attempt    one CLIENT span per INVITE sent (target, transport, status, post-dial delay)
  │   └── trunkline.media.v1.MediaRelay/... (gRPC client spans; the relay continues them)
  └── BYE / re-INVITE / UPDATE / INFO   one span per in-dialog transaction

Every SIP message sent or received on either leg is a `sip.message` event on the span current for
it, with method or status, leg (a: the caller's side, b: the callee's), direction, size and peer:
`trunkline ladder` rebuilds the message sequence chart from those events alone.

Tracing off, `start_call()` returns NO_TRACE whose methods do nothing: one global read per call; a
call the sampler leaves out gets NO_TRACE too (one sampling decision, nothing else). The spans are
core/lean_spans.py's LeanSpans, not the SDK's (measured: the SDK's span objects were most of what a
traced call cost; bench/README-edge.md).
Trace context goes into SIP only for peers that ask (edge/trace_headers.py). `CallTrace.traceparent`
goes in the call's store record: an edge adopting the call after a failover continues its trace.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from trunkline.core import telemetry
from trunkline.core.lean_spans import Current, LeanSpan, Recorder, make_current, restore
from trunkline.core.lean_spans import Message as Event
from trunkline.edge.trace_messages import message
from trunkline.edge.trace_messages import message_attributes as message_attributes


class NoTrace:
    """A call's trace while tracing is off: every method a no-op."""

    recording = False
    traceparent: str | None = None
    trace_id: str | None = None
    last_status = 0  # the last final response sent to the caller (the status of a rejected request)

    def message(self, leg: str, direction: str, first_line: str, size: int, peer: str = "") -> None:
        pass

    def note(self, event: Event) -> None:
        """A SIP message's event, made by trace_messages.sip_event."""

    def step(self, name: str, **attributes: Any) -> Step:
        return NO_STEP

    def attempt(self, target: str, transport: str, b_call_id: str = "", **attributes: Any) -> Attempt:
        return NO_ATTEMPT

    def transaction(self, method: str, leg: str) -> Step:
        return NO_STEP

    def set(self, **attributes: Any) -> None:
        pass

    def current(self) -> AbstractContextManager[None]:
        """The call's span is the current one inside (log lines carry its ids; gRPC calls continue
        it); nothing while tracing is off."""
        return _NOTHING

    def finish(self, status: int, hangup_side: str = "", reason: str = "") -> None:
        pass


_NOTHING: AbstractContextManager[None] = nullcontext()


class Step:
    """A child span (auth, admission, routing, an in-dialog transaction); NO_STEP when off. As a
    context manager (`with trace.step(...) as step`) it is the current span inside and ends on
    leaving, with the exception's name as its error."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: LeanSpan | None = None) -> None:
        self._span = span

    @property
    def recording(self) -> bool:
        return self._span is not None

    def set(self, **attributes: Any) -> None:
        if self._span is not None:
            self._span.set_attributes(_attributes(attributes))

    def message(self, leg: str, direction: str, first_line: str, size: int, peer: str = "") -> None:
        if self._span is not None:
            self._span.message(message(leg, direction, first_line, size, peer))

    def note(self, event: Event) -> None:
        if self._span is not None:
            self._span.message(event)

    def current(self) -> AbstractContextManager[None]:
        """This span is the current one inside (gRPC calls made there are its children)."""
        return Current(self._span) if self._span is not None else _NOTHING

    def end(self, error: str | None = None) -> None:
        if self._span is not None:
            if error:
                self._span.set_status(Status(StatusCode.ERROR, error))
            self._span.end()
            self._span = None

    def __enter__(self) -> Step:
        if self._span is not None:
            self._token = make_current(self._span)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._span is not None:
            restore(self._token)
            self.end(kind.__name__ if kind is not None else None)


class Attempt(Step):
    """One INVITE toward a target (CLIENT span); `answered()` records the post-dial delay."""

    __slots__ = ("_first", "_started")

    def __init__(self, span: LeanSpan | None = None) -> None:
        super().__init__(span)
        self._started = time.monotonic()
        self._first = False

    def response(self, status: int) -> None:
        """A response to this attempt's INVITE: the first one fixes the post-dial delay."""
        if self._span is None:
            return
        if not self._first and status > 100:
            self._first = True
            self._span.set_attribute("sip.pdd_ms", round((time.monotonic() - self._started) * 1000))
        if status >= 200:
            self._span.set_attribute("sip.status_code", status)

    def context(self) -> LeanSpan | None:
        """Use as `with trace.use_span(attempt.context()...)` to put gRPC calls under this attempt."""
        return self._span


NO_STEP = Step()
NO_ATTEMPT = Attempt()
NO_TRACE = NoTrace()


class CallTrace(NoTrace):
    """A traced call: its root span and the helpers that add children and SIP events to it."""

    recording = True

    def __init__(self, span: LeanSpan, recorder: Recorder) -> None:
        self.span = span
        self._recorder = recorder
        context = span.context
        self.trace_id = format(context.trace_id, "032x")
        self.traceparent = f"00-{self.trace_id}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def message(self, leg: str, direction: str, first_line: str, size: int, peer: str = "") -> None:
        self.note(message(leg, direction, first_line, size, peer))

    def note(self, event: Event) -> None:
        if event[3] and event[0] == "a" and event[1] == "sent" and event[4] >= 200:
            self.last_status = event[4]
        self.span.message(event)

    def step(self, name: str, **attributes: Any) -> Step:
        """A child span around a phase of the call (auth, admission, routing): use as `with`, current
        inside."""
        return Step(self._recorder.start_child(self.span, name, SpanKind.INTERNAL, _attributes(attributes)))

    def attempt(self, target: str, transport: str, b_call_id: str = "", **attributes: Any) -> Attempt:
        """A CLIENT span for one INVITE to `target`; `b_call_id`: the callee leg's Call-ID (also set
        on the call's span, so `trunkline ladder` finds the call by either leg's Call-ID)."""
        attrs = {"server.address": target, "network.transport": transport.lower(), **_attributes(attributes)}
        if b_call_id:
            attrs["sip.b_call_id"] = b_call_id
            self.span.set_attribute("sip.b_call_id", b_call_id)
        return Attempt(self._recorder.start_child(self.span, "attempt", SpanKind.CLIENT, attrs))

    def transaction(self, method: str, leg: str) -> Step:
        """A span for an in-dialog transaction (re-INVITE, UPDATE, BYE, INFO) started on `leg`."""
        attrs: dict[str, Any] = {"sip.method": method, "sip.leg": leg}
        return Step(self._recorder.start_child(self.span, method, SpanKind.INTERNAL, attrs))

    def set(self, **attributes: Any) -> None:
        self.span.set_attributes(_attributes(attributes))

    def current(self) -> AbstractContextManager[None]:
        return Current(self.span)

    def finish(self, status: int, hangup_side: str = "", reason: str = "") -> None:
        """End the call's span: final status, which side hung up (a, b, edge) and why."""
        if not self.span.is_recording():
            return
        attrs: dict[str, Any] = {"sip.status_code": status}
        if hangup_side:
            attrs["trunkline.hangup_side"] = hangup_side
        if reason:
            attrs["trunkline.reason"] = reason
        self.span.set_attributes(attrs)
        if status >= 500 or (status >= 400 and status not in (401, 407, 486, 487, 600, 603)):
            self.span.set_status(Status(StatusCode.ERROR, reason or str(status)))
        self.span.end()


def start_call(
    call_id: str,
    trunk: str,
    direction: str,
    caller: str,
    callee: str,
    source: str,
    transport: str,
    traceparent: str | None = None,
    name: str = "call",
    tracestate: str | None = None,
) -> NoTrace:
    """The trace of a new call (NO_TRACE while tracing is off). `traceparent`: from the call's
    record when this edge adopts a call another edge started, or a trusted peer's (and `tracestate`),
    to continue that trace. `name`: the root span's (`call`; `REGISTER` for a registration).
    Attributes not known yet (the trunk before authentication) are left out; `set()` adds them."""
    if not telemetry.enabled():
        return NO_TRACE
    recorder = _recorder()
    parent = _parent(traceparent, tracestate) if traceparent else None
    # Sampled before any attribute is built (the OTEL_TRACES_SAMPLER samplers do not read them): an
    # unsampled call costs one sampling decision, and the rest of it nothing either.
    span = recorder.start_root(name, SpanKind.SERVER, {}, parent)
    if span is None:
        return NO_TRACE
    identity = {
        "sip.call_id": call_id,
        "trunkline.trunk": trunk,
        "trunkline.direction": direction,
        "sip.caller": caller,
        "sip.callee": callee,
        "client.address": source,
        "network.transport": transport.lower(),
    }
    span.set_attributes({key: value for key, value in identity.items() if value})
    return CallTrace(span, recorder)


_cached: list[Recorder] = []


def _recorder() -> Recorder:
    """The edge's span recorder for the current tracer provider, made once per provider."""
    provider = telemetry.provider()
    if not _cached or _cached[0].provider is not provider:
        _cached[:] = [Recorder(provider, "trunkline.edge")]
    return _cached[0]


def _parent(traceparent: str, tracestate: str | None = None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator as W3C

    return W3C().extract({"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})})


_names: dict[str, str] = {}  # keyword -> attribute name; keywords are this code's own: a bounded set
_PLAIN = (str, bool, int, float)


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword names to span attributes: `auth_method` -> `trunkline.auth_method` unless dotted."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        name = _names.get(key)
        if name is None:
            name = _names[key] = key.replace("__", ".") if "__" in key else f"trunkline.{key}"
        out[name] = value if isinstance(value, _PLAIN) else str(value)
    return out
