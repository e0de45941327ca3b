"""Garbage, malformed SIP and half-open TCP connections at the edge: answered or dropped, never a
crash; a real call still goes through afterwards."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests

MALFORMED_INVITE = (
    b"INVITE sip:+442071234567@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5999;branch=z9hG4bKbad\r\n"
    b"From: <sip:x@127.0.0.2>;tag=1\r\nTo: <sip:y@127.0.0.1>\r\nCall-ID: bad-1\r\n"
    b"CSeq: not-a-number INVITE\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


@pytest.fixture
def up(tmp_path: Path, carrier_port: int) -> Iterator[Up]:
    running = Up(tmp_path / "up", manifests(carrier_port, free_port())).start()
    yield running
    running.stop()


def test_garbage_and_malformed_requests(up: Up, tmp_path: Path, carrier_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.2", 5999))
        udp.settimeout(2)
        for size in (0, 1, 7, 100, 1400, 9000):
            udp.sendto(os.urandom(size), ("127.0.0.1", up.sip_port))
        udp.sendto(MALFORMED_INVITE, ("127.0.0.1", up.sip_port))
        answer, _ = udp.recvfrom(65536)
    assert answer.startswith(b"SIP/2.0 400 ")  # the malformed INVITE is answered, the garbage dropped
    # A TCP peer that never finishes its headers, and one that sends an endless header line.
    slow = socket.create_connection(("127.0.0.1", up.sip_port))
    slow.sendall(b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1")
    endless = socket.create_connection(("127.0.0.1", up.sip_port))
    endless.settimeout(5)
    try:
        endless.sendall(b"INVITE sip:x@y SIP/2.0\r\nX-Long: " + b"a" * 200_000)
    except OSError:
        pass  # closed on us mid-send: that is the point
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    try:
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567")
    finally:
        sipp.stop(gateway)
        slow.close()
        endless.close()
    assert result.ok, result.output + up.output()
    assert up.proc is not None and up.proc.poll() is None
    assert "Traceback" not in up.output()


def test_no_media_relay_means_503_and_no_leaked_channel(tmp_path: Path, carrier_port: int) -> None:
    dead_relay = f"127.0.0.1:{free_port()}"  # nothing listens there
    edge = Up(tmp_path / "edge", manifests(carrier_port, free_port()),
              ["--media-relay", dead_relay, "--insecure-grpc"], command="edge").start()  # fmt: skip
    try:
        result = sipp.uac_expect(tmp_path / "pbx", edge.sip, "127.0.0.2", "+442071234567", 503)
        edge.wait_busy(0)
    finally:
        edge.stop()
    assert result.ok, result.output + edge.output()
    assert "media refused" in edge.output()


def test_a_source_that_keeps_failing_auth_is_locked_out(up: Up) -> None:
    def attempt(n: int) -> str | None:
        lines = [
            f"INVITE sip:+442071234567@{up.sip} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.7:{port};branch=z9hG4bKbrute{n}",
            f"From: <sip:+14155550100@127.0.0.7>;tag=b{n}", f"To: <sip:+442071234567@{up.sip}>",
            f"Call-ID: brute-{n}", "CSeq: 1 INVITE", "Max-Forwards: 70",
            'Proxy-Authorization: Digest username="acme", realm="acme", nonce="guess", '
            f'uri="sip:+442071234567@{up.sip}", response="{n:032x}", qop=auth, nc=00000001, cnonce="x"',
            "Content-Length: 0",
        ]  # fmt: skip
        sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), ("127.0.0.1", up.sip_port))
        try:  # skip provisionals and retransmitted answers to earlier attempts (nobody ACKs them)
            while (text := sock.recv(65536).decode()).startswith("SIP/2.0 1") or f"brute-{n}\r" not in text:
                pass
            return text.split("\r\n")[0]
        except TimeoutError:
            return None

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.7", 0))
        port = sock.getsockname()[1]
        sock.settimeout(1.0)
        answers = [attempt(n) for n in range(21)]
    assert all(a is not None and a.startswith("SIP/2.0 407") for a in answers[:10]), answers
    assert all(a is not None and a.startswith("SIP/2.0 403") for a in answers[10:20]), answers
    assert answers[20] is None  # no more answers for this source
    assert 'why="nonce not issued by us"' in up.output()
