"""A lean span recorder for the edge's call spans: OpenTelemetry API spans without the SDK's span objects.

Why hand-written (bench/README-edge.md, "Tracing column"): at ratio 1.0 the SDK's span objects were
most of what tracing cost the edge per call: `Tracer.start_span` (a sampler call, SpanContext,
BoundedAttributes copying and checking every attribute, a lock per span, processor fan-out), then
`end()` freezing a ReadableSpan. A call has ~6 spans and ~12 `sip.message` events; a `LeanSpan`
keeps name, ids, times, attributes (a plain dict of our own bounded values) and events (plain
tuples) in slots, and `core/otlp_encoding.py` writes it straight to protobuf bytes, each message
event's attributes from one cache lookup.

What stays the SDK's: configuration (OTEL_* environment, sampler, id generator, resource, span
limits), the span processors (the batch processor's bounded queue and export thread, the drop
count) and the exporters. A LeanSpan is an API `Span` (context propagation, `get_current_span`,
log correlation and gRPC metadata injection keep working) and reads like a `ReadableSpan` (the
processors and in-memory test exporters take it as one). Only the call's root span consults the
sampler; its children follow it (what the default parent-based sampler decides for them).
Processors' `on_start` is not called (the batch and simple processors do nothing there).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace import propagation as trace_propagation
from opentelemetry.util import types

if TYPE_CHECKING:  # the SDK is imported once tracing is on (core/telemetry.py), not before
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, TracerProvider
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

MESSAGE_EVENT = "sip.message"
_NOT_REMOTE = False

# A SIP message event, as stored: (leg, direction, size, is_response, status, method or reason, peer).
Message = tuple[str, str, int, bool, int, str, str]


def message_attributes(message: Message) -> dict[str, Any]:
    """A stored message event's attributes, as `trunkline ladder` reads them (and in this order:
    the encoder's output is compared to the SDK's)."""
    leg, direction, size, is_response, status, text, peer = message
    attrs: dict[str, Any] = {"sip.leg": leg, "sip.direction": direction, "sip.size": size}
    if is_response:
        attrs["sip.status_code"] = status
        attrs["sip.reason"] = text
    else:
        attrs["sip.method"] = text
    if peer:
        attrs["sip.peer"] = peer
    return attrs


class Recorder:
    """What a provider's call spans share: where they go when ended, resource, scope, limits."""

    __slots__ = (
        "max_attributes",
        "max_events",
        "processor",
        "provider",
        "random_ids",
        "resource",
        "scope",
        "sink",
        "span_id",
    )

    def __init__(self, provider: TracerProvider, scope: str) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.provider = provider
        self.processor: Any = provider._active_span_processor  # the processors' fan-out
        self.resource: Resource = provider.resource
        self.scope = InstrumentationScope(scope)
        limits = provider._span_limits  # OTEL_SPAN_*_LIMIT, as the SDK read them
        self.max_events: int = limits.max_events if limits.max_events is not None else 1 << 31
        self.max_attributes: int = (
            limits.max_span_attributes if limits.max_span_attributes is not None else 1 << 31
        )
        self.random_ids = bool(provider.id_generator.is_trace_id_random())
        self.span_id = provider.id_generator.generate_span_id
        # Where an ended span goes: the processors' fan-out, or straight into the one batch queue
        # when that is all there is (what the fan-out, BatchSpanProcessor.on_end and emit would do).
        processors: tuple[Any, ...] = getattr(self.processor, "_span_processors", ())
        one: Any = processors[0] if len(processors) == 1 else None
        self.sink: Any = one.enqueue if getattr(one, "fast", False) else self.processor.on_end

    def start_root(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        parent: Context | None = None,
    ) -> LeanSpan | None:
        """A call's root span (continuing `parent`'s trace when given), or None when not sampled."""
        provider = self.provider
        parent_context = trace.get_current_span(parent).get_span_context() if parent is not None else None
        if parent_context is not None and parent_context.is_valid:
            trace_id = parent_context.trace_id
            random = bool(parent_context.trace_flags & TraceFlags.RANDOM_TRACE_ID)
        else:
            parent_context, trace_id, random = (
                None,
                provider.id_generator.generate_trace_id(),
                self.random_ids,
            )
        result = provider.sampler.should_sample(parent, trace_id, name, kind, attributes)
        if not result.decision.is_sampled():  # type: ignore[no-untyped-call]
            return None
        if result.attributes:
            attributes.update(result.attributes)
        flags = TraceFlags(TraceFlags.SAMPLED | (TraceFlags.RANDOM_TRACE_ID if random else 0))
        context = SpanContext(trace_id, self.span_id(), _NOT_REMOTE, flags, result.trace_state)
        return LeanSpan(self, name, context, parent_context, kind, attributes)

    def start_child(
        self, parent: LeanSpan, name: str, kind: SpanKind, attributes: dict[str, Any]
    ) -> LeanSpan:
        """A child of a recorded span: same trace, same sampling decision."""
        up = parent.context
        span_id = self.span_id()
        # SpanContext's own __new__ checks both ids' ranges (a third of a child span's cost): the
        # trace id is the parent's, valid; the tuple is what __new__ builds (test_lean_spans checks).
        # The parent's fields by index: SpanContext's properties are Python calls.
        fields = (up[0], span_id, _NOT_REMOTE, up[3], up[4], 0 < span_id < 1 << 64)
        return LeanSpan(self, name, tuple.__new__(SpanContext, fields), up, kind, attributes)


