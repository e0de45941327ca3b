"""The edge's RelayMedia against a real control service and two real relays (in this process): a call's
snapshot names its relay, so an edge that adopts the call goes on with that relay even when control
would pick the other one for a new call; the relay's inactivity report reaches the adopting edge. A
session the relay made for a call that ended while it was being made is deleted, not leaked. Calls
that end together have their sessions deleted in one DeleteSessions call."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from trunkline.control.client import RelayPicker
from trunkline.control.server import ControlServer
from trunkline.core.addresses import MediaAddressPolicy
from trunkline.core.models import Trunk
from trunkline.edge.call import Call, Leg, MediaError
from trunkline.edge.cdr import CallRecord, Direction
from trunkline.edge.media import RelayMedia
from trunkline.media.server import MediaServer
from trunkline.media.service import MediaRelayService
from trunkline.media.testing import HOST, Party, pcmu_stream
from trunkline.sip.message import Request, parse_message
from trunkline.sip.sdp import parse_sdp

CALL_ID = "handover-1@127.0.0.2"
LOOPBACK = MediaAddressPolicy(allow_loopback=True)  # the parties are on loopback


def sdp_for(port: int) -> bytes:
    return (
        f"v=0\r\no=peer 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def outbound_call(call_id: str = CALL_ID) -> Call:
    invite = parse_message(
        b"INVITE sip:+442071234567@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:+14155550100@127.0.0.2>;tag=a\r\nTo: <sip:+442071234567@127.0.0.1>\r\n"
        b"Call-ID: "
        + call_id.encode()
        + b"\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(invite, Request)
    trunk = Trunk.model_validate({"metadata": {"name": "acme"}, "spec": {}})
    record = CallRecord(call_id, "acme", Direction.OUTBOUND, "+14155550100", "+442071234567", 0.0)
    return Call(trunk, Direction.OUTBOUND, invite, Leg(("127.0.0.2", 5060), "udp"), record)


@pytest.fixture
async def plane() -> AsyncIterator[tuple[ControlServer, dict[str, MediaServer]]]:
    control = ControlServer("127.0.0.1:0", heartbeat_interval=0.1, heartbeat_timeout=1.0)
    await control.start()
    low = 46000 + (os.getpid() % 40) * 200
    relays = {
        relay_id: MediaServer("127.0.0.1:0", HOST, (low + i * 100, low + i * 100 + 99), workers=0,
                              control=f"127.0.0.1:{control.port}", relay_id=relay_id, inactivity_timeout=1.0)
        for i, relay_id in enumerate(("x", "y"))
    }  # fmt: skip
    for relay in relays.values():
        await relay.start()
    try:
        for _ in range(100):
            if len(list(control.relays.healthy())) == 2:
                break
            await asyncio.sleep(0.05)
        yield control, relays
    finally:
        for relay in relays.values():
            await relay.stop(0)
        await control.stop(0)


async def test_an_adopting_edge_goes_on_with_the_calls_relay(
    plane: tuple[ControlServer, dict[str, MediaServer]],
) -> None:
    control, relays = plane
    target = f"127.0.0.1:{control.port}"
    ended: list[tuple[str, str]] = []

    def end_call(key: str, why: str) -> bool:  # what Edge.end_call is told
        ended.append((key, why))
        return True

    first = RelayMedia(picker=RelayPicker(target), policy=LOOPBACK)
    second = RelayMedia(picker=RelayPicker(target), on_inactive=end_call, policy=LOOPBACK)
    caller, callee = Party(), Party()
    try:
        call = outbound_call()
        to_callee = parse_sdp(await first.rewrite(call, sdp_for(caller.port), "a"))
        address = first.relay_of(call.key)
        [used] = [rid for rid, relay in relays.items() if address == f"127.0.0.1:{relay.port}"]
        [other] = [rid for rid in relays if rid != used]
        for _ in range(100):  # control has heard that `used` carries a session: a new call would go elsewhere
            picked = control.relays.pick()
            if picked is not None and picked.relay_id == other:
                break
            await asyncio.sleep(0.05)
        assert picked is not None and picked.relay_id == other

        snapshot = first.snapshot(call)
        assert snapshot == {"relay_session": call.key, "relay": address}
        await first.close()  # the first edge is gone
        second.adopt(call, snapshot)
        to_caller = parse_sdp(await second.rewrite(call, sdp_for(callee.port), "b"))  # the callee's answer
        assert second.relay_of(call.key) == address
        assert relays[used].pool.active == 1 and relays[other].pool.active == 0
        # Media flows through the one session, on the ports each party was given by either edge.
        [packet] = pcmu_stream(1, 0x77, seed=7)
        caller.send(packet, to_caller.media[0].port)
        assert (await callee.recv())[0] == packet
        callee.send(packet, to_callee.media[0].port)
        assert (await caller.recv())[0] == packet

        # Silence for the relay's inactivity timeout: the adopting edge is told, to end the call.
        for _ in range(60):
            if ended:
                break
            await asyncio.sleep(0.1)
        assert ended == [(call.key, "media inactive")]
        assert second.snapshot(call) == {}  # nothing left on the relay for a later edge
        await second.release(call)
        assert relays[used].pool.active == 0
    finally:
        await first.close()
        await second.close()
        caller.close()
        callee.close()


async def test_a_session_made_for_a_call_that_ended_meanwhile_is_deleted(
    plane: tuple[ControlServer, dict[str, MediaServer]],
) -> None:
    control, relays = plane
    media = RelayMedia(picker=RelayPicker(f"127.0.0.1:{control.port}"), policy=LOOPBACK)
    caller = Party()
    try:
        call = outbound_call()
        call.ended = True  # e.g. CANCEL while CreateSession was on its way: release found nothing yet
        sdp = parse_sdp(await media.rewrite(call, sdp_for(caller.port), "a"))
        assert sdp.media[0].port != caller.port  # rewritten all the same
        assert media.relay_of(call.key) is None and media.snapshot(call) == {}
        assert sum(relay.pool.active for relay in relays.values()) == 0  # nothing left on any relay
    finally:
        await media.close()
        caller.close()


@pytest.fixture
def deletions(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The session ids of each DeleteSessions command (or call) the relays serve."""
    batches: list[list[str]] = []
    delete_many = MediaRelayService.delete_many

    async def observed(self: MediaRelayService, request: Any) -> Any:
        batches.append(list(request.session_ids))
        return await delete_many(self, request)

    monkeypatch.setattr(MediaRelayService, "delete_many", observed)
    return batches


