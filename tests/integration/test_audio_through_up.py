"""Real RTP through `trunkline up`: a PBX and a carrier, each with its own RTP socket, place a call
through the edge; each end receives exactly what the other sent, via the relay only. With SRTP on the
trunk, the PBX's side is SRTP (keys from the SDP, pylibsrtp in the test) and the carrier's plain RTP."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pylibsrtp
import pytest

from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests
from trunkline.media.testing import Party, pcmu_stream
from trunkline.sip.message import Response
from trunkline.sip.sdp import parse_sdp
from trunkline.sip.ua import UserAgent


def sdp_for(port: int) -> bytes:
    return (
        b"v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        + f"m=audio {port} RTP/AVP 0 101\r\n".encode()
        + b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )


def savp_sdp_for(port: int, key: bytes, tag: int = 1) -> bytes:
    """An SRTP (SDES) offer or answer: RTP/SAVP and the party's own key under `tag`."""
    inline = base64.b64encode(key).decode()
    return sdp_for(port).replace(b"RTP/AVP", b"RTP/SAVP") + (
        f"a=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{inline}\r\n".encode()
    )


def relay_key(sdp: bytes, tag: int) -> bytes:
    """The relay's key in an SDP sent to the PBX, which must be an SRTP one (RTP/SAVP, a=crypto `tag`)."""
    audio = parse_sdp(sdp).media[0]
    assert audio.proto == "RTP/SAVP", sdp
    [line] = audio.crypto
    got_tag, suite, inline = line.split()
    assert got_tag == str(tag), line
    assert suite == "AES_CM_128_HMAC_SHA1_80" and inline.startswith("inline:")
    return base64.b64decode(inline[len("inline:") :].split("|")[0])


def srtp(key: bytes, inbound: bool) -> pylibsrtp.Session:
    ssrc = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=ssrc, srtp_profile=profile))


def relay_port(sdp: bytes) -> tuple[str, int]:
    description = parse_sdp(sdp)
    audio = description.media[0]
    return (audio.connection_address or description.connection_address or ""), audio.port


@pytest.fixture
def up(tmp_path: Path, carrier_port: int) -> Iterator[Up]:
    running = Up(
        tmp_path / "up", manifests(carrier_port, free_port()), ["--media-ports", "31000-31999"]
    ).start()
    yield running
    running.stop()


async def call_through(
    up: Up, caller: UserAgent, callee: str, from_user: str, during: Callable[[Response], Awaitable[None]],
    ends: list[tuple[UserAgent, int]], parties: list[Party],
) -> int:  # fmt: skip
    """Start both user agents (each on its port), place the call through `up` with `during` while it is
    up, then close the agents and the RTP parties whatever happened; the caller's final status."""
    try:
        for agent, port in ends:
            await agent.start(port)
        target = f"sip:{callee}@{up.sip}"
        return await caller.call(target, ("127.0.0.1", up.sip_port), from_user=from_user, during=during)
    finally:
        for agent, _ in ends:
            await agent.close()
        for party in parties:
            party.close()


async def test_audio_both_ways_through_the_relay(up: Up, carrier_port: int) -> None:
    pbx_rtp, carrier_rtp = Party(), Party()
    carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(carrier_rtp.port))
    pbx = UserAgent(host="127.0.0.2", sdp=sdp_for(pbx_rtp.port))  # 127.0.0.2: the trunk's IP ACL
    heard: dict[str, list[bytes]] = {}

    async def talk(answer: Response) -> None:
        assert carrier.last_invite is not None
        to_relay_from_pbx = relay_port(answer.body)
        to_relay_from_carrier = relay_port(carrier.last_invite.body)
        # Neither side sees the other's media address: both talk to the relay's ports.
        assert to_relay_from_pbx[1] in range(31000, 32000) and to_relay_from_carrier[1] in range(31000, 32000)
        assert to_relay_from_pbx != to_relay_from_carrier
        out_pbx, out_carrier = pcmu_stream(50, ssrc=0x1111, seed=1), pcmu_stream(50, ssrc=0x2222, seed=2)
        for a, b in zip(out_pbx, out_carrier, strict=True):
            pbx_rtp.send(a, to_relay_from_pbx[1])
            carrier_rtp.send(b, to_relay_from_carrier[1])
            await asyncio.sleep(0.002)
        heard["carrier"] = await carrier_rtp.recv_all(50)
        heard["pbx"] = await pbx_rtp.recv_all(50)
        heard["sent_pbx"], heard["sent_carrier"] = out_pbx, out_carrier

    ends = [(carrier, carrier_port), (pbx, 0)]
    status = await call_through(up, pbx, "+442071234567", "+14155550100", talk, ends, [pbx_rtp, carrier_rtp])
    assert status == 200, up.output()
    assert heard["carrier"] == heard["sent_pbx"]  # byte for byte, in order: same codec, no SRTP
    assert heard["pbx"] == heard["sent_carrier"]
    invite = carrier.last_invite
    assert invite is not None and b"127.0.0.2" not in invite.to_bytes()  # topology hidden, SDP included
    [cdr] = up.wait_cdrs(1)
    assert cdr["status"] == 200 and cdr["hung_up"] == "caller"


