"""Receive statistics (RFC 3550 A.3 loss, A.8 jitter), keys, port slices and addresses."""

from __future__ import annotations

import socket

import pytest

from trunkline.media import rtp
from trunkline.media.engine import PortPool, sockaddr
from trunkline.media.errors import InvalidRequest, PortsExhausted
from trunkline.media.pool import split_ports
from trunkline.media.testing import rtp_packet


def feed(stats: rtp.ReceiveStats, seq: int, ts: int, arrival: float, ssrc: int = 1) -> None:
    packet = rtp_packet(seq, ts, ssrc, b"\0" * 160)
    stats.on_rtp(memoryview(packet), len(packet), arrival)


def test_no_loss_no_jitter_for_a_perfect_stream():
    stats = rtp.ReceiveStats(8000)
    for i in range(100):
        feed(stats, 1000 + i, 160 * i, 10.0 + 0.02 * i)
    assert (stats.packets, stats.bytes, stats.lost) == (100, 17200, 0)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_loss_counts_gaps_across_the_sequence_wrap():
    stats = rtp.ReceiveStats(8000)
    seqs = [65530, 65531, 65533, 65535, 0, 1, 4, 5]  # missing: 65532, 65534, 2, 3
    for i, seq in enumerate(seqs):
        feed(stats, seq, 160 * i, 0.02 * i)
    assert stats.lost == 4


def test_late_and_duplicate_packets():
    stats = rtp.ReceiveStats(8000)
    for i, seq in enumerate([1, 2, 4, 3, 4]):  # 3 late (not lost), 4 twice (one extra)
        feed(stats, seq, 160 * i, 0.02 * i)
    assert stats.lost == -1  # RFC 3550: duplicates make the cumulative loss negative


def test_jitter_follows_rfc3550_a8():
    stats = rtp.ReceiveStats(8000)
    arrivals = [0.0, 0.025, 0.040, 0.065]  # 20 ms packets arriving 5 ms early/late alternately
    expected = 0.0
    for i, arrival in enumerate(arrivals):
        feed(stats, i, 160 * i, arrival)
        if i:
            d = abs((arrival - arrivals[i - 1]) * 8000 - 160)
            expected += (d - expected) / 16
    assert stats.jitter_ms == pytest.approx(expected / 8, rel=1e-6)


def test_repeated_timestamps_do_not_count_as_jitter():
    stats = rtp.ReceiveStats(8000)
    for i in range(6):  # one DTMF event: six packets, one timestamp
        feed(stats, i, 8000, 0.05 * i)
    assert stats.jitter_ms == 0.0 and stats.lost == 0


def test_a_new_ssrc_starts_a_new_sequence_space():
    stats = rtp.ReceiveStats(8000)
    feed(stats, 10, 0, 0.0, ssrc=1)
    feed(stats, 12, 160, 0.02, ssrc=1)  # one lost
    feed(stats, 5000, 0, 0.04, ssrc=2)
    feed(stats, 5001, 160, 0.06, ssrc=2)
    assert stats.lost == 1


def test_keys():
    key = rtp.new_key()
    assert rtp.decode_key(rtp.encode_key(key)) == key
    with pytest.raises(ValueError, match="30 bytes"):
        rtp.decode_key(rtp.encode_key(b"short"))
    with pytest.raises(ValueError, match="base64"):
        rtp.decode_key("not base64!")


def test_split_ports_into_whole_pairs():
    assert split_ports(20000, 20999, 2) == [(20000, 20499), (20500, 20999)]
    assert split_ports(20001, 20010, 1) == [(20002, 20009)]
    with pytest.raises(ValueError, match="too few"):
        split_ports(20000, 20003, 2)


def even_port_socket() -> socket.socket:
    """A UDP socket bound on an even loopback port (the start of an RTP/RTCP pair)."""
    for _ in range(200):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        if sock.getsockname()[1] % 2 == 0:
            return sock
        sock.close()
    raise AssertionError("no even port in 200 tries")


def test_port_pool_skips_busy_pairs_and_reuses_late():
    with even_port_socket() as busy:
        port = busy.getsockname()[1]
        pool = PortPool("127.0.0.1", port, port + 3)  # pairs: port (busy), port + 2
        rtp_sock, rtcp_sock = pool.take()
        assert rtp_sock.getsockname()[1] == port + 2
        with pytest.raises(PortsExhausted):
            pool.take()
        pool.give_back(rtp_sock, rtcp_sock)
        assert pool.free == 2


def test_sockaddr_matches_what_recvfrom_reports():
    assert sockaddr(socket.AF_INET, ("127.0.0.1", 4000)) == ("127.0.0.1", 4000)
    assert sockaddr(socket.AF_INET6, ("2001:db8:0::1", 4000)) == ("2001:db8::1", 4000, 0, 0)
    assert sockaddr(socket.AF_INET, None) is None
    for bad in [("example.com", 1), ("::1", 1), ("127.0.0.1", 0)]:
        with pytest.raises(InvalidRequest):
            sockaddr(socket.AF_INET, bad)
