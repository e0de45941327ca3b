"""RTP Bleed against a real `trunkline media` process: a stranger sprays clean RTP streams (one SSRC
and consecutive sequence numbers per port, what passes a probation) at the relay's whole port range
before the parties' first packet, during a 2 s silence and after an UpdateSession. Nothing of the
call reaches the stranger, nothing of the stranger's reaches the parties, and a party behind NAT is
still learned."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import grpc
import pytest

from tests.conftest import free_port
from tests.integration.test_media_relay_probes import get, metric
from tests.support.media_relay import RelayProcess
from trunkline.media.records import REPORT_INTERVAL
from trunkline.media.testing import HOST, Party, leg, rtp_packet
from trunkline.media.v1 import media_pb2, media_pb2_grpc

pytestmark = pytest.mark.integration

STRANGER_HOST = "127.0.0.2"  # another host as the relay sees it (loopback: test traffic stays local)
EVIL = b"evil"


class Stranger:
    """Sprays every port of a range with a clean RTP stream per port, and counts what comes back."""

    def __init__(self, ports: tuple[int, int], host: str = STRANGER_HOST) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.ports = range(ports[0], ports[1] + 1)
        self.seq = 0
        self.sent = 0
        self.received: list[bytes] = []

    def spray(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.seq += 1
            for port in self.ports:
                packet = rtp_packet(self.seq, self.seq * 160, 0xE000 + port, EVIL + b"x" * 156)
                try:
                    self.sock.sendto(packet, (HOST, port))
                    self.sent += 1
                except BlockingIOError:  # full buffer: that packet is lost, as on the wire
                    pass
            self._collect()

    async def spray_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.spray()
            await asyncio.sleep(0.02)

    def _collect(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(2048))
            except (BlockingIOError, ConnectionRefusedError):
                return

    def got(self) -> list[bytes]:
        self._collect()
        return self.received

    def close(self) -> None:
        self.sock.close()


@contextmanager
def parties(count: int) -> Iterator[list[Party]]:
    made = [Party() for _ in range(count)]
    try:
        yield made
    finally:
        for party in made:
            party.close()


@asynccontextmanager
async def relay_process(
    tmp_path, http_port: int
) -> AsyncIterator[tuple[RelayProcess, media_pb2_grpc.MediaRelayStub]]:
    relay = RelayProcess(tmp_path, ["--http-listen", f"127.0.0.1:{http_port}"]).start()
    try:
        async with grpc.aio.insecure_channel(relay.target) as channel:
            yield relay, media_pb2_grpc.MediaRelayStub(channel)  # type: ignore[no-untyped-call]
        assert relay.stop() == 0
    finally:
        if relay.proc and relay.proc.poll() is None:
            relay.proc.kill()


async def heard(party: Party, count: int) -> list[bytes]:
    """The payloads of `count` packets, then nothing more (generous: the machine is loaded)."""
    got = [(await party.recv(5.0))[0][12:] for _ in range(count)]
    assert await party.nothing(0.3)
    return got


async def talk(a: Party, b: Party, ports: tuple[int, int], first_seq: int, tag: bytes) -> None:
    """A and B each send 5 packets; each hears exactly the other's (the stranger's are dropped)."""
    for i in range(5):
        a.send(rtp_packet(first_seq + i, 160 * i, 0xA, b"A" + tag), ports[0])
        b.send(rtp_packet(first_seq + i, 160 * i, 0xB, b"B" + tag), ports[1])
    assert await heard(b, 5) == [b"A" + tag] * 5
    assert await heard(a, 5) == [b"B" + tag] * 5


async def dropped_for_source(http_port: int, at_least: int) -> float:
    """trunkline_media_packets_dropped_total{reason="source"} once it reaches `at_least` (the
    engines report every REPORT_INTERVAL)."""
    name = 'trunkline_media_packets_dropped_total{reason="source"}'
    deadline = time.monotonic() + REPORT_INTERVAL + 10
    while True:
        value = metric(get(http_port, "/metrics")[1], name)
        if value >= at_least or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


async def test_a_spray_before_during_a_silence_and_after_an_update_gets_nothing(tmp_path):
    http_port = free_port()
    with parties(3) as (a, b, a_moved):
        async with relay_process(tmp_path, http_port) as (relay, stub):
            stranger = Stranger(relay.ports)
            try:
                created = await stub.CreateSession(
                    media_pb2.CreateSessionRequest(session_id="call", leg_a=leg(a), leg_b=leg(b)), timeout=10
                )
                ports = (created.leg_a.rtp_port, created.leg_b.rtp_port)

                stranger.spray(rounds=8)  # before the parties' first packet: twice a probation
                await talk(a, b, ports, 1, b"first")

                silence = asyncio.ensure_future(stranger.spray_for(2.0))  # the parties say nothing
                await silence
                await talk(a, b, ports, 10, b"after-silence")

                # A re-INVITE moves A to another port: the leg learns its source again.
                await stub.UpdateSession(
                    media_pb2.UpdateSessionRequest(session_id="call", leg_a=leg(a_moved)), timeout=10
                )
                stranger.spray(rounds=8)
                await talk(a_moved, b, ports, 20, b"moved")
                a.send(rtp_packet(99, 0, 0xA, b"old-address"), ports[0])  # A's old port is a stranger now
                assert await b.nothing()

                assert stranger.got() == []  # nothing of the call reached the stranger
                stats = (
                    await stub.GetSessionStats(
                        media_pb2.GetSessionStatsRequest(session_id="call"), timeout=10
                    )
                ).stats
                assert (
                    stats.leg_a.rtp_peer == f"{HOST}:{a_moved.port}"
                    and stats.leg_b.rtp_peer == f"{HOST}:{b.port}"
                )
                dropped = stats.leg_a.dropped_unexpected_source + stats.leg_b.dropped_unexpected_source
                assert dropped >= 8 * 2 * 2  # at least both legs, the sprays before and after the update
                assert await dropped_for_source(http_port, dropped) >= dropped  # on /metrics
            finally:
                stranger.close()


async def test_a_party_behind_nat_is_learned_while_a_stranger_sprays(tmp_path):
    """One-way audio behind NAT: A's SDP names one port, A sends from another (the NAT's). Its clean
    stream from the SDP's host passes the probation; the stranger on another host never can."""
    with parties(3) as (a_sdp, a_real, b):
        async with relay_process(tmp_path, free_port()) as (relay, stub):
            stranger = Stranger(relay.ports)
            try:
                created = await stub.CreateSession(
                    media_pb2.CreateSessionRequest(session_id="nat", leg_a=leg(a_sdp), leg_b=leg(b)),
                    timeout=10,
                )
                ports = (created.leg_a.rtp_port, created.leg_b.rtp_port)
                spraying = asyncio.ensure_future(stranger.spray_for(1.0))
                for seq in range(10):
                    a_real.send(rtp_packet(seq, seq * 160, 0xA, b"A%d" % seq), ports[0])
                    await asyncio.sleep(0.02)
                await spraying
                # The first 3 are the probation; the 4th on are A's.
                assert await heard(b, 7) == [b"A%d" % seq for seq in range(3, 10)]
                b.send(rtp_packet(1, 0, 0xB, b"to-a"), ports[1])
                assert (await a_real.recv(5.0))[0].endswith(b"to-a")  # to where A really is
                assert await a_sdp.nothing() and stranger.got() == []
            finally:
                stranger.close()


