"""Real RTP through `trunkline up`: a PBX and a carrier, each with its own RTP socket, place a call
through the edge; each end receives exactly what the other sent, via the relay only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
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


def relay_port(sdp: bytes) -> tuple[str, int]:
    description = parse_sdp(sdp)
    audio = description.media[0]
    return (audio.connection_address or description.connection_address or ""), audio.port


@pytest.fixture
def carrier_port() -> int:
    return free_port()


@pytest.fixture
def up(tmp_path: Path, carrier_port: int) -> Iterator[Up]:
    running = Up(
        tmp_path / "up", manifests(carrier_port, free_port()), ["--media-ports", "31000-31999"]
    ).start()
    yield running
    running.stop()


async def test_audio_both_ways_through_the_relay(up: Up, carrier_port: int) -> None:
    pbx_rtp, carrier_rtp = Party(), Party()
    carrier = UserAgent(host="127.0.0.1", sdp=sdp_for(carrier_rtp.port))
    pbx = UserAgent(host="127.0.0.2", sdp=sdp_for(pbx_rtp.port))  # 127.0.0.2: the trunk's IP ACL
    await carrier.start(carrier_port)
    await pbx.start(0)
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

    try:
        target = f"sip:+442071234567@{up.sip}"
        status = await pbx.call(target, ("127.0.0.1", up.sip_port), from_user="+14155550100", during=talk)
    finally:
        await pbx.close()
        await carrier.close()
        pbx_rtp.close()
        carrier_rtp.close()
    assert status == 200, up.output()
    assert heard["carrier"] == heard["sent_pbx"]  # byte for byte, in order: same codec, no SRTP
    assert heard["pbx"] == heard["sent_carrier"]
    invite = carrier.last_invite
    assert invite is not None and b"127.0.0.2" not in invite.to_bytes()  # topology hidden, SDP included
    [cdr] = up.wait_cdrs(1)
    assert cdr["status"] == 200 and cdr["hung_up"] == "caller"
