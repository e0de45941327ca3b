"""The trunk's media rules through a real `trunkline up`, with the relay and without it (`--no-relay`):
the trunk's codecs in its order, 488 when none is in common; the media address policy before the
relay is asked; RFC 2543 hold; SRTP `optional` (best-effort: RTP/AVP with a=crypto) working with a
PBX that ignores the key, and `required` never connecting a call without keys."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.trunkline_up import BIN, Up, manifests
from trunkline.media.testing import Party, pcmu_stream
from trunkline.sip.message import Request, Response
from trunkline.sip.sdp import parse_sdp
from trunkline.sip.ua import UserAgent

OUTBOUND = ("+442071234567", "+14155550100")  # (callee, caller) of a PBX's call to the carrier
INBOUND = ("+14155550100", "+442071234567")  # a carrier's call to the trunk's DID
SUITE = "AES_CM_128_HMAC_SHA1_80"
KEY = base64.b64encode(bytes(range(30))).decode()


def sdp_for(port: int, c: str = "127.0.0.1", fmts: str = "0 8 101", proto: str = "RTP/AVP") -> bytes:
    return (
        f"v=0\r\no=peer 1 1 IN IP4 {c}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\nm=audio {port} {proto} {fmts}\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    ).encode()


def parties() -> tuple[UserAgent, UserAgent]:
    """A carrier and an outbound-calling PBX (127.0.0.2: the trunk's IP ACL) with plain SDP."""
    return UserAgent(host="127.0.0.1", sdp=sdp_for(4002)), UserAgent(host="127.0.0.2", sdp=sdp_for(4000))


def start_up(tmp_path: Path, carrier_port: int, pbx_port: int, relay: bool, **spec: object) -> Up:
    extra = ["--media-ports", "32000-32999"] if relay else ["--no-relay"]
    return Up(tmp_path / "up", manifests(carrier_port, pbx_port, **spec), extra).start()


async def place(
    up: Up, caller: UserAgent, numbers: tuple[str, str], ends: list[tuple[UserAgent, int]],
    during: Callable[[Response], Awaitable[None]] | None = None,
) -> int:  # fmt: skip
    """The caller's final status for a call through `up` (each agent started on its port, closed after)."""
    try:
        for agent, port in ends:
            await agent.start(port)
        callee, from_user = numbers
        target = f"sip:{callee}@{up.sip}"
        return await caller.call(target, ("127.0.0.1", up.sip_port), from_user=from_user, during=during)
    finally:
        for agent, _ in ends:
            await agent.close()


def relay_address(sdp: bytes) -> tuple[str, int]:
    description = parse_sdp(sdp)
    audio = description.media[0]
    return (audio.connection_address or description.connection_address or ""), audio.port


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("relay", [True, False], ids=["relay", "no-relay"])
async def test_the_trunks_codec_order_is_the_preference_order(
    tmp_path: Path, carrier_port: int, pbx_port: int, relay: bool
) -> None:
    up = start_up(tmp_path, carrier_port, pbx_port, relay, codecs=["PCMA", "PCMU"])
    try:
        carrier, pbx = (
            UserAgent(host="127.0.0.1", sdp=sdp_for(4002)),
            UserAgent(host="127.0.0.2", sdp=sdp_for(4000)),
        )
        status = await place(up, pbx, OUTBOUND, [(carrier, carrier_port), (pbx, 0)])
        assert status == 200, up.output()
        assert carrier.last_invite is not None
        assert parse_sdp(carrier.last_invite.body).media[0].fmts == ["8", "0", "101"]
    finally:
        up.stop()


@pytest.mark.parametrize("relay", [True, False], ids=["relay", "no-relay"])
async def test_no_codec_in_common_is_a_488_to_the_offerer(
    tmp_path: Path, carrier_port: int, pbx_port: int, relay: bool
) -> None:
    up = start_up(tmp_path, carrier_port, pbx_port, relay, codecs=["G722"])
    try:
        carrier, pbx = (
            UserAgent(host="127.0.0.1", sdp=sdp_for(4002)),
            UserAgent(host="127.0.0.2", sdp=sdp_for(4000)),
        )
        status = await place(up, pbx, OUTBOUND, [(carrier, carrier_port), (pbx, 0)])
        assert status == 488, up.output()
        assert carrier.last_invite is None  # refused before anyone was called
        [cdr] = up.wait_cdrs(1, timeout=20)
        assert cdr["status"] == 488
    finally:
        up.stop()


@pytest.mark.parametrize("address", ["169.254.169.254", "224.0.0.1", "0.0.0.0"])
async def test_an_offer_naming_a_refused_media_address_is_a_488(
    tmp_path: Path, carrier_port: int, pbx_port: int, address: str
) -> None:
    up = start_up(tmp_path, carrier_port, pbx_port, relay=True)
    try:
        carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(4002))
        pbx = UserAgent(host="127.0.0.2", sdp=sdp_for(4000, c=address))
        status = await place(up, pbx, OUTBOUND, [(carrier, carrier_port), (pbx, 0)])
        assert status == 488, up.output()
        assert carrier.last_invite is None
    finally:
        up.stop()


