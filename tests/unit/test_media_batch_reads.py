"""Batched reads (recvmmsg) in the media engine: what one call reads, that the batched path checks,
latches and counts as the one-packet path does, and that the loop takes it only for a socket with
packets queued. Real loopback sockets; the strict-source rules themselves run through both paths in
test_media_strict_source.py."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from multiprocessing import Pipe

import pytest

from trunkline.media import mmsg, rtp
from trunkline.media.engine import Engine, Flow, LegConfig, batch_setting
from trunkline.media.testing import HOST, rtp_packet

pytestmark = pytest.mark.skipif(not mmsg.AVAILABLE, reason="no recvmmsg in this libc")


class Party:
    def __init__(self, host: str = HOST, family: int = socket.AF_INET) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]

    def send(self, data: bytes, flow: Flow) -> None:
        self.sock.sendto(data, flow.sock.getsockname())

    def received(self, wait: float = 0.0) -> list[bytes]:
        time.sleep(wait)
        got = []
        while True:
            try:
                got.append(self.sock.recv(65536))
            except BlockingIOError:
                return got


@pytest.fixture
def parties() -> Iterator[list[Party]]:
    made: list[Party] = []
    yield made
    for party in made:
        party.sock.close()


def party(parties: list[Party], host: str = HOST, family: int = socket.AF_INET) -> Party:
    made = Party(host, family)
    parties.append(made)
    return made


@pytest.fixture
def engine() -> Iterator[Engine]:
    low = 36000 + (os.getpid() % 200) * 20
    made = Engine(HOST, low, low + 19, batch=32)
    yield made
    made.stop()


def call(engine: Engine, a: Party, b: Party, srtp_key: bytes | None = None) -> tuple[Flow, Flow]:
    engine.create("s", (LegConfig(a.address, None, srtp_key=srtp_key), LegConfig(b.address, None)), 0)
    legs = engine.sessions["s"].legs
    return legs[0].rtp, legs[1].rtp


def wait_queued(flow: Flow) -> None:
    """Until what was sent sits in the flow's socket: its receive memory (SO_MEMINFO) stops growing."""
    last = -1
    for _ in range(100):
        queued = int.from_bytes(flow.sock.getsockopt(socket.SOL_SOCKET, 55, 4), "little")
        if queued == last and queued:
            return
        last = queued
        time.sleep(0.01)


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_one_call_reads_what_is_queued_with_the_sources_recvfrom_reports(family: int, host: str) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    receiver_sock = socket.socket(family, socket.SOCK_DGRAM)
    receiver_sock.bind((host, 0))
    senders = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for sender in senders:
            sender.bind((host, 0))
        sent = [(senders[i % 3], b"datagram %d" % i + b"x" * i) for i in range(40)]
        for sender, data in sent:
            sender.sendto(data, receiver_sock.getsockname())
        receiver = mmsg.Receiver(family, 32)
        got = receiver.receive(receiver_sock.fileno())
        assert got == 32
        for i in range(got):
            sender, data = sent[i]
            assert bytes(receiver.view[i * mmsg.SLOT : i * mmsg.SLOT + receiver.size(i)]) == data
            assert receiver.source(i) == sender.getsockname()  # what recvfrom would say
        assert not receiver.all_from(senders[0].getsockname(), got)
        assert receiver.all_from(senders[0].getsockname(), 1)
        assert receiver.receive(receiver_sock.fileno()) == 8
        assert receiver.receive(receiver_sock.fileno()) == 0  # nothing queued: no exception either
    finally:
        receiver_sock.close()
        for sender in senders:
            sender.close()


def test_a_queue_relays_in_order_with_the_counters_of_single_reads(
    engine: Engine, parties: list[Party]
) -> None:
    a, b = party(parties), party(parties)
    flow, _ = call(engine, a, b)
    packets = [rtp_packet(seq, seq * 160, 7, b"p%d" % seq + b"x" * 150) for seq in range(1, 51)]
    for packet in packets:
        a.send(packet, flow)
    wait_queued(flow)
    engine.relay_batch(flow, 1.0)  # 32 of them
    assert flow.deep
    engine.relay_batch(flow, 1.0)  # the other 18
    assert b.received(0.05) == packets
    leg_a, leg_b = engine.sessions["s"].legs
    assert engine.relayed_packets == 50 and leg_b.sent_packets == 50
    assert leg_b.sent_bytes == sum(map(len, packets))
    assert (leg_a.received.packets, leg_a.received.lost, leg_a.latches) == (50, 0, 0)  # SDP address: locked
    assert flow.confirmed
    engine.relay_batch(flow, 1.0)  # nothing left: no harm
    assert not flow.deep


