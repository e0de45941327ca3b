"""The `sip.message` span events of a call's trace (edge/tracing.py): one per SIP message sent or
received on either leg, with method or status, leg, direction, size and peer; `trunkline ladder`
rebuilds the call's message sequence chart from them alone. Stored on the span as one plain tuple
(core/lean_spans.Message) and encoded from a cache keyed by it (core/otlp_encoding.py)."""

from __future__ import annotations

from typing import Any

from trunkline.core.lean_spans import MESSAGE_EVENT, Message
from trunkline.core.lean_spans import message_attributes as stored_attributes
from trunkline.sip.message import Message as SipMessage
from trunkline.sip.message import Response

__all__ = ["DIRECTIONS", "LEGS", "MESSAGE_EVENT", "message", "message_attributes", "peer", "sip_event"]

LEGS = ("a", "b")
DIRECTIONS = ("received", "sent")


def message(leg: str, direction: str, first_line: str, size: int, peer: str) -> Message:
    """One SIP message's event from its first line (`INVITE sip:...`, or only the method, or
    `SIP/2.0 180 Ringing`); bounded: method and reason phrase are cut to 32 characters."""
    if first_line.startswith("SIP/2.0 "):
        code, _, reason = first_line[8:].partition(" ")
        return (leg, direction, size, True, int(code) if code.isdigit() else 0, reason[:32], peer)
    return (leg, direction, size, False, 0, first_line.partition(" ")[0][:32], peer)


def sip_event(leg: str, direction: str, sip: SipMessage, peer: str) -> Message:
    """`message()`'s event straight from a parsed or built message (no first line to split): a
    request's method, a response's status and reason, its size on the wire."""
    if type(sip) is Response:
        return (leg, direction, sip.last_wire_size(), True, sip.status, sip.reason[:32], peer)
    return (leg, direction, sip.last_wire_size(), False, 0, sip.method[:32], peer)  # type: ignore[attr-defined]


def message_attributes(leg: str, direction: str, first_line: str, size: int, peer: str) -> dict[str, Any]:
    """The event attributes of one SIP message, as the trace carries them."""
    return stored_attributes(message(leg, direction, first_line, size, peer))


_PEERS_KEPT = 1024  # formatted peer addresses cached: a traced edge talks to a few PBXs and carriers
_peers: dict[tuple[str, int], str] = {}


def peer(addr: tuple[str, int] | None) -> str:
    """`host:port` of a traced message's peer, formatted once per address (cleared when full)."""
    if not addr:
        return ""
    text = _peers.get(addr)
    if text is None:
        if len(_peers) >= _PEERS_KEPT:
            _peers.clear()
        text = _peers[addr] = f"{addr[0]}:{addr[1]}"
    return text