def test_a_bad_media_deny_cidr_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(manifests(free_port(), free_port()))
    proc = subprocess.run(
        [BIN, "edge", "-f", str(tmp_path / "m.yaml"), "--sip-listen", f"127.0.0.1:{free_port()}",
         "--media-deny-cidr", "10.0.0.1/8"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "--media-deny-cidr" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


async def test_hold_with_the_unspecified_address_keeps_the_call(
    tmp_path: Path, carrier_port: int, pbx_port: int
) -> None:
    up = start_up(tmp_path, carrier_port, pbx_port, relay=True)
    carrier, pbx = (
        UserAgent(host="127.0.0.1", sdp=sdp_for(4002)),
        UserAgent(host="127.0.0.2", sdp=sdp_for(4000)),
    )
    held: dict[str, object] = {}

    async def hold(answer: Response) -> None:
        assert carrier.last_invite is not None
        before = relay_address(carrier.last_invite.body)
        dialog = pbx.dialogs[(answer.call_id, answer.from_.tag or "", answer.to.tag or "")]
        reinvite = dialog.create_request("INVITE", pbx._via("udp"), pbx._contact("udp"))
        reinvite.add("Content-Type", "application/sdp")
        reinvite.body = sdp_for(4000, c="0.0.0.0")
        final = await pbx.request(reinvite, ("127.0.0.1", up.sip_port), "udp")
        held["status"] = final.status
        if final.status == 200:
            pbx._ack_2xx(final, ("127.0.0.1", up.sip_port), "udp")
        assert isinstance(carrier.last_invite, Request)
        held["to_carrier"] = carrier.last_invite.body
        held["before"] = before
        # A re-offer naming an address the policy refuses: 488, and the call goes on as it was.
        bad = dialog.create_request("INVITE", pbx._via("udp"), pbx._contact("udp"))
        bad.add("Content-Type", "application/sdp")
        bad.body = sdp_for(4000, c="169.254.169.254")
        held["refused"] = (await pbx.request(bad, ("127.0.0.1", up.sip_port), "udp")).status

    try:
        status = await place(up, pbx, OUTBOUND, [(carrier, carrier_port), (pbx, 0)], during=hold)
        assert status == 200, up.output()
        assert held["status"] == 200, up.output()
        to_carrier = held["to_carrier"]
        assert isinstance(to_carrier, bytes)
        assert relay_address(to_carrier) == held["before"]  # still the relay's port, not 0.0.0.0
        assert parse_sdp(to_carrier).media[0].direction == "sendonly"
        assert held["refused"] == 488
    finally:
        up.stop()


async def exchange_plain(pbx_rtp: Party, to_pbx: bytes, carrier_rtp: Party, to_carrier: bytes) -> None:
    """RTP both ways through the relay, plain on both sides; each hears exactly what the other sent."""
    pbx_port, carrier_port = relay_address(to_pbx)[1], relay_address(to_carrier)[1]
    out_pbx, out_carrier = pcmu_stream(20, ssrc=0x1111, seed=1), pcmu_stream(20, ssrc=0x2222, seed=2)
    for a, b in zip(out_pbx, out_carrier, strict=True):
        pbx_rtp.send(a, pbx_port)
        carrier_rtp.send(b, carrier_port)
        await asyncio.sleep(0.002)
    assert await carrier_rtp.recv_all(20, timeout=10) == out_pbx
    assert await pbx_rtp.recv_all(20, timeout=10) == out_carrier


async def test_optional_srtp_offers_a_key_on_rtp_avp_and_works_with_a_plain_pbx(
    tmp_path: Path, carrier_port: int, pbx_port: int
) -> None:
    up = start_up(tmp_path, carrier_port, pbx_port, relay=True, media={"srtp": "optional"})
    pbx_rtp, carrier_rtp = Party(), Party()
    carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(carrier_rtp.port))
    pbx = UserAgent(host="127.0.0.4", sdp=sdp_for(pbx_rtp.port))  # no SRTP: ignores the key

    async def talk(answer: Response) -> None:
        assert pbx.last_invite is not None
        offer = parse_sdp(pbx.last_invite.body).media[0]
        assert offer.proto == "RTP/AVP" and len(offer.crypto) == 1  # best-effort SRTP
        await exchange_plain(pbx_rtp, pbx.last_invite.body, carrier_rtp, answer.body)

    try:
        status = await place(up, carrier, INBOUND, [(pbx, pbx_port), (carrier, carrier_port)], during=talk)
        assert status == 200, up.output()
    finally:
        pbx_rtp.close()
        carrier_rtp.close()
        up.stop()


async def test_required_srtp_refuses_a_plain_answer_and_never_connects(
    tmp_path: Path, carrier_port: int, pbx_port: int
) -> None:
    up = start_up(tmp_path, carrier_port, pbx_port, relay=True, media={"srtp": "required"})
    carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(4002))
    pbx = UserAgent(host="127.0.0.4", sdp=sdp_for(4000))  # answers without a key
    try:
        await pbx.start(pbx_port)
        status = await place(up, carrier, INBOUND, [(carrier, carrier_port)])
        assert status == 488, up.output()
        assert pbx.last_invite is not None
        assert parse_sdp(pbx.last_invite.body).media[0].proto == "RTP/SAVP"
        await wait_for(lambda: pbx.byes == 1, "the BYE to the PBX that answered without keys")
        [cdr] = up.wait_cdrs(1, timeout=20)
        assert cdr["status"] == 488
    finally:
        await pbx.close()
        up.stop()


