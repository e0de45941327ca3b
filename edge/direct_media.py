"""Media without a relay: the parties send RTP to each other; the edge still holds every SDP to
the trunk's rules (`sdp_rules`): its codecs in its order, 488 when none is in common, and with
`media.srtp: required` keys on both sides (the edge cannot add SRTP it does not carry: both parties
must offer it, end to end). `disabled` and `optional` pass SRTP the parties agree between them as it
is. No address policy: no process of ours sends media to what an SDP names.
"""

from __future__ import annotations

from typing import Any

from trunkline.core.models import SrtpMode
from trunkline.edge.call import Call
from trunkline.edge.sdp_rules import apply_codecs, has_keys, not_acceptable, parse_audio_offer


class DirectMedia:
    """The MediaPlane of an edge without a relay: SDP checked and filtered, addresses untouched."""

    async def rewrite(self, call: Call, sdp: bytes, from_leg: str) -> bytes:
        sd, audio = parse_audio_offer(sdp)
        apply_codecs(audio, [c.value for c in call.trunk.spec.codecs])
        if call.trunk.spec.media.srtp is SrtpMode.REQUIRED and not has_keys(audio):
            raise not_acceptable("SRTP required: without a media relay both parties must offer keys")
        return sd.to_bytes()

    async def release(self, call: Call) -> None:
        return None

    def snapshot(self, call: Call) -> dict[str, Any]:
        return {}

    def adopt(self, call: Call, snapshot: dict[str, Any]) -> None:
        return None
