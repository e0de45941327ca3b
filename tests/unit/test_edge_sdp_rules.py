"""The trunk's rules on every SDP, without a relay too (`DirectMedia`): codecs in the trunk's order,
488 when none is in common, SRTP keys when required; the media address policy with RFC 2543 hold."""

from __future__ import annotations

import pytest

from trunkline.core.addresses import MediaAddressPolicy
from trunkline.core.models import Trunk
from trunkline.edge.call import Call, Leg, MediaError
from trunkline.edge.cdr import CallRecord, Direction
from trunkline.edge.direct_media import DirectMedia
from trunkline.edge.sdp_rules import apply_codecs, audio_stream, check_addresses, hold_direction, is_hold
from trunkline.sip.message import Request, parse_message
from trunkline.sip.sdp import parse_sdp

KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoLWUgY"


def sdp(fmts: str = "0 8 101", c: str = "192.0.2.10", proto: str = "RTP/AVP", extra: str = "") -> bytes:
    return (
        f"v=0\r\no=pbx 1 1 IN IP4 {c}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\nm=audio 4000 {proto} {fmts}\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n{extra}"
    ).encode()


def call_with(**spec: object) -> Call:
    trunk = Trunk.model_validate({"metadata": {"name": "acme"}, "spec": spec})
    invite = parse_message(
        b"INVITE sip:+14155550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:pbx@127.0.0.2>;tag=1\r\nTo: <sip:+14155550100@127.0.0.1>\r\nCall-ID: rules-1\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(invite, Request)
    record = CallRecord(
        call_id="rules-1",
        trunk="acme",
        direction=Direction.OUTBOUND,
        caller="pbx",
        callee="+14155550100",
        setup=0.0,
    )
    return Call(trunk, Direction.OUTBOUND, invite, Leg(("127.0.0.2", 5060), "udp"), record)


def test_the_trunks_order_is_the_preference_order_and_events_stay() -> None:
    audio = audio_stream(parse_sdp(sdp("0 8 9 101")))
    assert audio is not None
    apply_codecs(audio, ["PCMA", "PCMU"])
    assert audio.fmts == ["8", "0", "101"]
    assert [c.name for c in audio.codecs] == ["PCMA", "PCMU", "telephone-event"]
    assert not audio.attributes("rtpmap")[0].startswith("9 ")  # G722's line went with it
    assert all(not v.startswith("9 ") for v in audio.attributes("rtpmap"))


def test_no_codec_in_common_is_a_488() -> None:
    audio = audio_stream(parse_sdp(sdp("9 101")))
    assert audio is not None
    with pytest.raises(MediaError) as refused:
        apply_codecs(audio, ["PCMU", "PCMA"])
    assert refused.value.status == 488 and "no common codec" in refused.value.reason


@pytest.mark.parametrize("address", ["169.254.169.254", "224.0.0.1", "0.0.0.0", "127.0.0.1", "10.1.2.3"])
def test_addresses_the_policy_refuses_are_a_488(address: str) -> None:
    policy = MediaAddressPolicy.build(deny_cidrs=["10.0.0.0/8"])
    with pytest.raises(MediaError) as refused:
        check_addresses(policy, parse_sdp(sdp(c=address)))
    assert refused.value.status == 488 and address in refused.value.reason


def test_a_media_level_address_is_checked_too() -> None:
    body = sdp().replace(b"a=sendrecv\r\n", b"c=IN IP4 169.254.169.254\r\na=sendrecv\r\n")
    with pytest.raises(MediaError):
        check_addresses(MediaAddressPolicy(), parse_sdp(body))
    check_addresses(MediaAddressPolicy(), parse_sdp(sdp()))  # a public address passes


def test_hold_with_the_unspecified_address_is_hold_not_a_refusal() -> None:
    sd = parse_sdp(sdp(c="0.0.0.0"))
    audio = audio_stream(sd)
    assert audio is not None and is_hold(sd, audio)
    check_addresses(MediaAddressPolicy(), sd, hold_ok=True)
    hold_direction(audio)
    assert audio.direction == "sendonly"
    audio.direction = "recvonly"
    hold_direction(audio)
    assert audio.direction == "inactive"


async def test_without_a_relay_codecs_apply_in_the_trunks_order() -> None:
    media = DirectMedia()
    out = parse_sdp(await media.rewrite(call_with(codecs=["PCMA", "PCMU"]), sdp("0 8 101"), "a"))
    assert out.media[0].fmts == ["8", "0", "101"]
    assert out.connection_address == "192.0.2.10"  # addresses untouched: the parties talk directly
    with pytest.raises(MediaError) as refused:
        await media.rewrite(call_with(codecs=["G729"]), sdp("0 8 101"), "a")
    assert refused.value.status == 488


async def test_without_a_relay_required_srtp_needs_keys_and_optional_passes_them() -> None:
    media = DirectMedia()
    required = call_with(media={"srtp": "required"})
    with pytest.raises(MediaError) as refused:
        await media.rewrite(required, sdp(), "a")
    assert refused.value.status == 488 and "SRTP required" in refused.value.reason
    keyed = sdp(proto="RTP/SAVP", extra=f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}\r\n")
    assert b"a=crypto:1" in await media.rewrite(required, keyed, "b")
    optional = call_with(media={"srtp": "optional"})
    assert b"a=crypto:1" in await media.rewrite(optional, keyed, "a")
    assert b"RTP/AVP" in await media.rewrite(optional, sdp(), "a")
