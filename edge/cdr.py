"""Call detail records: one JSON line per call, whatever way it ended (written only by the edge whose
fenced end of the call succeeded: edge/ending.py).

A sink is a file path (appended to, line-buffered, so a crash loses at most the line being written),
`-` for standard output, or None to keep no records.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO

from trunkline.core.cdr import (
    Cdr,
    CdrAttempt,
    CdrSettings,
    HangupSide,
    MediaFigures,
    at,
    billable_seconds,
    duration_seconds,
)
from trunkline.core.cdr import Direction as CdrDirection


class Direction(StrEnum):
    INBOUND = "inbound"  # carrier -> DID -> trunk's PBX
    OUTBOUND = "outbound"  # trunk's PBX -> carrier


class HungUp(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    EDGE = "edge"  # a limit, a timeout, a shutdown, a failure on our side
    NOBODY = "nobody"  # never answered: the final status tells why


@dataclass
class Attempt:
    target: str
    status: int | None = None  # None: no answer (timeout, transport error)
    gateway: str | None = None  # the address the INVITE went to ("host:port"), the target resolved


@dataclass
class CallRecord:
    call_id: str  # the caller's Call-ID
    trunk: str
    direction: Direction
    caller: str | None
    callee: str
    setup: float  # epoch seconds
    answer: float | None = None
    end: float | None = None
    status: int | None = None  # the final status the caller got
    hung_up: HungUp = HungUp.NOBODY
    attempts: list[Attempt] = field(default_factory=list)
    reason: str = ""
    trace_id: str | None = None  # the call's trace (None: not traced), so a CDR leads to it
    traceparent: str | None = None  # the call's span: an edge adopting the call continues under it
    emergency: bool = False  # dialled an emergency number: admitted past every limit (docs/emergency.md)
    # The carrier's side of the call (namespace/name, host:port): outbound, the carrier gateway that
    # answered; inbound, the carrier and address the INVITE came from. None: no carrier involved.
    carrier: str | None = None
    gateway: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("setup", "answer", "end"):
            value = data[key]
            data[key] = (
                datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds") if value else None
            )
        data["duration"] = round(self.end - self.answer, 3) if self.end and self.answer else 0.0
        return json.dumps(data, separators=(",", ":"))


class CdrSink:
    """Where the embedded default writes JSON lines, and what every CDR says of where the edge runs
    (`settings`: installation, namespace)."""

    def __init__(self, target: str | None, settings: CdrSettings | None = None):
        self.settings = settings or CdrSettings()
        self._out: IO[str] | None
        if target is None:
            self._out = None
        elif target == "-":
            self._out = sys.stdout
        else:
            self._out = open(target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as we do
        self.written = 0

    def write(self, record: CallRecord) -> None:
        if self._out is not None:
            self._out.write(record.to_json() + "\n")
        self.written += 1

    def close(self) -> None:
        if self._out is not None and self._out is not sys.stdout:
            self._out.close()


def to_cdr(
    record: CallRecord,
    settings: CdrSettings,
    *,
    trunk: str | None = None,
    source: str = "",
    transport: str = "udp",
    ring: float | None = None,
    q850_cause: int | None = None,
    codec: str | None = None,
    relay: str | None = None,
    media: MediaFigures | None = None,
    trace_id: str | None = None,
) -> Cdr:
    """The billing record (core/cdr.py) of an ended call, for `StateStore.end_call_with_cdr`. Values a
    peer chose (numbers, statuses, causes) are bounded here so that a hostile one cannot fail the end.
    `trunk`: the trunk as the store keys it (namespace/name), when the record holds only its name."""
    end = record.end if record.end is not None else record.setup
    return Cdr(
        call_id=record.call_id[:512], installation=settings.installation, namespace=settings.namespace,
        trunk=(trunk or record.trunk)[:512], carrier=_bounded(record.carrier, 253),
        gateway=_bounded(record.gateway, 256),
        direction=CdrDirection(record.direction.value), caller=record.caller[:512] if record.caller else None,
        callee=record.callee[:512], source_address=source[:64], source_transport=transport[:8],
        invite_at=at(record.setup), ring_at=at(ring) if ring else None,
        answer_at=at(record.answer) if record.answer else None, end_at=at(end),
        duration_seconds=min(duration_seconds(record.setup, end), _MAX_SECONDS),
        billable_seconds=min(billable_seconds(record.answer, end), _MAX_SECONDS),
        final_status=_status(record.status),
        q850_cause=q850_cause if q850_cause is not None and 0 <= q850_cause <= 127 else None,
        hangup_side=HangupSide(record.hung_up.value), hangup_reason=record.reason[:256], codec=codec,
        relay=relay, media=media, trace_id=trace_id or record.trace_id,
        emergency=record.emergency,
        attempts=[CdrAttempt(target=a.target[:512], status=_status(a.status),
                             gateway=_bounded(a.gateway, 256)) for a in record.attempts[:64]],
    )  # fmt: skip


_MAX_SECONDS = 2**31 - 1  # the record's bound (a PostgreSQL integer)


def _bounded(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


def _status(status: int | None) -> int | None:
    return status if status is not None and 100 <= status <= 699 else None
