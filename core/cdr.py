"""The call detail record: what a trunking provider bills from, one per call (docs/cdr.md).

The edge that ends a call builds one `Cdr` and writes it, in the same atomic step as the call's end,
into the store's CDR stream (`StateStore.end_call_with_cdr`); the `trunkline cdr` exporter delivers
it to the sinks. Its `id` (a UUID made when the call began) is what every sink deduplicates by.
The enums carry the same values as edge/cdr.py's, so the edge's CallRecord maps onto it field by field.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, model_validator


def _clean(value: Any) -> Any:
    """Strings as every sink takes them: no NUL (PostgreSQL text and jsonb refuse it), valid UTF-8
    (SIP values kept through surrogateescape would fail JSON encoding)."""
    if type(value) is str:
        if value.isascii():  # the usual case (no surrogate to replace): one C-level check
            return value.replace("\x00", "") if "\x00" in value else value
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, str):  # a str subclass (an enum's value)
        return _clean(str(value))
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


MAX_CDR_BYTES = 64 * 1024  # a record larger than this is refused by the exporter
DEFAULT_STREAM = "trunkline:cdr"


@dataclass(frozen=True)
class CdrSettings:
    """What an edge puts in every CDR about where it runs, and where CDRs go."""

    installation: str = ""
    namespace: str = ""
    stream: str | None = None  # the store's CDR stream; None: the edge writes JSON lines itself

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CdrSettings:
        """As the operator's runtime ConfigMap gives them: TRUNKLINE_INSTALLATION, TRUNKLINE_NAMESPACE,
        TRUNKLINE_CDR_STREAM (set when the installation runs a CDR exporter)."""
        return cls(env.get("TRUNKLINE_INSTALLATION", ""), env.get("TRUNKLINE_NAMESPACE", ""),
                   env.get("TRUNKLINE_CDR_STREAM") or None)  # fmt: skip


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Times are RFC 3339 in UTC with milliseconds ("2026-12-07T02:48:19.123Z").
Time = Annotated[datetime, PlainSerializer(_rfc3339, return_type=str)]


class Direction(StrEnum):
    INBOUND = "inbound"  # carrier -> DID -> trunk's PBX
    OUTBOUND = "outbound"  # trunk's PBX -> carrier


class HangupSide(StrEnum):
    CALLER = "caller"
    CALLEE = "callee"
    EDGE = "edge"  # a limit, a timeout, a shutdown, a failure on our side
    NOBODY = "nobody"  # never answered: the final status tells why


class CdrAttempt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(max_length=512)  # the URI or gateway tried
    status: int | None = Field(default=None, ge=100, le=699)  # None: no answer (timeout, transport)
    gateway: str | None = Field(default=None, max_length=256)


class MediaFigures(BaseModel):
    model_config = ConfigDict(extra="forbid")

    packets_in: int = Field(default=0, ge=0)  # RTP packets relayed from the caller's side
    packets_out: int = Field(default=0, ge=0)  # RTP packets relayed from the callee's side
    packets_lost: int = Field(default=0, ge=0)  # sequence gaps seen by the relay
    bytes_relayed: int = Field(default=0, ge=0)


class Cdr(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    call_id: str = Field(max_length=512)  # the caller's Call-ID
    installation: str = Field(default="", max_length=253)
    namespace: str = Field(default="", max_length=253)
    trunk: str = Field(max_length=512)  # as the edge keys it: namespace/name
    carrier: str | None = Field(default=None, max_length=253)
    gateway: str | None = Field(default=None, max_length=256)
    direction: Direction
    caller: str | None = Field(default=None, max_length=512)
    callee: str = Field(max_length=512)
    source_address: str = Field(default="", max_length=64)  # "203.0.113.9:5060"
    source_transport: str = Field(default="udp", max_length=8)
    invite_at: Time
    ring_at: Time | None = None
    answer_at: Time | None = None
    end_at: Time
    # Bounded to what the PostgreSQL columns hold: a bad clock must not make a row no sink can store.
    duration_seconds: float = Field(ge=0, le=2**31 - 1)  # invite -> end
    billable_seconds: int = Field(ge=0, le=2**31 - 1)  # answer -> end, rounded up; 0 when never answered
    final_status: int | None = Field(default=None, ge=100, le=699)  # what the caller got
    q850_cause: int | None = Field(default=None, ge=0, le=127)  # from a Reason: Q.850 header
    hangup_side: HangupSide = HangupSide.NOBODY
    hangup_reason: str = Field(default="", max_length=256)
    attempts: list[CdrAttempt] = Field(default_factory=list, max_length=64)
    codec: str | None = Field(default=None, max_length=64)
    relay: str | None = Field(default=None, max_length=256)  # the media relay that carried the call
    media: MediaFigures | None = None
    trace_id: str | None = Field(default=None, max_length=64)
    emergency: bool = False  # an emergency number was dialled (docs/emergency.md)

    @model_validator(mode="before")
    @classmethod
    def _clean_strings(cls, data: Any) -> Any:
        return _clean(data)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> Cdr:
        if len(text) > MAX_CDR_BYTES:
            raise ValueError(f"a CDR of {len(text)} bytes is over the {MAX_CDR_BYTES}-byte limit")
        return cls.model_validate_json(text)


def at(epoch_seconds: float) -> datetime:
    """An edge's time.time() value as an aware UTC datetime (clamped to years 1970-9999)."""
    return datetime.fromtimestamp(min(max(epoch_seconds, 0.0), 253_402_300_799.0), UTC)


def duration_seconds(invite: float, end: float) -> float:
    return round(max(0.0, end - invite), 3)


def billable_seconds(answer: float | None, end: float) -> int:
    """Whole seconds from answer to end, rounded up (a 0.2 s answered call bills 1 s); 0 unanswered."""
    if answer is None or end <= answer:
        return 0
    return math.ceil(round(end - answer, 3))
