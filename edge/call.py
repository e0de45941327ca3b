"""The call model (a call, its two legs) and what the edge asks of the media plane.

Shared by every room of the edge; imports nothing of the edge but the record and handover formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from trunkline.core.models import Trunk
from trunkline.core.state import CallState, trunk_key
from trunkline.edge.cdr import CallRecord, Direction
from trunkline.edge.handover import (
    VERSION,
    call_record_from_data,
    call_record_to_data,
    invite_from_data,
    invite_to_data,
    leg_from_record,
    leg_to_record,
    trunk_from_data,
    trunk_to_data,
)
from trunkline.edge.tracing import NO_TRACE, NoTrace
from trunkline.sip.dialog import Dialog
from trunkline.sip.message import Request
from trunkline.sip.stack import TimerHandle
from trunkline.sip.transaction import Addr

if TYPE_CHECKING:
    from trunkline.edge.carrier_auth import LegAuth


class MediaError(Exception):
    """The media plane cannot carry this session: answer the offer with `status` (488, 503)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class MediaPlane(Protocol):
    """What the edge asks of the media plane: rewrite each SDP coming from leg `from_leg` ("a", the
    caller, or "b") into what the other leg must see, and release the call's media at the end."""

    async def rewrite(self, call: Call, sdp: bytes, from_leg: str) -> bytes: ...

    async def release(self, call: Call) -> None: ...

    def snapshot(self, call: Call) -> dict[str, Any]:
        """What another edge needs to go on with this call's media (JSON-safe)."""
        ...

    def adopt(self, call: Call, snapshot: dict[str, Any]) -> None:
        """Go on with the media of a call another edge began, from its `snapshot`."""
        ...


class PassThrough:
    """SDP unchanged: media flows between the parties directly (no relay configured)."""

    async def rewrite(self, call: Call, sdp: bytes, from_leg: str) -> bytes:
        return sdp

    async def release(self, call: Call) -> None:
        return None

    def snapshot(self, call: Call) -> dict[str, Any]:
        return {}

    def adopt(self, call: Call, snapshot: dict[str, Any]) -> None:
        return None


@dataclass
class Leg:
    addr: Addr
    transport: str
    dialog: Dialog | None = None
    tag: str = ""  # our tag on this leg


@dataclass
class Call:
    trunk: Trunk
    direction: Direction
    a_invite: Request
    a: Leg
    record: CallRecord
    b: Leg | None = None
    b_invite: Request | None = None
    b_provisional: bool = False
    b_post_dial_delay: float | None = None  # the attempt's INVITE to its first 18x or 2xx, seconds
    cancelled: bool = False
    ended: bool = False
    pending_ack: dict[str, Request] = field(default_factory=dict)  # leg the ACK comes from -> INVITE sent
    last_b_ack: Request | None = None
    session_timer: TimerHandle | None = None
    session_seconds: float = 0.0
    session_refreshed: float = 0.0  # epoch seconds of the last session refresh
    limit_timer: TimerHandle | None = None
    counted: bool = False  # in the active calls gauge
    trace: NoTrace = NO_TRACE  # the call's trace here (its context is in `record`, for other edges)
    epoch: int = 0  # the fencing epoch this edge holds the call with (raised by every handover)
    # Leg name -> its credentials toward a carrier that challenged (kept here only: an edge adopting
    # the call starts afresh with the carrier's next challenge).
    auth: dict[str, LegAuth] = field(default_factory=dict)
    # The caller's INVITE as the call's record holds it, written once: every save of the call (set-up,
    # answer, refreshes) wrote it again, its SDP included.
    invite_data: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.a_invite.call_id

    @property
    def counters(self) -> str:
        """The trunk's key for channels and call rate in the store."""
        return trunk_key(self.trunk.metadata.namespace, self.trunk.metadata.name)

    @property
    def dialog_keys(self) -> list[str]:
        """The store keys of both legs' dialogs, as in-dialog requests name them (Call-ID, our tag,
        their tag)."""
        return ["|".join(leg.dialog.id) for leg in (self.a, self.b) if leg is not None and leg.dialog]

    def to_state(self, media: dict[str, Any]) -> CallState:
        b = self.b
        if self.invite_data is None:
            self.invite_data = invite_to_data(self.a_invite)
        return {
            "version": VERSION, "trunk": trunk_to_data(self.trunk), "invite": self.invite_data,
            "a": leg_to_record(self.a.addr, self.a.transport, self.a.tag, self.a.dialog),
            "b": leg_to_record(b.addr, b.transport, b.tag, b.dialog) if b else None,
            "record": call_record_to_data(self.record), "session_seconds": self.session_seconds,
            "session_refreshed": self.session_refreshed, "media": media,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: CallState) -> Call:
        """The call a record describes; ValueError (or KeyError) when it is not one we can carry."""
        if state.get("version") != VERSION:
            raise ValueError(f"call record version {state.get('version')!r}, not {VERSION}")
        record = call_record_from_data(state["record"])
        call = cls(trunk_from_data(state["trunk"]), record.direction, invite_from_data(state["invite"]),
                   Leg(*leg_from_record(state["a"])), record)  # fmt: skip
        if state["b"]:
            call.b = Leg(*leg_from_record(state["b"]))
        call.session_seconds = float(state["session_seconds"])
        call.session_refreshed = float(state["session_refreshed"])
        call.epoch = int(state.get("epoch", 0))
        return call

    def leg(self, name: str) -> Leg:
        leg = self.a if name == "a" else self.b
        assert leg is not None
        return leg

    @staticmethod
    def other(name: str) -> str:
        return "b" if name == "a" else "a"
