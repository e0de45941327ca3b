"""A call as plain data, so that any edge can carry on a call another edge started.

The record holds what the B2BUA needs to go on with a call it did not set up: the trunk as it was when
the call began, both legs (address, transport, our tag, the dialog with its route set and CSeqs), the
caller's INVITE (to answer it when its edge died while it rang), the CDR so far, the session timer and
what the media plane needs. Records are JSON-safe dicts written to the StateStore.
"""

from __future__ import annotations

from typing import Any

from trunkline.core.models import Trunk
from trunkline.edge.cdr import Attempt, CallRecord, Direction, HungUp
from trunkline.sip.dialog import Dialog
from trunkline.sip.message import Request, parse_message

VERSION = 1  # bump when a field's meaning changes; an edge refuses records of another version


def _raw(message: Request) -> str:
    # SIP is bytes that are mostly UTF-8: keep any other byte through JSON (surrogateescape).
    return message.to_bytes().decode("utf-8", "surrogateescape")


def leg_to_record(addr: tuple[str, int], transport: str, tag: str, dialog: Dialog | None) -> dict[str, Any]:
    return {"addr": list(addr), "transport": transport, "tag": tag,
            "dialog": dialog.to_record() if dialog else None}  # fmt: skip


def leg_from_record(data: dict[str, Any]) -> tuple[tuple[str, int], str, Dialog | None, str]:
    """(address, transport, dialog, our tag): the fields of a b2bua.Leg in order."""
    host, port = data["addr"]
    dialog = Dialog.from_record(data["dialog"]) if data["dialog"] else None
    return (str(host), int(port)), str(data["transport"]), dialog, str(data["tag"])


def call_record_to_data(record: CallRecord) -> dict[str, Any]:
    return {
        "call_id": record.call_id, "trunk": record.trunk, "direction": record.direction.value,
        "caller": record.caller, "callee": record.callee, "setup": record.setup, "answer": record.answer,
        "status": record.status, "attempts": [[a.target, a.status] for a in record.attempts],
        "trace_id": record.trace_id, "traceparent": record.traceparent, "emergency": record.emergency,
        # Beside "attempts", not in it: an edge of the previous release still reads these records.
        "attempt_gateways": [a.gateway for a in record.attempts],
        "carrier": record.carrier, "gateway": record.gateway,
    }  # fmt: skip


def call_record_from_data(data: dict[str, Any]) -> CallRecord:
    gateways = data.get("attempt_gateways")
    gateways = gateways if isinstance(gateways, list) else []
    return CallRecord(
        data["call_id"], data["trunk"], Direction(data["direction"]), data["caller"], data["callee"],
        data["setup"], data["answer"], None, data["status"], HungUp.NOBODY,
        [Attempt(target, status, _text(gateways[n] if n < len(gateways) else None, 256))
         for n, (target, status) in enumerate(data["attempts"])], "",
        _short(data.get("trace_id")), _short(data.get("traceparent")), data.get("emergency") is True,
        _text(data.get("carrier"), 253), _text(data.get("gateway"), 256),
    )  # fmt: skip


def _text(value: Any, limit: int) -> str | None:
    """A carrier or gateway from a record (absent in an older edge's record; bounded like the CDR)."""
    return value if isinstance(value, str) and len(value) <= limit else None


def _short(value: Any) -> str | None:
    """A trace id or traceparent from a record (bounded: the record is another edge's word)."""
    return value if isinstance(value, str) and len(value) <= 64 else None


# Trunks are replaced, never changed in place, when the configuration changes: a trunk's dump is made
# once, not at every save of each of its calls. Keyed by id() with the trunk kept alive beside it.
_TRUNK_DATA: dict[int, tuple[Trunk, dict[str, Any]]] = {}


def trunk_to_data(trunk: Trunk) -> dict[str, Any]:
    """The trunk as JSON-ready data (shared between calls: do not modify it)."""
    cached = _TRUNK_DATA.get(id(trunk))
    if cached is not None and cached[0] is trunk:
        return cached[1]
    if len(_TRUNK_DATA) >= 4096:  # configurations come and go: start afresh now and then
        _TRUNK_DATA.clear()
    data = trunk.model_dump(mode="json", by_alias=True, exclude_none=True)
    _TRUNK_DATA[id(trunk)] = (trunk, data)
    return data


def trunk_from_data(data: dict[str, Any]) -> Trunk:
    return Trunk.model_validate(data)


def invite_to_data(invite: Request) -> str:
    return _raw(invite)


def invite_from_data(text: str) -> Request:
    message = parse_message(text.encode("utf-8", "surrogateescape"))
    if not isinstance(message, Request):
        raise ValueError("the stored INVITE is not a request")
    return message
