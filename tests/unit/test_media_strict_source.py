"""Strict media source: how a leg learns its party's address, driven through the engine's real packet
path (loopback sockets, one `relay` call per packet, no threads)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from trunkline.media.engine import MAX_CANDIDATES, Engine, Flow, LegConfig, trusted_hosts
from trunkline.media.testing import HOST, rtp_packet

OTHER_HOST = "127.0.0.2"  # a different host as the relay sees it


class Sender:
    def __init__(self, host: str = HOST) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return host, port

    def received(self) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(self.sock.recv(2048))
            except BlockingIOError:
                return got


@pytest.fixture(params=["relay", "relay_batch"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each rule through both packet paths: one read per packet, and recvmmsg (a socket with packets
    queued; here it finds the one just sent)."""
    low = 30000 + (os.getpid() % 200) * 20
    made = Engine(HOST, low, low + 19, batch=32)
    if request.param == "relay_batch":
        made.relay = made.relay_batch  # type: ignore[method-assign]
    yield made
    made.stop()


@pytest.fixture
def senders() -> Iterator[list[Sender]]:
    made: list[Sender] = []
    yield made
    for sender in made:
        sender.sock.close()


def sender(senders: list[Sender], host: str = HOST) -> Sender:
    made = Sender(host)
    senders.append(made)
    return made


def send(engine: Engine, flow: Flow, who: Sender, seq: int, ssrc: int = 7, rtcp: bool = False) -> None:
    """`who` sends one packet to `flow`'s port and the engine handles it."""
    if rtcp:
        packet = bytes([0x80, 200, 0, 6]) + ssrc.to_bytes(4, "big") + b"\0" * 20
    else:
        packet = rtp_packet(seq, seq * 160, ssrc, b"p%d" % seq)
    who.sock.sendto(packet, flow.sock.getsockname())
    engine.relay(flow, 0.0)


def config(at: Sender | tuple[str, int] | None, signalling: str | None = None) -> LegConfig:
    address = at.address if isinstance(at, Sender) else at
    rtcp = (address[0], address[1] + 1) if address else None
    return LegConfig(address, rtcp, signalling_host=signalling)


def test_the_sdp_address_locks_at_once_and_nobody_else_gets_in(engine, senders):
    a, b, other = sender(senders), sender(senders), sender(senders)
    engine.create("s", (config(a), config(b)), 0)
    leg_a = engine.sessions["s"].legs[0]
    send(engine, leg_a.rtp, a, 1)
    assert leg_a.rtp.confirmed and b.received() == [rtp_packet(1, 160, 7, b"p1")]
    for seq in range(2, 30):  # a clean stream from the SDP's host: too late
        send(engine, leg_a.rtp, other, seq, ssrc=9)
    assert b.received() == [] and leg_a.dropped_source == 28 and engine.dropped_source == 28
    assert leg_a.latches == 0 and leg_a.rtp.peer == a.address


def test_another_source_on_the_sdp_host_passes_a_probation(engine, senders):
    a_sdp, a_nat, b = sender(senders), sender(senders), sender(senders)
    engine.create("s", (config(a_sdp), config(b)), 0)
    flow = engine.sessions["s"].legs[0].rtp
    send(engine, flow, a_nat, 1)
    send(engine, flow, a_nat, 2)
    send(engine, flow, a_nat, 4)  # a gap: starts again
    send(engine, flow, a_nat, 5)
    send(engine, flow, a_nat, 6, ssrc=8)  # another SSRC: starts again
    send(engine, flow, a_nat, 7, ssrc=8)
    send(engine, flow, a_nat, 8, ssrc=8)
    assert b.received() == [] and not flow.confirmed and flow.leg.dropped_source == 7
    send(engine, flow, a_nat, 9, ssrc=8)  # the 4th in a row
    assert b.received() == [rtp_packet(9, 9 * 160, 8, b"p9")]
    assert flow.confirmed and flow.peer == a_nat.address and flow.leg.latches == 1
    send(engine, flow, a_sdp, 10)  # even the SDP's address is a stranger now
    assert b.received() == [] and flow.peer == a_nat.address


def test_a_source_on_another_host_never_passes(engine, senders):
    a, b, stranger = sender(senders), sender(senders), sender(senders, OTHER_HOST)
    engine.create("s", (config(a), config(b)), 0)
    flow = engine.sessions["s"].legs[0].rtp
    for seq in range(20):
        send(engine, flow, stranger, seq)
    assert b.received() == [] and not flow.confirmed and flow.candidates == {}
    send(engine, flow, a, 1)
    assert len(b.received()) == 1 and flow.peer == a.address


