"""Finished spans to an OTLP ExportTraceServiceRequest's protobuf bytes, written directly (sans-I/O).

The OpenTelemetry exporters build a protobuf message object per span, event, attribute and value and
then serialize them: ~460 us of CPU per traced call (bench/call_trace.py's call), more than making the
spans. Here the wire format is written straight into one bytearray, and each attribute (key, value) pair is
encoded once and cached: a call's SIP message events repeat the same few pairs (`sip.leg=a`,
`sip.method=INVITE`, `sip.size=300`), so most attributes cost one dict lookup. The output parses to
the same message the SDK's `encode_spans` builds (tests/unit/test_otlp_encoding.py compares them).

Field numbers: opentelemetry/proto/{collector/trace,trace,resource,common}/v1/*.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.trace import StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from trunkline.core.lean_spans import LeanSpan, Message, message_attributes

# Span.flags (field 16): the SDK's encoder sets "has is_remote" on every span, "is remote" for a
# span whose parent came from another process.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_CACHE_LIMIT = 4096  # encoded pairs kept; each call's unique values (ids) churn it: cleared when full

_pair_cache: dict[tuple[int, str, type, Any], bytes] = {}  # -> the whole KeyValue field
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes | bytearray) -> bytes:
    """A length-delimited field: its tag byte (field number << 3 | 2), length, payload."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")  # a lone surrogate must not lose the batch