class LeanSpan(trace.Span):
    """One recorded span: slots and plain values; readable as an SDK ReadableSpan once ended."""

    __slots__ = (
        "_ids",
        "_recorder",
        "_room",
        "_status",
        "attributes",
        "context",
        "dropped_attributes",
        "dropped_events",
        "end_time",
        "kind",
        "messages",
        "name",
        "other_events",
        "parent",
        "start_time",
    )

    def __init__(
        self,
        recorder: Recorder,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        self._recorder = recorder
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.start_time = time.time_ns()
        self.end_time: int | None = None
        self.attributes = attributes  # ours: keys and values already bounded and typed (edge/tracing.py)
        self.messages: list[tuple[int, Message]] = []  # (time, message): `sip.message` events
        self.other_events: list[Event] = []  # any other add_event (record_exception, instrumentation)
        self.dropped_events = 0
        self.dropped_attributes = 0
        self._status: Status | None = None
        self._room = recorder.max_events  # events it may still take (span limits)
        self._ids: tuple[str, str] | None = None

    # -- recording (the API) -------------------------------------------------------------------------
    def message(self, message: Message) -> None:
        """A `sip.message` event now."""
        if self.end_time is None:
            if self._room > 0:
                self._room -= 1
                self.messages.append((time.time_ns(), message))
            else:
                self.dropped_events += 1

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self.end_time is None:
            if key in self.attributes or len(self.attributes) < self._recorder.max_attributes:
                self.attributes[key] = value
            else:
                self.dropped_attributes += 1

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self.end_time is not None:
            return
        mine, room = self.attributes, self._recorder.max_attributes
        for key, value in attributes.items():  # set_attribute's, inlined: a few per call and step
            if key in mine or len(mine) < room:
                mine[key] = value
            else:
                self.dropped_attributes += 1

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self.end_time is not None:
            return
        if self._room <= 0:
            self.dropped_events += 1
            return
        from opentelemetry.sdk.trace import Event

        self._room -= 1
        self.other_events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def is_recording(self) -> bool:
        return self.end_time is None

    def get_span_context(self) -> SpanContext:
        return self.context

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is None:
            self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        attrs: dict[str, Any] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception)[:256],
            "exception.escaped": str(escaped),
        }
        attrs.update(attributes or {})
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or time.time_ns()
        self._recorder.sink(self)

    def hex_ids(self) -> tuple[str, str]:
        """Trace and span id in hex, as log lines carry them (formatted once per span)."""
        if self._ids is None:
            self._ids = (format(self.context.trace_id, "032x"), format(self.context.span_id, "016x"))
        return self._ids

    # -- reading (as a ReadableSpan: processors, exporters, tests) ---------------------------------------
    @property
    def status(self) -> Status:
        return self._status if self._status is not None else _UNSET

    @property
    def events(self) -> Sequence[Event]:
        """Every event, in time order (built on demand: the encoder reads `messages` directly)."""
        from opentelemetry.sdk.trace import Event

        built = [Event(MESSAGE_EVENT, message_attributes(m), at) for at, m in self.messages]
        return sorted(built + self.other_events, key=lambda e: e.timestamp)

    @property
    def links(self) -> Sequence[Any]:
        return ()

    dropped_links = 0

    @property
    def resource(self) -> Resource:
        return self._recorder.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._recorder.scope

    def __repr__(self) -> str:
        return f"<LeanSpan {self.name} {self.context.span_id:016x}>"


_UNSET = Status(StatusCode.UNSET)


def _runtime_variable() -> ContextVar[Context] | None:
    """The ContextVar behind OpenTelemetry's current context, when the runtime context is the default
    one (OTEL_PYTHON_CONTEXT may name another: then the API's calls are used)."""
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    default = type(runtime) is ContextVarsRuntimeContext
    return variable if default and isinstance(variable, ContextVar) else None


_CONTEXT = _runtime_variable()
_SPAN_KEY: str = getattr(trace_propagation, "_SPAN_KEY", "")


def make_current(span: trace.Span) -> Any:
    """`span` is the current span from now on (what `attach(set_span_in_context(span))` does, with
    the context variable set directly: steps of a call do it ~8 times); a token for `restore`."""
    if _CONTEXT is None or not _SPAN_KEY:
        return otel_context.attach(trace.set_span_in_context(span))
    values = dict(_CONTEXT.get())  # a Context refuses item assignment: made from a copy
    values[_SPAN_KEY] = span
    return _CONTEXT.set(Context(values))


def restore(token: Any) -> None:
    """The current context as it was before `make_current` gave `token`."""
    if _CONTEXT is None or not _SPAN_KEY:
        otel_context.detach(token)
    else:
        _CONTEXT.reset(token)


class Current:
    """`span` is the current span inside (what `trace.use_span` does, without its exception
    handling: our callers end their spans themselves). A class, not a generator: one per step."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def __enter__(self) -> None:
        self._token = make_current(self._span)

    def __exit__(self, *exc: object) -> None:
        restore(self._token)
