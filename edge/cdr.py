"""Call detail records: one JSON line per call, whatever way it ended.

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
    def __init__(self, target: str | None):
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
