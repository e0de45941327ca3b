"""The `sip.message` span events of a call's trace (edge/tracing.py): one per SIP message sent or
received on either leg, with method or status, leg, direction, size and peer; `trunkline ladder`
rebuilds the call's message sequence chart from them alone."""

from __future__ import annotations

from typing import Any

MESSAGE_EVENT = "sip.message"
LEGS = ("a", "b")
DIRECTIONS = ("received", "sent")


def add_message(span: Any, attributes: dict[str, Any]) -> None:
    """A `sip.message` event on `span`. Its attributes are ours and bounded (message_attributes), so
    the SDK span's `_add_event` takes them as they are: `add_event` would copy and check each into a
    BoundedAttributes, a third of what a traced call cost in spans (bench/call_trace.py)."""
    add = getattr(span, "_add_event", None)
    if add is None:  # not the SDK's span (a test double): the public way
        span.add_event(MESSAGE_EVENT, attributes)
        return
    if not _event_class:
        from opentelemetry.sdk.trace import Event

        _event_class.append(Event)
    add(_event_class[0](MESSAGE_EVENT, attributes))


_event_class: list[Any] = []  # the SDK's Event, imported once tracing is on


def message_attributes(leg: str, direction: str, first_line: str, size: int, peer: str) -> dict[str, Any]:
    """The event attributes of one SIP message from its first line (`INVITE sip:...` or
    `SIP/2.0 180 Ringing`); bounded: method and reason phrase are cut to 32 characters."""
    attrs: dict[str, Any] = {"sip.leg": leg, "sip.direction": direction, "sip.size": size}
    if first_line.startswith("SIP/2.0 "):
        code, _, reason = first_line[8:].partition(" ")
        attrs["sip.status_code"] = int(code) if code.isdigit() else 0
        attrs["sip.reason"] = reason[:32]
    else:
        attrs["sip.method"] = first_line.partition(" ")[0][:32]
    if peer:
        attrs["sip.peer"] = peer
    return attrs