async def test_calls_that_end_together_end_their_sessions_in_one_call(
    deletions: list[list[str]], plane: tuple[ControlServer, dict[str, MediaServer]]
) -> None:
    relay = plane[1]["x"]
    media = RelayMedia(f"127.0.0.1:{relay.port}", policy=LOOPBACK)
    caller = Party()
    try:
        calls = [outbound_call(f"batch-{i}@127.0.0.2") for i in range(5)]
        for call in calls:
            await media.rewrite(call, sdp_for(caller.port), "a")
        assert relay.pool.active == 5
        await asyncio.gather(*(media.release(call) for call in calls))  # each waits for the deletion
        assert relay.pool.active == 0 and deletions == [[call.key for call in calls]]
        await media.release(calls[0])  # released already: nothing more to send
        await media.rewrite(calls[0], sdp_for(caller.port), "a")  # a later call: a batch of its own
        await media.release(calls[0])
        assert relay.pool.active == 0 and deletions[1:] == [[calls[0].key]]
    finally:
        await media.close()
        caller.close()


@pytest.fixture
def relay_requests(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every CreateSession and UpdateSession command (or call) the relays serve."""
    requests: list[Any] = []
    create, update = MediaRelayService.create, MediaRelayService.update

    async def created(self: MediaRelayService, request: Any, caller: str) -> Any:
        requests.append(request)
        return await create(self, request, caller)

    async def updated(self: MediaRelayService, request: Any) -> Any:
        requests.append(request)
        return await update(self, request)

    monkeypatch.setattr(MediaRelayService, "create", created)
    monkeypatch.setattr(MediaRelayService, "update", updated)
    return requests


async def test_each_leg_names_its_signalling_source_and_hold_keeps_the_address(
    relay_requests: list[Any], plane: tuple[ControlServer, dict[str, MediaServer]]
) -> None:
    media = RelayMedia(f"127.0.0.1:{plane[1]['x'].port}", policy=LOOPBACK)
    caller, callee = Party(), Party()
    try:
        call = outbound_call()
        await media.rewrite(call, sdp_for(caller.port), "a")
        assert relay_requests[-1].leg_a.signalling_address == "127.0.0.2"  # the INVITE's source
        call.b = Leg(("127.0.0.3", 5070), "udp")  # the gateway that answers
        await media.rewrite(call, sdp_for(callee.port), "b")
        assert relay_requests[-1].leg_b.signalling_address == "127.0.0.3"
        held = parse_sdp(
            await media.rewrite(call, sdp_for(caller.port).replace(HOST.encode(), b"0.0.0.0"), "a")
        )
        hold = relay_requests[-1]
        assert not hold.HasField("leg_a") and not hold.HasField("leg_b")  # the relay keeps the address
        assert held.media[0].direction == "sendonly" and held.connection_address == HOST
        count = len(relay_requests)
        with pytest.raises(MediaError) as refused:  # refused before the relay is asked
            await media.rewrite(call, sdp_for(caller.port).replace(HOST.encode(), b"169.254.169.254"), "a")
        assert refused.value.status == 488 and len(relay_requests) == count
    finally:
        await media.close()
        caller.close()
        callee.close()


@pytest.mark.parametrize("profile", ["RTP/SAVP", "RTP/AVP"])
async def test_optional_srtp_answers_the_pbx_in_the_profile_it_offered(
    profile: str, plane: tuple[ControlServer, dict[str, MediaServer]]
) -> None:
    """`optional` on an outbound call: the PBX's key is bridged and the answer carries the relay's
    key in the PBX's own profile (RTP/SAVP, or best-effort SRTP on RTP/AVP); the carrier gets plain RTP."""
    media = RelayMedia(f"127.0.0.1:{plane[1]['x'].port}", policy=LOOPBACK)
    caller, callee = Party(), Party()
    try:
        call = outbound_call(f"optional-{profile.replace('/', '-')}@127.0.0.2")
        call.trunk = Trunk.model_validate(
            {"metadata": {"name": "acme"}, "spec": {"media": {"srtp": "optional"}}}
        )
        key = base64.b64encode(bytes(range(30))).decode()  # 16-byte key and 14-byte salt
        offer = sdp_for(caller.port).replace(b"RTP/AVP", profile.encode())
        offer += f"a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n".encode()
        to_carrier = parse_sdp(await media.rewrite(call, offer, "a")).media[0]
        assert to_carrier.proto == "RTP/AVP" and not to_carrier.crypto
        call.b = Leg(("127.0.0.1", 5070), "udp")
        to_pbx = parse_sdp(await media.rewrite(call, sdp_for(callee.port), "b")).media[0]
        assert to_pbx.proto == profile
        [line] = to_pbx.crypto
        assert line.startswith("7 AES_CM_128_HMAC_SHA1_80 inline:") and key not in line  # the relay's own key
    finally:
        await media.close()
        caller.close()
        callee.close()