@pytest.fixture
def srtp_up(tmp_path: Path, carrier_port: int, pbx_port: int) -> Iterator[Up]:
    text = manifests(carrier_port, pbx_port, media={"srtp": "required"})
    running = Up(tmp_path / "up", text, ["--media-ports", "31000-31999"]).start()
    yield running
    running.stop()


async def exchange_srtp(
    pbx_rtp: Party, pbx_key: bytes, to_pbx_sdp: bytes, carrier_rtp: Party, from_carrier_sdp: bytes, tag: int
) -> None:
    """50 packets each way: the PBX protects with its key and unprotects with the relay's (from the SDP
    it got); the carrier speaks plain RTP. Each end gets exactly the packets the other sent."""
    protect, unprotect = srtp(pbx_key, inbound=False), srtp(relay_key(to_pbx_sdp, tag), inbound=True)
    assert b"crypto" not in from_carrier_sdp and parse_sdp(from_carrier_sdp).media[0].proto == "RTP/AVP"
    pbx_port, carrier_port = relay_port(to_pbx_sdp)[1], relay_port(from_carrier_sdp)[1]
    out_pbx, out_carrier = pcmu_stream(50, ssrc=0x3333, seed=3), pcmu_stream(50, ssrc=0x4444, seed=4)
    for a, b in zip(out_pbx, out_carrier, strict=True):
        pbx_rtp.send(protect.protect(a), pbx_port)
        carrier_rtp.send(b, carrier_port)
        await asyncio.sleep(0.002)
    heard_carrier = await carrier_rtp.recv_all(50)
    encrypted = await pbx_rtp.recv_all(50)
    assert all(packet not in out_carrier for packet in encrypted)  # SRTP on the wire to the PBX
    assert heard_carrier == out_pbx  # decrypted by the relay, byte for byte
    assert [unprotect.unprotect(packet) for packet in encrypted] == out_carrier


async def test_srtp_offered_by_the_pbx_on_an_outbound_call(srtp_up: Up, carrier_port: int) -> None:
    pbx_rtp, carrier_rtp, pbx_key = Party(), Party(), os.urandom(30)
    carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(carrier_rtp.port))
    pbx = UserAgent(host="127.0.0.2", sdp=savp_sdp_for(pbx_rtp.port, pbx_key, tag=3))

    async def talk(answer: Response) -> None:
        assert carrier.last_invite is not None  # the offer the carrier got: plain RTP
        # The answer accepts the PBX's crypto line by its tag (RFC 4568 5.1.2).
        await exchange_srtp(pbx_rtp, pbx_key, answer.body, carrier_rtp, carrier.last_invite.body, tag=3)

    ends, parties = [(carrier, carrier_port), (pbx, 0)], [pbx_rtp, carrier_rtp]
    status = await call_through(srtp_up, pbx, "+442071234567", "+14155550100", talk, ends, parties)
    assert status == 200, srtp_up.output()
    [cdr] = srtp_up.wait_cdrs(1)
    assert cdr["status"] == 200 and cdr["direction"] == "outbound"


async def test_srtp_offered_to_the_pbx_on_an_inbound_call(
    srtp_up: Up, carrier_port: int, pbx_port: int
) -> None:
    pbx_rtp, carrier_rtp, pbx_key = Party(), Party(), os.urandom(30)
    carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(carrier_rtp.port))
    pbx = UserAgent(host="127.0.0.4", sdp=savp_sdp_for(pbx_rtp.port, pbx_key))  # answers with its key

    async def talk(answer: Response) -> None:
        assert pbx.last_invite is not None  # the offer the PBX got: SRTP with the relay's key
        await exchange_srtp(pbx_rtp, pbx_key, pbx.last_invite.body, carrier_rtp, answer.body, tag=1)

    ends, parties = [(carrier, carrier_port), (pbx, pbx_port)], [pbx_rtp, carrier_rtp]
    status = await call_through(srtp_up, carrier, "+14155550100", "+442071234567", talk, ends, parties)
    assert status == 200, srtp_up.output()
    [cdr] = srtp_up.wait_cdrs(1)
    assert cdr["status"] == 200 and cdr["direction"] == "inbound"