async def test_the_signalling_host_names_who_may_be_learned(tmp_path):
    """No SDP address yet (a late offer): only the host the party's SIP came from may pass the
    probation. Without it any host could, and the stranger's clean stream would be learned."""
    with parties(2) as (a, b):
        async with relay_process(tmp_path, free_port()) as (relay, stub):
            stranger = Stranger(relay.ports)
            try:
                for session_id, signalling in (("known", HOST), ("unknown", "")):
                    spec_a = media_pb2.LegSpec(signalling_address=signalling)
                    created = await stub.CreateSession(
                        media_pb2.CreateSessionRequest(session_id=session_id, leg_a=spec_a, leg_b=leg(b)),
                        timeout=10,
                    )
                    port_a = created.leg_a.rtp_port
                    stranger.spray(rounds=5)
                    for seq in range(5):
                        a.send(rtp_packet(seq, seq * 160, 0xA, b"A"), port_a)
                    got = [(await b.recv(5.0))[0] for _ in range(2)]
                    stats = (
                        await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id=session_id))
                    ).stats
                    if signalling:  # A's 4th and 5th; the stranger never
                        assert all(p.endswith(b"A") for p in got) and await b.nothing()
                        assert stats.leg_a.rtp_peer == f"{HOST}:{a.port}"
                    else:  # the stranger's clean stream came first: what the signalling host prevents
                        assert any(p[12:].startswith(EVIL) for p in got)
                        assert stats.leg_a.rtp_peer.startswith(STRANGER_HOST)
                    await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id=session_id))
                    while True:  # what is left in B's queue
                        try:
                            await b.recv(0.3)
                        except TimeoutError:
                            break
            finally:
                stranger.close()


async def test_the_relay_process_refuses_addresses_its_flags_deny(tmp_path):
    """`trunkline media --media-deny-cidr` (on loopback, loopback parties are allowed otherwise) and
    the inactivity timeout floor, over gRPC with a message each."""
    relay = RelayProcess(
        tmp_path, ["--media-deny-cidr", "127.0.0.0/30", "--min-inactivity-timeout", "5"]
    ).start()
    try:
        async with grpc.aio.insecure_channel(relay.target) as channel:
            stub = media_pb2_grpc.MediaRelayStub(channel)  # type: ignore[no-untyped-call]
            denied = media_pb2.LegSpec(remote_address="127.0.0.1", remote_rtp_port=4000)
            allowed = media_pb2.LegSpec(remote_address="127.0.0.5", remote_rtp_port=4000)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreateSession(
                    media_pb2.CreateSessionRequest(session_id="s", leg_a=denied), timeout=10
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (
                info.value.details()
                == "leg_a.remote_address: 127.0.0.1 is in the denied network 127.0.0.0/30"
            )
            never = media_pb2.CreateSessionRequest(session_id="s", leg_a=allowed)
            never.inactivity_timeout.seconds = 0
            never.inactivity_timeout.nanos = 0
            never.inactivity_timeout.SetInParent()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreateSession(never, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            await stub.CreateSession(
                media_pb2.CreateSessionRequest(session_id="s", leg_a=allowed), timeout=10
            )
        assert relay.stop() == 0
        # Logged once: the second INVALID_ARGUMENT of this caller within a minute is not.
        assert relay.output().count("CreateSession from 127.0.0.1 refused: INVALID_ARGUMENT") == 1
    finally:
        if relay.proc and relay.proc.poll() is None:
            relay.proc.kill()
