"""What every SDP crossing the edge must satisfy, with or without a relay: the trunk's codecs (the
order of its list is the preference order the edge writes), SRTP keys when the trunk requires them,
and the media address policy on connection addresses. Pure: an SDP in, changed in place or refused
with a `MediaError` (488 to whoever sent it).

RFC 2543 hold: a re-offer whose connection address is 0.0.0.0 (or ::) means "do not send to me";
it is hold, not a refused address (`is_hold`).
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.core.addresses import MediaAddressPolicy
from trunkline.edge.call import MediaError
from trunkline.sip.errors import SipParseError
from trunkline.sip.sdp import SdpMedia, SessionDescription, parse_sdp

SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
TELEPHONE_EVENT = "telephone-event"
HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})


def not_acceptable(why: str) -> MediaError:
    return MediaError(488, f"Not Acceptable Here ({why})")


def audio_stream(sd: SessionDescription) -> SdpMedia | None:
    """The first audio stream that is not refused (port 0)."""
    return next((m for m in sd.media if m.kind == "audio" and m.port != 0), None)


def parse_audio_offer(sdp: bytes) -> tuple[SessionDescription, SdpMedia]:
    """The SDP and its audio stream, or the 488 for an offer without one (or that does not parse)."""
    try:
        sd = parse_sdp(sdp)
    except SipParseError as exc:
        raise not_acceptable(exc.reason) from None
    audio = audio_stream(sd)
    if audio is None:
        raise not_acceptable("no audio stream")
    return sd, audio


def connection_of(sd: SessionDescription, audio: SdpMedia) -> str | None:
    return audio.connection_address or sd.connection_address


def is_hold(sd: SessionDescription, audio: SdpMedia) -> bool:
    return connection_of(sd, audio) in HOLD_ADDRESSES


def hold_direction(audio: SdpMedia) -> None:
    """Say in attributes what an RFC 2543 hold (`c=0.0.0.0`) said in the address: the holding party
    receives nothing (sendonly, or inactive when it did not send either)."""
    audio.direction = "inactive" if audio.direction in ("recvonly", "inactive") else "sendonly"


def check_addresses(policy: MediaAddressPolicy, sd: SessionDescription, hold_ok: bool = False) -> None:
    """Every connection address of the session and of its live streams must be one media may go to
    (`hold_ok`: 0.0.0.0/:: is hold, accepted)."""
    for part in (sd, *(m for m in sd.media if m.port != 0)):
        address = part.connection_address
        if address is None or (hold_ok and address in HOLD_ADDRESSES):
            continue
        refusal = policy.refusal(address)
        if refusal is not None:
            raise not_acceptable(f"media address {refusal}")


def apply_codecs(audio: SdpMedia, preference: Sequence[str]) -> None:
    """Keep only the trunk's codecs, in the trunk's order (telephone-event after them, as offered);
    488 when none is in common."""
    rank = {name.lower(): n for n, name in enumerate(preference)}
    codecs = audio.codecs
    chosen = sorted((c for c in codecs if c.name.lower() in rank), key=lambda c: rank[c.name.lower()])
    if not chosen:
        offered = ", ".join(c.name or c.pt for c in codecs)[:80] or "none"
        raise not_acceptable(f"no common codec: offered {offered}, trunk allows {', '.join(preference)}")
    events = [c.pt for c in codecs if c.name.lower() == TELEPHONE_EVENT]
    audio.keep_codecs(list(preference))
    audio.fmts = [c.pt for c in chosen] + events


def has_keys(audio: SdpMedia) -> bool:
    """Whether the stream carries an SDES key in the suite the relay speaks (RFC 4568)."""
    for line in audio.crypto:
        parts = line.split()
        if len(parts) >= 3 and parts[1] == SRTP_SUITE and parts[2].startswith("inline:"):
            return True
    return False
