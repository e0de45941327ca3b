"""Real sockets: two parties on 127.0.0.1 send RTP through a relay session."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pylibsrtp
import pytest
from google.protobuf import duration_pb2

from trunkline.media import rtp
from trunkline.media.testing import HOST, Party, leg, pcmu_stream, relay, rtp_packet
from trunkline.media.v1 import media_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def parties():
    a, b = Party(), Party()
    yield a, b
    a.close()
    b.close()


async def create(stub, session_id, spec_a, spec_b, timeout=None):
    request = media_pb2.CreateSessionRequest(session_id=session_id, leg_a=spec_a, leg_b=spec_b)
    if timeout is not None:
        request.inactivity_timeout.CopyFrom(duration_pb2.Duration(nanos=int(timeout * 1e9)))
    return await stub.CreateSession(request)


async def exchange(a: Party, b: Party, ports, count=50):
    """A and B each send `count` PCMU packets (faster than real time); returns what each received."""
    from_a, from_b = pcmu_stream(count, 0x1111, seed=1), pcmu_stream(count, 0x2222, seed=2)
    got_b, got_a = [], []
    for pa, pb in zip(from_a, from_b, strict=True):
        a.send(pa, ports[0])
        b.send(pb, ports[1])
        got_b.append((await b.recv())[0])
        got_a.append((await a.recv())[0])
    return from_a, from_b, got_a, got_b


@pytest.mark.parametrize("workers", [0, 1])
async def test_pcmu_both_ways_payloads_unchanged_and_in_order(parties, workers):
    a, b = parties
    async with relay(workers=workers) as (_server, stub):
        created = await create(stub, "call-1", leg(a), leg(b))
        ports = (created.leg_a.rtp_port, created.leg_b.rtp_port)
        assert created.leg_a.address == HOST and created.leg_a.rtcp_port == ports[0] + 1
        from_a, from_b, got_a, got_b = await exchange(a, b, ports)
        assert got_b == from_a and got_a == from_b  # whole packets: header and payload unchanged
        stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="call-1"))).stats
        assert stats.leg_a.received.packets == 50 and stats.leg_a.received.bytes == 50 * 172
        assert stats.leg_a.received.lost == 0 and stats.leg_b.sent.packets == 50
        assert stats.leg_b.received.packets == 50 and stats.leg_a.sent.packets == 50
        assert stats.leg_a.rtp_peer == f"{HOST}:{a.port}"


async def test_relay_sends_from_its_own_ports_and_rtcp_goes_to_rtcp(parties):
    a, b = parties
    rtcp_a, rtcp_b = Party(), Party()
    async with relay() as (_, stub):
        spec_a = media_pb2.LegSpec(remote_address=HOST, remote_rtp_port=a.port, remote_rtcp_port=rtcp_a.port)
        spec_b = media_pb2.LegSpec(remote_address=HOST, remote_rtp_port=b.port, remote_rtcp_port=rtcp_b.port)
        created = await create(stub, "rtcp", spec_a, spec_b)
        a.send(rtp_packet(1, 0, 5, b"x" * 160), created.leg_a.rtp_port)
        _, source = await b.recv()
        assert source == (HOST, created.leg_b.rtp_port)  # B sees only the relay's B-side port
        sender_report = bytes([0x80, 200, 0, 6]) + (5).to_bytes(4, "big") + b"\0" * 20
        rtcp_a.send(sender_report, created.leg_a.rtcp_port)
        data, source = await rtcp_b.recv()
        assert data == sender_report and source == (HOST, created.leg_b.rtcp_port)
    rtcp_a.close()
    rtcp_b.close()


async def test_rtcp_mux_leg(parties):
    a, b = parties
    async with relay() as (_, stub):
        created = await create(stub, "mux", leg(a, rtcp_mux=True), leg(b))
        assert created.leg_a.rtcp_port == created.leg_a.rtp_port
        receiver_report = bytes([0x80, 201, 0, 1]) + (7).to_bytes(4, "big")
        b_rtcp = Party()
        await stub.UpdateSession(
            media_pb2.UpdateSessionRequest(
                session_id="mux",
                leg_b=media_pb2.LegSpec(
                    remote_address=HOST, remote_rtp_port=b.port, remote_rtcp_port=b_rtcp.port
                ),
            )
        )
        a.send(receiver_report, created.leg_a.rtp_port)  # RTCP on A's single port goes to B's RTCP port
        assert (await b_rtcp.recv())[0] == receiver_report
        b_rtcp.send(receiver_report, created.leg_b.rtcp_port)  # and back onto A's muxed port
        assert (await a.recv())[0] == receiver_report
        b_rtcp.close()


async def test_symmetric_latching_onto_the_real_source(parties):
    a, b = parties
    behind_nat = Party()  # A's SDP names a.port, but A really sends from another port
    async with relay() as (_, stub):
        created = await create(stub, "nat", leg(a), leg(b))
        ports = (created.leg_a.rtp_port, created.leg_b.rtp_port)
        b.send(rtp_packet(1, 0, 2, b"early"), ports[1])
        assert (await a.recv())[0].endswith(b"early")  # before A speaks: to the SDP address
        # Not the SDP's address: a probation of 4 packets in a row (one SSRC, consecutive sequence
        # numbers) from the SDP's host; the 4th is the first relayed.
        for seq in range(1, 5):
            behind_nat.send(rtp_packet(seq, seq * 160, 1, b"hello%d" % seq), ports[0])
        assert (await b.recv())[0].endswith(b"hello4") and await b.nothing()
        b.send(rtp_packet(2, 160, 2, b"back"), ports[1])
        assert (await behind_nat.recv())[0].endswith(b"back")  # latched: to where A really is
        assert await a.nothing()
        stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="nat"))).stats
        assert stats.leg_a.latches == 1 and stats.leg_a.rtp_peer == f"{HOST}:{behind_nat.port}"
        assert stats.leg_a.dropped_unexpected_source == 3
    behind_nat.close()


async def test_hijack_from_a_stranger_is_dropped_and_counted(parties):
    a, b = parties
    stranger = Party()
    async with relay() as (_, stub):
        created = await create(stub, "hijack", leg(a), leg(b))
        ports = (created.leg_a.rtp_port, created.leg_b.rtp_port)
        a.send(rtp_packet(1, 0, 1, b"real"), ports[0])
        assert (await b.recv())[0].endswith(b"real")
        for seq in range(20):  # a burst with one SSRC, while A is still talking
            stranger.send(rtp_packet(100 + seq, seq * 160, 0x66, b"evil"), ports[0])
            if seq % 5 == 0:
                a.send(rtp_packet(2 + seq, 160 * (seq + 1), 1, b"real"), ports[0])
        received = [(await b.recv())[0] for _ in range(4)]
        assert all(p.endswith(b"real") for p in received)
        assert await b.nothing()
        b.send(rtp_packet(1, 0, 2, b"to-a"), ports[1])
        assert (await a.recv())[0].endswith(b"to-a") and await stranger.nothing()
        stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="hijack"))).stats
        assert stats.leg_a.dropped_unexpected_source == 20 and stats.leg_a.latches == 0
    stranger.close()


async def test_no_relatch_after_the_party_went_silent(parties):
    """RTP Bleed: a source that waits for a pause and then sends a clean stream gets nothing."""
    a, b = parties
    moved = Party()
    async with relay() as (_server, stub):
        created = await create(stub, "moved", leg(a), leg(b))
        ports = (created.leg_a.rtp_port, created.leg_b.rtp_port)
        a.send(rtp_packet(1, 0, 1, b"old"), ports[0])
        await b.recv()
        await asyncio.sleep(1.5)  # a pause in A's audio (the old relay re-latched after 1 s)
        for seq in range(20):
            moved.send(rtp_packet(2 + seq, 160 * seq, 1, b"new"), ports[0])
        b.send(rtp_packet(1, 0, 2, b"to-a"), ports[1])
        assert (await a.recv())[0].endswith(b"to-a")  # still to A
        assert await b.nothing() and await moved.nothing()
        a.send(rtp_packet(2, 160, 1, b"still-a"), ports[0])
        assert (await b.recv())[0].endswith(b"still-a")
        stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="moved"))).stats
        assert stats.leg_a.dropped_unexpected_source == 20 and stats.leg_a.latches == 0
    moved.close()


def srtp_pair(key: bytes) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    return rtp.srtp_session(key, inbound=False), rtp.srtp_session(key, inbound=True)


async def test_srtp_leg_bridged_to_plain_leg(parties):
    a, b = parties  # A speaks SRTP (SDES), B plain RTP
    key_a = rtp.new_key()
    crypto = media_pb2.Crypto(suite=rtp.SRTP_SUITE, key=rtp.encode_key(key_a))
    async with relay() as (_, stub):
        created = await create(stub, "srtp", leg(a, crypto=crypto), leg(b))
        assert created.leg_a.crypto.suite == rtp.SRTP_SUITE and not created.leg_b.HasField("crypto")
        relay_key = rtp.decode_key(created.leg_a.crypto.key)
        assert relay_key != key_a
        a_protect, _ = srtp_pair(key_a)
        _, a_unprotect = srtp_pair(relay_key)
        ports = (created.leg_a.rtp_port, created.leg_b.rtp_port)
        from_a, from_b = pcmu_stream(20, 0xA, seed=3), pcmu_stream(20, 0xB, seed=4)
        for pa, pb in zip(from_a, from_b, strict=True):
            a.send(a_protect.protect(pa), ports[0])
            assert (await b.recv())[0] == pa  # decrypted for B
            b.send(pb, ports[1])
            encrypted = (await a.recv())[0]
            assert (
                encrypted != pb and a_unprotect.unprotect(encrypted) == pb
            )  # encrypted for A with the relay's key
        # Forged SRTP (right header, wrong key) is dropped and counted; so is plain RTP on the SRTP leg.
        forged, _ = srtp_pair(rtp.new_key())
        a.send(forged.protect(rtp_packet(500, 0, 0xA, b"f" * 160)), ports[0])
        a.send(rtp_packet(501, 0, 0xA, b"p" * 160), ports[0])
        assert await b.nothing()
        stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="srtp"))).stats
        assert stats.leg_a.dropped_srtp == 2 and stats.leg_a.received.packets == 20


async def test_srtp_stranger_cannot_latch_before_the_party(parties):
    a, b = parties
    key_a = rtp.new_key()
    stranger = Party()
    async with relay() as (_, stub):
        crypto = media_pb2.Crypto(suite=rtp.SRTP_SUITE, key=rtp.encode_key(key_a))
        created = await create(stub, "srtp-latch", leg(a, crypto=crypto), leg(b))
        stranger.send(rtp_packet(1, 0, 9, b"x" * 160), created.leg_a.rtp_port)  # not authentic: no latch
        protect, _ = srtp_pair(key_a)
        a.send(protect.protect(rtp_packet(1, 0, 1, b"y" * 160)), created.leg_a.rtp_port)
        assert (await b.recv())[0].endswith(b"y" * 160)
        stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="srtp-latch"))).stats
        assert stats.leg_a.rtp_peer == f"{HOST}:{a.port}" and stats.leg_a.dropped_srtp == 1
    stranger.close()


async def test_srtp_offered_to_a_party_before_its_key_is_known(parties):
    a, b = parties  # A plain (the carrier), B is offered SRTP (a PBX on an inbound call)
    async with relay() as (_, stub):
        created = await create(stub, "offer", leg(a), media_pb2.LegSpec(want_srtp=True))
        assert created.leg_b.crypto.suite == rtp.SRTP_SUITE and not created.leg_a.HasField("crypto")
        relay_key = rtp.decode_key(created.leg_b.crypto.key)
        key_b = rtp.new_key()  # B's answer: its address and its own key
        crypto_b = media_pb2.Crypto(suite=rtp.SRTP_SUITE, key=rtp.encode_key(key_b))
        b_protect, _ = srtp_pair(key_b)
        early = b_protect.protect(rtp_packet(1, 0, 0xB, b"e" * 160))
        b.send(early, created.leg_b.rtp_port)  # before the answer: B's key is unknown, nothing gets through
        assert await a.nothing()
        updated = await stub.UpdateSession(
            media_pb2.UpdateSessionRequest(session_id="offer", leg_b=leg(b, crypto=crypto_b))
        )
        assert updated.leg_b.crypto.key == created.leg_b.crypto.key  # the key offered stays
        _, b_unprotect = srtp_pair(relay_key)
        ports = (created.leg_a.rtp_port, created.leg_b.rtp_port)
        from_a, from_b = pcmu_stream(20, 0xA, seed=5), pcmu_stream(20, 0xB, seed=6)
        for pa, pb in zip(from_a, from_b, strict=True):
            a.send(pa, ports[0])
            assert b_unprotect.unprotect((await b.recv())[0]) == pa  # encrypted for B with the offered key
            b.send(b_protect.protect(pb), ports[1])
            assert (await a.recv())[0] == pb  # decrypted for A
        stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="offer"))).stats
        assert stats.leg_b.dropped_srtp == 1 and stats.leg_b.received.packets == 20


async def test_dtmf_events_pass_unchanged(parties):
    a, b = parties
    async with relay() as (_, stub):
        created = await create(stub, "dtmf", leg(a), leg(b))

        # RFC 4733 event '5', volume 10, growing duration, end bit on the last three (sent three times).
        def event(i: int) -> bytes:
            return bytes([5, (0x80 if i >= 3 else 0) | 10]) + (160 * (i + 1)).to_bytes(2, "big")

        events = [rtp_packet(10 + i, 8000, 0x1, event(i), pt=101, marker=i == 0) for i in range(6)]
        for event in events:
            a.send(event, created.leg_a.rtp_port)
        assert await b.recv_all(6) == events


async def test_garbage_and_short_packets_are_counted_and_dropped(parties):
    a, b = parties
    async with relay() as (_, stub):
        created = await create(stub, "garbage", leg(a), leg(b))
        port = created.leg_a.rtp_port
        for junk in [b"", b"\x80", b"\x80\x00\x00", b"\x00" * 40, b"\xff" * 200, b"\x80" * 11]:
            a.send(junk, port)
        a.send(b"\x00" * 4, created.leg_a.rtcp_port)
        a.send(rtp_packet(1, 0, 1, b"ok"), port)  # the relay is still fine
        assert (await b.recv())[0].endswith(b"ok")
        assert await b.nothing()
        stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="garbage"))).stats
        assert stats.leg_a.dropped_malformed == 7 and stats.leg_a.received.packets == 1


async def test_inactivity_timeout_emits_an_event_and_frees_the_ports(parties):
    a, b = parties
    async with relay() as (server, stub):
        events = stub.WatchEvents(media_pb2.WatchEventsRequest())
        created = await create(stub, "idle", leg(a), leg(b), timeout=0.6)
        assert server.pool.active == 1
        event = await asyncio.wait_for(events.read(), 5)
        assert event.kind == media_pb2.SessionEvent.INACTIVITY_TIMEOUT and event.session_id == "idle"
        assert server.pool.active == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, created.leg_a.rtp_port))  # the relay closed it
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="idle"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        events.cancel()


async def test_a_ringing_call_has_no_inactivity_until_its_answer_arrives(parties):
    a, b = parties
    async with relay() as (server, stub):
        events = stub.WatchEvents(media_pb2.WatchEventsRequest())
        await create(stub, "ringing", leg(a), None, timeout=0.4)  # the offer only: the callee rings
        await asyncio.sleep(1.2)  # three timeouts without a packet, and nobody to hear one
        assert server.pool.active == 1
        answered = asyncio.get_running_loop().time()
        await stub.UpdateSession(media_pb2.UpdateSessionRequest(session_id="ringing", leg_b=leg(b)))
        event = await asyncio.wait_for(events.read(), 5)  # now silence counts
        assert event.kind == media_pb2.SessionEvent.INACTIVITY_TIMEOUT and event.session_id == "ringing"
        assert 0.35 < asyncio.get_running_loop().time() - answered < 2.5
        events.cancel()


async def test_ports_return_to_the_pool_after_delete(parties):
    a, b = parties
    async with relay(ports=8) as (_server, stub):  # 4 pairs: exactly two calls
        first = await create(stub, "one", leg(a), leg(b))
        await create(stub, "two", leg(a), leg(b))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await create(stub, "three", leg(a), leg(b))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        deleted = await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id="one"))
        assert deleted.stats.HasField("leg_a")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, first.leg_a.rtp_port))
        third = await create(stub, "three", leg(a), leg(b))
        assert {third.leg_a.rtp_port, third.leg_b.rtp_port} == {first.leg_a.rtp_port, first.leg_b.rtp_port}


async def test_shutdown_frees_ports_and_reports_sessions(parties):
    a, b = parties
    async with relay() as (server, stub):
        events = stub.WatchEvents(media_pb2.WatchEventsRequest())
        created = await create(stub, "live", leg(a), leg(b))
        await server.stop(0)
        event = await asyncio.wait_for(events.read(), 5)
        assert event.kind == media_pb2.SessionEvent.SHUTDOWN and event.session_id == "live"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, created.leg_b.rtp_port))


async def test_passes_over_many_sessions_report_and_time_out_every_one(parties):
    """The report and the inactivity sweep visit sessions a slice per loop turn (PASS_SLICE): with
    several slices' worth of sessions, each is still reported and timed out, and packets flow meanwhile."""
    from trunkline.media.engine import PASS_SLICE

    a, b = parties
    count = PASS_SLICE * 2 + 7
    async with relay(ports=count * 4 + 8) as (server, stub):
        events = stub.WatchEvents(media_pb2.WatchEventsRequest())
        created = [await create(stub, f"s{i}", leg(a), leg(b), timeout=1.0) for i in range(count)]
        last = created[-1]
        _, _, got_a, got_b = await exchange(a, b, (last.leg_a.rtp_port, last.leg_b.rtp_port), count=20)
        assert len(got_a) == len(got_b) == 20
        report = await server.pool.report()
        assert set(report.active) == {f"s{count - 1}"}  # the only session with packets
        assert report.relayed_packets == 40 and report.dropped_packets == 0
        timed_out = set()
        while len(timed_out) < count:
            event = await asyncio.wait_for(events.read(), 5)
            assert event.kind == media_pb2.SessionEvent.INACTIVITY_TIMEOUT
            timed_out.add(event.session_id)
        assert timed_out == {f"s{i}" for i in range(count)} and server.pool.active == 0
        assert (await server.pool.report()).relayed_packets == 40  # totals outlive their sessions
        events.cancel()


async def test_delete_sessions_ends_several_and_names_the_unknown(parties):
    a, b = parties
    async with relay() as (server, stub):
        first = await create(stub, "one", leg(a), leg(b))
        await create(stub, "two", leg(a), leg(b))
        await create(stub, "three", leg(a), leg(b))
        await exchange(a, b, (first.leg_a.rtp_port, first.leg_b.rtp_port), count=3)
        answer = await stub.DeleteSessions(
            media_pb2.DeleteSessionsRequest(session_ids=["one", "gone", "two", "one"])
        )
        assert set(answer.stats) == {"one", "two"} and list(answer.not_found) == ["gone"]
        assert answer.stats["one"].leg_a.received.packets == 3
        assert answer.stats["two"].leg_a.received.packets == 0
        assert server.pool.active == 1  # "three" runs on
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, first.leg_a.rtp_port))  # its ports are back in the pool
