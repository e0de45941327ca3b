"""Media through a relay: every SDP that crosses the edge is rewritten to point at relay ports.

One relay session per call; relay leg "a" faces the caller, leg "b" the callee. An SDP from one leg
tells the relay where that party listens (UpdateSession), and goes on to the other leg naming the
relay's ports that face it. Codecs are limited to the trunk's list (telephone-event always kept).

SRTP (RFC 4568 SDES) is spoken only on the trunk's side, per `spec.media.srtp`; the carrier side is
plain RTP. This version bridges SRTP that the PBX offers (outbound calls, or its answers); offering
SRTP to a PBX on inbound calls needs a relay key before the PBX answers, which the relay API does not
give yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from trunkline.core.models import SrtpMode
from trunkline.edge.b2bua import Call, MediaError
from trunkline.edge.cdr import Direction
from trunkline.media.v1 import media_pb2, media_pb2_grpc
from trunkline.sip.errors import SipParseError
from trunkline.sip.sdp import Media, SessionDescription, parse_sdp

log = logging.getLogger("trunkline.edge.media")

SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"


@dataclass
class _Session:
    allocations: dict[str, media_pb2.LegAllocation] = field(default_factory=dict)


def _audio(sd: SessionDescription) -> Media | None:
    return next((m for m in sd.media if m.kind == "audio" and m.port != 0), None)


def _offered_key(media: Media) -> media_pb2.Crypto | None:
    """The first SDES line with the suite the relay speaks: `1 AES_CM_128_HMAC_SHA1_80 inline:KEY|...`."""
    for line in media.crypto:
        parts = line.split()
        if len(parts) >= 3 and parts[1] == SRTP_SUITE and parts[2].startswith("inline:"):
            return media_pb2.Crypto(suite=SRTP_SUITE, key=parts[2][len("inline:") :].split("|")[0])
    return None


def trunk_leg(call: Call) -> str:
    """The leg that faces the trunk's PBX: the caller on outbound calls, the callee on inbound."""
    return "a" if call.record.direction is Direction.OUTBOUND else "b"


class RelayMedia:
    """The edge's Media over one MediaRelay gRPC service (`target` is HOST:PORT)."""

    def __init__(self, target: str | Callable[[], str], timeout: float = 2.0) -> None:
        self.target = target  # or a function giving it, for a relay whose port is known only once started
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._sessions: dict[str, _Session] = {}

    @property
    def _stub(self) -> media_pb2_grpc.MediaRelayStub:
        if self._channel is None:
            target = self.target if isinstance(self.target, str) else self.target()
            self._channel = grpc.aio.insecure_channel(target)
        return media_pb2_grpc.MediaRelayStub(self._channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def rewrite(self, call: Call, sdp: bytes, from_leg: str) -> bytes:
        try:
            sd = parse_sdp(sdp)
        except SipParseError as exc:
            raise MediaError(488, f"Not Acceptable Here ({exc.reason})") from None
        audio = _audio(sd)
        if audio is None:
            raise MediaError(488, "Not Acceptable Here (no audio stream)")
        to_leg = "b" if from_leg == "a" else "a"
        spec = self._leg_spec(call, sd, audio, from_leg)
        allocation = await self._update(call, from_leg, spec)
        self._point_at_relay(sd, audio, allocation[to_leg], call, to_leg)
        return sd.to_bytes()

    def _leg_spec(self, call: Call, sd: SessionDescription, audio: Media, leg: str) -> media_pb2.LegSpec:
        address = audio.connection_address or sd.connection_address
        if not address:
            raise MediaError(488, "Not Acceptable Here (no connection address)")
        crypto = None
        srtp = call.trunk.spec.media.srtp
        if leg == trunk_leg(call) and srtp is not SrtpMode.DISABLED:
            crypto = _offered_key(audio)
            if crypto is None and srtp is SrtpMode.REQUIRED:
                raise MediaError(488, "Not Acceptable Here (SRTP required)")
        rate = next((c.rate for c in audio.codecs if c.name.lower() != "telephone-event"), 8000)
        return media_pb2.LegSpec(
            remote_address=address, remote_rtp_port=audio.port, remote_rtcp_port=audio.rtcp_port or 0,
            rtcp_mux=audio.rtcp_mux, crypto=crypto, clock_rate=rate,
        )  # fmt: skip

    async def _update(
        self, call: Call, leg: str, spec: media_pb2.LegSpec
    ) -> dict[str, media_pb2.LegAllocation]:
        session = self._sessions.get(call.key)
        leg_a, leg_b = (spec, None) if leg == "a" else (None, spec)
        try:
            if session is None:
                answer: media_pb2.CreateSessionResponse | media_pb2.UpdateSessionResponse
                answer = await self._stub.CreateSession(
                    media_pb2.CreateSessionRequest(session_id=call.key, leg_a=leg_a, leg_b=leg_b),
                    timeout=self.timeout,
                )
                session = self._sessions[call.key] = _Session()
            else:
                answer = await self._stub.UpdateSession(
                    media_pb2.UpdateSessionRequest(session_id=call.key, leg_a=leg_a, leg_b=leg_b),
                    timeout=self.timeout,
                )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise MediaError(488, f"Not Acceptable Here ({exc.details()})") from None
            raise MediaError(503, f"Service Unavailable (media relay: {exc.code().name})") from None
        session.allocations = {"a": answer.leg_a, "b": answer.leg_b}
        return session.allocations

    def _point_at_relay(
        self, sd: SessionDescription, audio: Media, at: media_pb2.LegAllocation, call: Call, to_leg: str
    ) -> None:
        # Every c= names the relay, replaced where it stands (RFC 8866 fixes the order of lines).
        for part in (sd, *sd.media):
            if part.get("c") is not None:
                part.set_connection(at.address)
        sd.set_origin_address(at.address)
        sd.bump_version()
        audio.port = at.rtp_port
        audio.remove_attributes("rtcp")
        if at.rtcp_port and not audio.rtcp_mux:
            audio.add_attribute("rtcp", str(at.rtcp_port))
        audio.keep_codecs([c.value for c in call.trunk.spec.codecs])
        srtp_here = to_leg == trunk_leg(call) and call.trunk.spec.media.srtp is not SrtpMode.DISABLED
        if srtp_here and at.HasField("crypto"):
            audio.crypto = [f"1 {at.crypto.suite} inline:{at.crypto.key}"]
            audio.proto = "RTP/SAVP"
        else:
            audio.crypto = []
            audio.proto = "RTP/AVP"
        for other in sd.media:
            if other is not audio:
                other.port = 0  # one relayed audio stream; refuse the rest (RFC 3264 6)

    def snapshot(self, call: Call) -> dict[str, Any]:
        # The relay keeps the session under the call's key; another edge needs only to know there is one.
        return {"relay_session": call.key} if call.key in self._sessions else {}

    def adopt(self, call: Call, snapshot: dict[str, Any]) -> None:
        if snapshot.get("relay_session") == call.key:
            self._sessions[call.key] = _Session()

    async def release(self, call: Call) -> None:
        if self._sessions.pop(call.key, None) is None:
            return
        try:
            await self._stub.DeleteSession(
                media_pb2.DeleteSessionRequest(session_id=call.key), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:  # the relay's inactivity timeout frees it anyway
            log.warning("relay did not delete session %s: %s", call.key, exc.code().name)
