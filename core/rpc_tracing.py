"""W3C trace context over gRPC: a client span per call that sends `traceparent` in the metadata, and
a server span per call that continues the caller's trace, so a relay's or control's spans sit under
the edge's call span in one trace.

Only installed while tracing is on (`client_interceptors()` / `server_interceptors()` return nothing
otherwise): tracing off, a gRPC call pays nothing. Only calls made inside a span are traced (a media
call under a call's span, not the relay's heartbeat every few seconds), and a server only continues
traces its caller sent: no root trace per heartbeat or health probe. Span names and attributes follow
the RPC semantic conventions (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from trunkline.core import telemetry

_tracer = trace.get_tracer("trunkline.rpc")


def _names(method: str | bytes) -> tuple[str, str, str]:
    """`/pkg.Service/Method` -> (span name `pkg.Service/Method`, service, method)."""
    text = method.decode() if isinstance(method, bytes) else method
    service, _, name = text.lstrip("/").rpartition("/")
    return text.lstrip("/"), service, name


def _attributes(method: str | bytes) -> dict[str, str]:
    _, service, name = _names(method)
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _in_span() -> bool:
    return bool(trace.get_current_span().get_span_context().is_valid)


def _with_traceparent(metadata: Any) -> list[tuple[str, str | bytes]]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    items: list[tuple[str, str | bytes]] = [(str(k), v) for k, v in (metadata or ())]
    items.extend(carrier.items())
    return items


def _client_span(method: str | bytes) -> Any:
    return _tracer.start_as_current_span(
        _names(method)[0], kind=SpanKind.CLIENT, attributes=_attributes(method)
    )


def _details(details: Any, metadata: list[tuple[str, str | bytes]]) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _ClientUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if not _in_span():
            return await continuation(details, request)
        name, _, _ = _names(details.method)
        with _tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=_attributes(details.method), record_exception=False
        ) as span:
            call = await continuation(_details(details, _with_traceparent(details.metadata)), request)
            try:
                await call  # the span lasts until the answer (the caller awaits the same call object)
            except grpc.aio.AioRpcError as exc:
                span.set_attribute("rpc.grpc.status_code", exc.code().value[0])
                span.set_status(Status(StatusCode.ERROR, exc.code().name))
            else:
                span.set_attribute("rpc.grpc.status_code", 0)
            return call


async def _opening(continuation: Any, details: Any, request: Any) -> Any:
    """A streaming call: a short CLIENT span marks its opening and hands its context on, rather than
    one open as long as the stream (an event watch lives as long as the relay)."""
    if not _in_span():
        return await continuation(details, request)
    name, _, _ = _names(details.method)
    with _tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=_attributes(details.method)):
        return await continuation(_details(details, _with_traceparent(details.metadata)), request)


class _ClientUnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await _opening(continuation, details, request)


class _ClientStreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await _opening(continuation, details, requests)


class _ClientStreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await _opening(continuation, details, requests)


def client_interceptors() -> list[Any]:
    """The interceptors a channel needs: none while tracing is off."""
    if not telemetry.enabled():
        return []
    return [_ClientUnary(), _ClientUnaryStream(), _ClientStreamUnary(), _ClientStreamStream()]


def _parent(metadata: Any) -> otel_context.Context:
    carrier: Mapping[str, str] = {
        str(k): v for k, v in (metadata or ()) if isinstance(v, str) and k in ("traceparent", "tracestate")
    }
    return propagate.extract(carrier)


class _Server(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        if handler is None or not any(k == "traceparent" for k, _ in details.invocation_metadata or ()):
            return handler
        name, _, _ = _names(details.method)
        attributes = _attributes(details.method)
        parent = _parent(details.invocation_metadata)

        def span() -> Any:
            return _tracer.start_as_current_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes, record_exception=False
            )

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with span() as current:
                    try:
                        return await inner_uu(request, context)
                    finally:
                        _end(current, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                with span():  # the stream's opening; its messages run outside the span (see client)
                    pass
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler  # client streams: none in our services


def _end(span: Any, context: grpc.aio.ServicerContext) -> None:
    code = context.code() if hasattr(context, "code") else None
    value = code.value[0] if isinstance(code, grpc.StatusCode) else 0
    span.set_attribute("rpc.grpc.status_code", value)
    if value:
        span.set_status(Status(StatusCode.ERROR, code.name if isinstance(code, grpc.StatusCode) else ""))


def server_interceptors() -> list[Any]:
    """The interceptors a server needs: none while tracing is off."""
    return [_Server()] if telemetry.enabled() else []


# -- commands on a long-lived stream (MediaRelay.Sessions): a span per command, not per stream ------
TRACEPARENT_MAX = 128  # a W3C traceparent is 55 characters; a longer one is not looked at


class CommandSpan:
    """The span of one command: `traceparent` to send with it (client), `status(code)` once answered.
    Without a span (tracing off, or no trace to continue) both do nothing."""

    __slots__ = ("span", "traceparent")

    def __init__(self, span: Any = None, traceparent: str = "") -> None:
        self.span = span
        self.traceparent = traceparent

    def status(self, code: int) -> None:
        if self.span is None:
            return
        self.span.set_attribute("rpc.grpc.status_code", code)
        if code:
            self.span.set_status(Status(StatusCode.ERROR, grpc_status_name(code)))


_UNTRACED = CommandSpan()


def grpc_status_name(code: int) -> str:
    return next((s.name for s in grpc.StatusCode if s.value[0] == code), str(code))


@contextmanager
def command_client_span(service: str, method: str) -> Iterator[CommandSpan]:
    """A CLIENT span for one command sent on a stream, when inside a trace; its traceparent goes
    in the command (the stream's metadata was sent once, under no call's trace)."""
    if not telemetry.enabled() or not _in_span():
        yield _UNTRACED
        return
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    with _tracer.start_as_current_span(
        f"{service}/{method}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield CommandSpan(span, carrier.get("traceparent", ""))


@contextmanager
def command_server_span(service: str, method: str, traceparent: str) -> Iterator[CommandSpan]:
    """A SERVER span for one command received on a stream, continuing the trace the command names."""
    if not traceparent or len(traceparent) > TRACEPARENT_MAX or not telemetry.enabled():
        yield _UNTRACED
        return
    parent = propagate.extract({"traceparent": traceparent})
    if not trace.get_current_span(parent).get_span_context().is_valid:
        yield _UNTRACED  # malformed: no root trace for it either
        return
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    with _tracer.start_as_current_span(
        f"{service}/{method}", context=parent, kind=SpanKind.SERVER, attributes=attributes,
        record_exception=False,
    ) as span:  # fmt: skip
        yield CommandSpan(span)
