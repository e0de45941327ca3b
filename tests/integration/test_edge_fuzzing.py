"""A short run of bench/fuzz_edge.py in CI: 20,000 mutated messages through the parser in-process and
3,000 through a running `trunkline up` over UDP and TCP. Nothing crashes, the edge stays up, its RSS
stays bounded and it answers the requests that deserve an answer."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.trunkline_up import Up, manifests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def load_fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_edge", ROOT / "bench" / "fuzz_edge.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_edge"] = module
    spec.loader.exec_module(module)
    return module


def test_parser_survives_20000_mutated_messages() -> None:
    report = load_fuzzer().fuzz_parser(20_000, seed=7)
    assert report.crashes == 0, report.crash_samples
    assert report.parsed > 1000 and report.refused > 1000  # the mutator reaches both outcomes


def test_a_running_edge_survives_3000_mutated_messages(
    tmp_path: Path, carrier_port: int, pbx_port: int
) -> None:
    fuzz = load_fuzzer()
    up = Up(tmp_path / "up", manifests(carrier_port, pbx_port)).start()
    try:
        assert up.proc is not None
        report = fuzz.fuzz_edge("127.0.0.1", up.sip_port, up.proc.pid, up.workdir / "trunkline.log", 3000,
                                seed=3, rate=300)  # fmt: skip
        assert report.alive, up.output()
        assert report.rss_after_mb < report.rss_before_mb + 100, report
        # Every well-formed request (by our own parser) got an answer; UDP on a loaded machine may lose
        # a few datagrams, hence not 100%.
        assert report.answered >= 0.9 * report.requests_expected_answer, report
        log = up.output() if report.tracebacks == 0 else (up.workdir / "trunkline.log").read_text()
        tracebacks = log.split("Traceback (most recent call last):")[1:]
        assert tracebacks == [], tracebacks[:2]
        assert report.core_failure_lines == 0, log  # the core refused or parsed each: none failed
        assert 'trunkline_sip_core_failures_total{where="message"} 0.0' in up.metrics()
        # The edge still serves a plain OPTIONS afterwards.
        options = (
            b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKafter;rport\r\n"
            b"From: <sip:a@127.0.0.2>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: after-fuzz\r\n"
            b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        answer = b""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
            s.settimeout(5)
            for _ in range(6):  # retransmit, should a datagram be lost
                s.sendto(options, ("127.0.0.1", up.sip_port))
                try:
                    answer = s.recv(65536)
                    break
                except TimeoutError:
                    continue
        assert answer.startswith(b"SIP/2.0 "), up.output()
    finally:
        up.stop()


def test_a_malformed_pai_is_a_400_without_traceback(tmp_path: Path, carrier_port: int, pbx_port: int) -> None:
    up = Up(tmp_path / "up", manifests(carrier_port, pbx_port)).start()
    try:
        invite = (
            b"INVITE sip:+14155550199@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKpai;rport\r\nMax-Forwards: 70\r\n"
            b"From: <sip:+14155550100@127.0.0.2>;tag=p\r\nTo: <sip:+14155550199@127.0.0.1>\r\n"
            b"Call-ID: bad-pai\r\nCSeq: 1 INVITE\r\nP-Asserted-Identity: <sip:a@b@c>\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        statuses: list[int] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))  # the trunk's IP ACL: no challenge
            s.settimeout(5)
            for _ in range(6):  # retransmit like a UA would, should a datagram be lost
                s.sendto(invite, ("127.0.0.1", up.sip_port))
                try:
                    while not statuses or statuses[-1] < 200:
                        statuses.append(int(s.recv(65536).split(b" ", 2)[1]))
                    break
                except TimeoutError:
                    continue
        assert statuses and statuses[-1] == 400 and "Traceback" not in up.output()
    finally:
        up.stop()