def test_with_no_trusted_host_any_host_may_pass_and_the_signalling_host_narrows_it(engine, senders):
    b, stranger, party = sender(senders), sender(senders, OTHER_HOST), sender(senders)
    # A NATed SDP address says nothing about the source (the relay never sends there in this test).
    engine.create("open", (config(("192.168.1.10", 4000)), config(b)), 0)
    engine.create("narrow", (config(("192.168.1.10", 4000), signalling=HOST), config(b)), 0)
    open_, narrow = engine.sessions["open"].legs[0].rtp, engine.sessions["narrow"].legs[0].rtp
    for seq in range(4):
        send(engine, open_, stranger, seq)
        send(engine, narrow, stranger, seq)
    assert open_.confirmed and open_.peer == stranger.address  # what the edge's signalling IP prevents
    assert not narrow.confirmed
    for seq in range(4):
        send(engine, narrow, party, seq)
    assert narrow.confirmed and narrow.peer == party.address


def test_an_update_relearns_only_when_the_address_or_signalling_host_changes(engine, senders):
    a, a_moved, b = sender(senders), sender(senders), sender(senders)
    engine.create("s", (config(a), config(b)), 0)
    flow = engine.sessions["s"].legs[0].rtp
    send(engine, flow, a, 1)
    engine.update("s", (config(a), None))  # a re-INVITE for a codec: the lock stays
    assert flow.confirmed and flow.peer == a.address
    engine.update("s", (config(a, signalling="127.0.0.3"), None))  # the signalling host changed: relearn
    assert not flow.confirmed
    send(engine, flow, a, 2)
    engine.update("s", (config(a_moved, signalling="127.0.0.3"), None))  # moved: relearn from the new SDP
    assert not flow.confirmed and flow.peer == a_moved.address
    b.received()
    send(engine, flow, a, 3)  # the old address gets nothing
    assert b.received() == []
    send(engine, flow, a_moved, 4)
    assert len(b.received()) == 1 and flow.confirmed


def test_rtcp_follows_the_rtp_lock_host(engine, senders):
    a_sdp, a_nat, b, stranger = sender(senders), sender(senders), sender(senders), sender(senders, OTHER_HOST)
    engine.create("s", (config(a_sdp), config(b)), 0)
    leg = engine.sessions["s"].legs[0]
    send(engine, leg.rtcp, a_nat, 0, rtcp=True)  # RTP not learned yet: not even the SDP's host
    assert not leg.rtcp.confirmed
    for seq in range(4):
        send(engine, leg.rtp, a_nat, seq)
    send(engine, leg.rtcp, stranger, 0, rtcp=True)
    assert not leg.rtcp.confirmed
    send(engine, leg.rtcp, a_nat, 0, rtcp=True)  # any port of the RTP lock's host
    assert leg.rtcp.confirmed and leg.rtcp.peer == a_nat.address


def test_muxed_rtcp_does_not_count_towards_the_probation(engine, senders):
    a_sdp, a_nat, b = sender(senders), sender(senders), sender(senders)
    engine.create("s", (LegConfig(a_sdp.address, None, rtcp_mux=True), config(b)), 0)
    flow = engine.sessions["s"].legs[0].rtp
    for _ in range(10):
        send(engine, flow, a_nat, 0, rtcp=True)
    assert not flow.confirmed


def test_a_spray_of_sources_keeps_the_candidates_bounded(engine, senders):
    a, b = sender(senders), sender(senders)
    engine.create("s", (config(a), config(b)), 0)
    flow = engine.sessions["s"].legs[0].rtp
    for n in range(3 * MAX_CANDIDATES):
        send(engine, flow, sender(senders), n)
        assert len(flow.candidates) <= MAX_CANDIDATES
    assert not flow.confirmed


def test_trusted_hosts() -> None:
    inet, inet6 = socket.AF_INET, socket.AF_INET6
    assert trusted_hosts(inet, LegConfig(("203.0.113.5", 4000), None)) == {"203.0.113.5"}
    assert trusted_hosts(inet, LegConfig(("10.1.2.3", 4000), None)) == set()  # NATed
    assert trusted_hosts(inet, LegConfig(("100.64.0.9", 4000), None, signalling_host="198.51.100.1")) == {
        "198.51.100.1"
    }
    assert trusted_hosts(inet6, LegConfig(("203.0.113.5", 4000), None)) == {"::ffff:203.0.113.5"}
    assert trusted_hosts(inet, LegConfig(None, None)) == set()