def _any_value(value: Any) -> bytes:
    """An AnyValue message's body."""
    if isinstance(value, str):
        return _field(0x0A, _text(value))
    if isinstance(value, bool):  # before int: bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement, 10 bytes if < 0
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, (tuple, list)):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(item)) for item in value))
    return _field(0x0A, _text(str(value)))


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue message's body: key (1) and value (2)."""
    return _field(0x0A, _text(key)) + _field(0x12, _any_value(value))


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Every attribute as a repeated KeyValue field numbered by `tag` (the enclosing message's)."""
    if not attributes:
        return b""
    cache = _pair_cache
    fields = []
    for key, value in attributes.items():
        try:
            pair = (tag, key, type(value), value)  # the type: True == 1 == 1.0 as keys
            field = cache.get(pair)
        except TypeError:  # an unhashable value (a list): encode it every time
            pair, field = None, None
        if field is None:
            field = _field(tag, _key_value(key, value))
            if pair is not None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[pair] = field
        fields.append(field)
    return b"".join(fields)


def _span(span: Any) -> bytes:
    """One Span message's body from an SDK ReadableSpan."""
    context = span.context
    out = bytearray(b"\x0a\x10")
    out += context.trace_id.to_bytes(16, "big")
    out += b"\x12\x08"
    out += context.span_id.to_bytes(8, "big")
    state = context.trace_state
    if state:
        out += _field(0x1A, _text(state.to_header()))
    parent = span.parent
    if parent is not None:
        out += b"\x22\x08"
        out += parent.span_id.to_bytes(8, "big")
    out += _field(0x2A, _text(span.name))
    out += b"\x30" + _varint(span.kind.value + 1)  # SDK INTERNAL=0..., OTLP UNSPECIFIED=0, INTERNAL=1
    out += b"\x39" + _pack_fixed64(span.start_time or 0)
    out += b"\x41" + _pack_fixed64(span.end_time or 0)
    out += _attributes(0x4A, span.attributes)
    if span.dropped_attributes:
        out += b"\x50" + _varint(span.dropped_attributes)
    for event in span.events:
        body = b"\x09" + _pack_fixed64(event.timestamp) + _field(0x12, _text(event.name))
        body += _attributes(0x1A, event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        out += _field(0x5A, body)
    if span.dropped_events:
        out += b"\x60" + _varint(span.dropped_events)
    for link in span.links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _attributes(0x22, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += b"\x35" + _pack_fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if link.context.is_remote else 0))
        out += _field(0x6A, body)
    if span.dropped_links:
        out += b"\x70" + _varint(span.dropped_links)
    status = span.status  # always present, empty when unset, as the SDK's encoder writes it
    body = _field(0x12, _text(status.description)) if status.description else b""
    if status.status_code.value:
        body += b"\x18" + _varint(status.status_code.value)
    out += _field(0x7A, body)
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    out += b"\x85\x01" + _pack_fixed32(flags)  # field 16, fixed32: a two-byte tag
    return bytes(out)


# A stored SIP message event -> its Event field around its timestamp: (tag, length and timestamp tag),
# then (name and attribute fields), and the whole field's length; the event is `head + time + rest`.
_message_cache: dict[Message, tuple[bytes, bytes, int]] = {}
_head_cache: dict[tuple[str, int], bytes] = {}  # (name, kind) -> the span's name and kind fields
_pack_ids = struct.Struct(">BBQQBBQ").pack  # trace id (field 1) and span id (field 2): bytes, big-endian
_pack_parent = struct.Struct(">BBQ").pack  # parent span id (field 4)
_pack_times = struct.Struct("<BQBQ").pack  # start (field 7) and end (field 8), fixed64 both
_LOW64 = (1 << 64) - 1
_UNSET_STATUS = b"\x7a\x00"  # an empty Status
_UNSET_CODE = StatusCode.UNSET
_NOTHING = object()  # a scope no span has
_LOCAL_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_REMOTE_FLAGS = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


def _message_event(message: Message) -> tuple[bytes, bytes, int]:
    rest = _field(0x12, b"sip.message") + _attributes(0x1A, message_attributes(message))
    head = b"\x5a" + _varint(9 + len(rest)) + b"\x09"
    return head, rest, len(head) + 8 + len(rest)


def _lean_span(span: LeanSpan, parts: list[bytes | bytearray]) -> int:
    """One Span message's body from a LeanSpan, as parts appended to `parts`; returns its length.
    `_span`'s output, with its SIP message events each one cache lookup (their attributes repeat:
    legs, methods, statuses, sizes, a few peers). The SpanContext is read as the tuple it is (its
    properties are Python calls)."""
    if span.other_events:  # events of other kinds, interleaved in time: the general path
        body = _span(span)
        parts.append(body)
        return len(body)
    append = parts.append
    context = span.context  # (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)
    trace_id = context[0]
    append(_pack_ids(0x0A, 0x10, trace_id >> 64, trace_id & _LOW64, 0x12, 0x08, context[1]))
    length = 28
    state = context[4]
    if state is not DEFAULT_TRACE_STATE and state:  # its emptiness is a Python-level __len__
        field = _field(0x1A, _text(state.to_header()))
        append(field)
        length += len(field)
    parent = span.parent
    if parent is not None:
        append(_pack_parent(0x22, 0x08, parent[1]))
        length += 10
    kind = span.kind._value_  # not `.value`: a Python-level descriptor
    head = _head_cache.get((span.name, kind))
    if head is None:
        head = _field(0x2A, _text(span.name)) + b"\x30" + _varint(kind + 1)
        if len(_head_cache) < _CACHE_LIMIT:  # names are ours (methods are cut to 32 characters)
            _head_cache[(span.name, kind)] = head
    append(head)
    append(_pack_times(0x39, span.start_time, 0x41, span.end_time or 0))
    length += len(head) + 18
    if span.attributes:
        field = _attributes(0x4A, span.attributes)
        append(field)
        length += len(field)
    if span.dropped_attributes:
        field = b"\x50" + _varint(span.dropped_attributes)
        append(field)
        length += len(field)
    cache = _message_cache
    for at, message in span.messages:
        event = cache.get(message)
        if event is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            event = cache[message] = _message_event(message)
        append(event[0])
        append(_pack_fixed64(at))
        append(event[1])
        length += event[2]
    if span.dropped_events:
        field = b"\x60" + _varint(span.dropped_events)
        append(field)
        length += len(field)
    status = span._status
    if status is None or not (status.status_code is not _UNSET_CODE or status.description):
        field = _UNSET_STATUS
    else:
        body = _field(0x12, _text(status.description)) if status.description else b""
        if status.status_code is not _UNSET_CODE:
            body += b"\x18" + _varint(status.status_code.value)
        field = _field(0x7A, body)
    append(field)
    append(_REMOTE_FLAGS if parent is not None and parent[2] else _LOCAL_FLAGS)
    return length + len(field) + 6


def _scope(scope: Any) -> bytes:
    """An InstrumentationScope message's body (name, version, attributes)."""
    body = _field(0x0A, _text(scope.name)) if scope.name else b""
    if scope.version:
        body += _field(0x12, _text(scope.version))
    return body + _attributes(0x1A, scope.attributes)


def _tag_length(tag: int, length: int) -> bytes:
    """A length-delimited field's tag and length, its payload written after it."""
    return bytes((tag, length)) if length < 0x80 else bytes((tag,)) + _varint(length)


def encode_spans(spans: Iterable[Any]) -> bytes:
    """ExportTraceServiceRequest bytes: spans grouped by resource, then by instrumentation scope.
    Every level is written as parts of one list, joined once at the end: an enclosing message's
    length is the sum of its parts' (a slot for its tag and length is kept, filled once known), so
    no span's bytes are copied into one buffer and then again into the one around it."""
    # Resources by identity: a Resource hashes by JSON-dumping its attributes, and one provider's
    # spans share one Resource object (equal resources in two groups are still a valid request).
    # Scopes by equality, as the SDK's encoder groups them; a run of spans of one scope (a recorder's
    # spans) is hashed once.
    grouped: dict[int, tuple[Any, dict[Any, list[Any]]]] = {}
    last_scope: Any = _NOTHING
    last_group: Any = None
    members: list[Any] = []
    for span in spans:
        if type(span) is LeanSpan:
            recorder = span._recorder
            resource, scope = recorder.resource, recorder.scope
        else:
            resource, scope = span.resource, span.instrumentation_scope
        group = grouped.get(id(resource))
        if group is None:
            group = grouped[id(resource)] = (resource, {})
        if scope is not last_scope or group is not last_group:
            members = group[1].setdefault(scope, [])
            last_scope, last_group = scope, group
        members.append(span)
    parts: list[bytes | bytearray] = []
    for resource, scopes in grouped.values():
        resource_slot = len(parts)
        parts.append(b"")
        field = _field(0x0A, _attributes(0x0A, resource.attributes))
        parts.append(field)
        resource_length = len(field)
        for scope, members in scopes.items():
            scope_slot = len(parts)
            parts.append(b"")
            scope_length = 0
            if scope is not None:
                field = _field(0x0A, _scope(scope))
                parts.append(field)
                scope_length += len(field)
            for span in members:
                slot = len(parts)
                parts.append(b"")
                if type(span) is LeanSpan:
                    length = _lean_span(span, parts)
                else:
                    body = _span(span)
                    parts.append(body)
                    length = len(body)
                parts[slot] = field = _tag_length(0x12, length)
                scope_length += len(field) + length
            if scope is not None and scope.schema_url:
                field = _field(0x1A, _text(scope.schema_url))
                parts.append(field)
                scope_length += len(field)
            parts[scope_slot] = field = _tag_length(0x12, scope_length)
            resource_length += len(field) + scope_length
        if resource.schema_url:
            field = _field(0x1A, _text(resource.schema_url))
            parts.append(field)
            resource_length += len(field)
        parts[resource_slot] = _tag_length(0x0A, resource_length)
    return b"".join(parts)


def clear_cache() -> None:
    """Forget the cached attribute encodings (tests)."""
    _pair_cache.clear()
    _message_cache.clear()
    _head_cache.clear()