def test_strangers_and_garbage_in_a_batch_are_dropped_and_the_party_relayed(
    engine: Engine, parties: list[Party]
) -> None:
    a, b, stranger = party(parties), party(parties), party(parties, "127.0.0.2")
    flow, _ = call(engine, a, b)
    a.send(rtp_packet(1, 160, 7, b"first"), flow)
    engine.relay_batch(flow, 1.0)  # locks onto a
    mine = [rtp_packet(seq, seq * 160, 7, b"mine") for seq in range(2, 8)]
    for seq, packet in enumerate(mine):
        a.send(packet, flow)
        stranger.send(rtp_packet(seq, seq * 160, 9, b"theirs"), flow)
        if seq % 2:
            a.send(b"\x00garbage!!!!", flow)
    wait_queued(flow)
    engine.relay_batch(flow, 1.0)
    assert b.received(0.05)[1:] == mine
    leg = engine.sessions["s"].legs[0]
    assert (leg.dropped_source, engine.dropped_source) == (6, 6)
    assert (leg.dropped_malformed, engine.dropped_malformed) == (3, 3)
    assert engine.relayed_packets == 7 and flow.peer == (HOST, a.address[1])


def test_srtp_both_ways_through_batches(engine: Engine, parties: list[Party]) -> None:
    a, b = party(parties), party(parties)
    key_a = rtp.new_key()
    flow_a, flow_b = call(engine, a, b, srtp_key=key_a)
    relay_key = engine.sessions["s"].legs[0].relay_key
    assert relay_key is not None
    protect, unprotect = rtp.srtp_session(key_a, inbound=False), rtp.srtp_session(relay_key, inbound=True)
    from_a = [rtp_packet(seq, seq * 160, 0xA, b"a" * 160) for seq in range(1, 11)]
    for packet in from_a:
        a.send(protect.protect(packet), flow_a)
    a.send(b"\x80" + b"\x00" * 40, flow_a)  # not SRTP: dropped
    wait_queued(flow_a)
    engine.relay_batch(flow_a, 1.0)
    assert b.received(0.05) == from_a  # decrypted towards the plain party
    from_b = [rtp_packet(seq, seq * 160, 0xB, b"b" * 160) for seq in range(1, 11)]
    for packet in from_b:
        b.send(packet, flow_b)
    wait_queued(flow_b)
    engine.relay_batch(flow_b, 1.0)
    assert [unprotect.unprotect(p) for p in a.received(0.05)] == from_b  # encrypted towards A
    assert engine.sessions["s"].legs[0].dropped_srtp == 1 and engine.relayed_packets == 20


def test_the_loop_reads_a_socket_with_packets_queued_in_batches(engine: Engine, parties: list[Party]) -> None:
    a, b = party(parties), party(parties)
    flow, _ = call(engine, a, b)
    packets = [rtp_packet(seq, seq * 160, 7, b"q%d" % seq) for seq in range(1, 201)]
    for packet in packets:
        a.send(packet, flow)
    wait_queued(flow)
    batches: list[int] = []
    batched = engine.relay_batch

    def counting(flow: Flow, now: float) -> None:
        before = engine.relayed_packets
        batched(flow, now)
        batches.append(engine.relayed_packets - before)

    engine.relay_batch = counting  # type: ignore[method-assign]
    ours, theirs = Pipe()
    loop = threading.Thread(target=engine.run, args=(theirs,), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while engine.relayed_packets < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        ours.send([(1, "stop", ())])  # the pool sends a loop turn's requests as one list
        loop.join(5)
    assert b.received() == packets
    # The first read is a single one (nothing known about the socket yet); the socket is ready again
    # on the next turn, so the rest comes 32 at a time.
    assert batches[:6] == [32] * 6 and sum(batches) == 199


def test_the_batch_setting_is_a_bounded_count_or_a_clear_error() -> None:
    assert batch_setting("0") == 0 and batch_setting(" 32 ") == 32 and batch_setting("256") == 256
    for bad in ("-1", "257", "32k", ""):
        with pytest.raises(ValueError, match="TRUNKLINE_MEDIA_BATCH"):
            batch_setting(bad)