async def test_required_srtp_without_a_relay_refuses_a_plain_offer(
    tmp_path: Path, carrier_port: int, pbx_port: int
) -> None:
    up = start_up(tmp_path, carrier_port, pbx_port, relay=False, media={"srtp": "required"})
    carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(4002))
    pbx = UserAgent(host="127.0.0.4", sdp=sdp_for(4000))
    target, edge = f"sip:{INBOUND[0]}@{up.sip}", ("127.0.0.1", up.sip_port)
    try:
        await pbx.start(pbx_port)
        await carrier.start(carrier_port)
        assert await carrier.call(target, edge, from_user=INBOUND[1]) == 488, up.output()
        assert pbx.last_invite is None
        keyed = sdp_for(4002, proto="RTP/SAVP") + f"a=crypto:1 {SUITE} inline:{KEY}\r\n".encode()
        carrier.sdp, pbx.sdp = keyed, keyed.replace(b"4002", b"4000")
        assert await carrier.call(target, edge, from_user=INBOUND[1]) == 200, up.output()
        assert pbx.last_invite is not None and f"inline:{KEY}".encode() in pbx.last_invite.body
    finally:
        await pbx.close()
        await carrier.close()
        up.stop()


@pytest.mark.parametrize("relay", [True, False], ids=["relay", "no-relay"])
def test_sipp_calls_follow_the_trunks_codecs(
    tmp_path: Path, carrier_port: int, pbx_port: int, relay: bool
) -> None:
    """SIPp on both sides: the PBX offers PCMU, PCMA and events; the carrier gets them in the trunk's
    order and answers; a trunk with no codec in common with the offer gets the PBX a 488."""
    up = start_up(tmp_path, carrier_port, pbx_port, relay, codecs=["PCMA", "PCMU"])
    try:
        carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_port, "-trace_msg")
        try:
            result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567")
        finally:
            carrier_out = sipp.stop(carrier)
        assert result.ok, result.output + carrier_out + up.output()
        messages = "".join(
            p.read_text(errors="replace") for p in (tmp_path / "carrier").glob("*_messages.log")
        )
        assert re.search(r"m=audio \d+ RTP/AVP 8 0 101", messages), messages[-3000:]
    finally:
        up.stop()
    up = start_up(tmp_path / "g722", carrier_port, pbx_port, relay, codecs=["G722"])
    try:
        refused = sipp.uac_expect(tmp_path / "pbx-488", up.sip, "127.0.0.2", "+442071234567", 488)
        assert refused.ok, refused.output + up.output()
        [cdr] = up.wait_cdrs(1, timeout=20)
        assert cdr["status"] == 488 and not cdr["attempts"]  # no carrier was tried
    finally:
        up.stop()
