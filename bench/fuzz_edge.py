"""Grammar-based fuzzing of the SIP parser and of a running edge (docs/security.md, bench/README-fuzz.md).

A seeded mutator starts from real INVITE (with SDP), REGISTER, BYE, CANCEL and OPTIONS messages and
applies 1-4 mutations that know SIP's shape (drop, duplicate, repeat or reorder header lines; swap a
value for a hostile one: CR/LF and NUL, percent-encoded CRLF, huge numbers, unbalanced quotes and
brackets, thousands of commas; break the start line, Content-Length or an SDP line) or plain byte
flips, insertions and truncations. Every run with the same seed sends the same messages.

  parser: every message through parse_message -> validate() -> typed views -> SDP -> a response,
          in this process. A crash is any exception other than SipParseError.
  edge:   the same messages to a running edge over UDP and TCP (its own `trunkline up` on loopback
          ports unless --target is given). Counted: requests it did not answer (a refusal by design,
          e.g. a malformed message dropped, counts here too), tracebacks in its log, messages and
          connections the SIP core failed on (its "SIP core failed" log lines: a bug, never the
          answer to a peer's error), whether it is still alive, and its RSS before and after.

Run:  .venv/bin/python bench/fuzz_edge.py parser --messages 1000000 [--seed 1]
      .venv/bin/python bench/fuzz_edge.py edge --messages 20000 [--seed 1] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trunkline.sip import Request, SipParseError, parse_message
from trunkline.sip.sdp import parse_sdp

SDP = (
    b"v=0\r\no=- 3724394400 3724394400 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


def _message(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> list[bytes]:
    """A message as lines (start line, header lines), the body kept apart as the last item."""
    lines = [start.encode()] + [f"{n}: {v}".encode() for n, v in headers]
    return [*lines, body]


def seeds() -> list[list[bytes]]:
    via = "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-fuzz-{n};rport"
    common = [("Max-Forwards", "70"), ("From", '"Fuzz" <sip:acme@127.0.0.2>;tag=ft{n}'),
              ("To", "<sip:+14155550100@127.0.0.1>"), ("Call-ID", "fuzz-{n}@127.0.0.2")]  # fmt: skip
    return [
        _message("INVITE sip:+14155550100@127.0.0.1 SIP/2.0",
                 [("Via", via), *common, ("CSeq", "1 INVITE"), ("Contact", "<sip:acme@127.0.0.2:5060>"),
                  ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"), ("Supported", "timer, 100rel"),
                  ("Session-Expires", "1800;refresher=uac"),
                  ("P-Asserted-Identity", "<sip:+14155550123@pbx>"),
                  ("Proxy-Authorization", 'Digest username="acme", realm="acme", nonce="x", '
                   'uri="sip:+14155550100@127.0.0.1", response="00", qop=auth, nc=00000001, cnonce="c"'),
                  ("Content-Type", "application/sdp"), ("Content-Length", str(len(SDP)))], SDP),
        _message("REGISTER sip:127.0.0.1 SIP/2.0",
                 [("Via", via), ("Max-Forwards", "70"), ("From", "<sip:acme@127.0.0.1>;tag=r{n}"),
                  ("To", "<sip:acme@127.0.0.1>"), ("Call-ID", "reg-{n}@127.0.0.2"), ("CSeq", "1 REGISTER"),
                  ("Contact", "<sip:acme@127.0.0.2:5060>;expires=3600"), ("Expires", "3600"),
                  ("Content-Length", "0")]),
        _message("BYE sip:trunkline@127.0.0.1 SIP/2.0",
                 [("Via", via), *common[:3], ("Call-ID", "fuzz-{n}@127.0.0.2"), ("CSeq", "2 BYE"),
                  ("Content-Length", "0")]),
        _message("CANCEL sip:+14155550100@127.0.0.1 SIP/2.0",
                 [("Via", via), *common, ("CSeq", "1 CANCEL"), ("Content-Length", "0")]),
        _message("OPTIONS sip:127.0.0.1 SIP/2.0",
                 [("Via", via), *common, ("CSeq", "1 OPTIONS"), ("Accept", "application/sdp"),
                  ("Content-Length", "0")]),
    ]  # fmt: skip


HOSTILE = [
    "",
    " ",
    "\t",
    "a\r\nP-Asserted-Identity: <sip:+19005550100@evil>",
    "x\rY: z",
    "x\nY: z",
    "a\x00b",
    "\x07\x1b\x7f",
    "%0D%0AP-Asserted-Identity:%20<sip:+1@evil>",
    "sip:%00@x",
    "<sip:a@b",
    "sip:a@b>",
    '"unbalanced',
    '\\"',
    "<<<<>>>>",
    ",,,,,,,,",
    "," * 3000,
    ";" * 1000,
    "a=" * 500,
    "9" * 40,
    "-1",
    "4294967296",
    "18446744073709551616",
    "0",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP [::1",
    "SIP/2.0/UDP [::1]:99999",
    "SIP/2.0/UDP 127.0.0.1;received=198.51.100.66;rport=9",
    "<sip:x@169.254.169.254>",
    "<sip:x@kubernetes>",
    "*",
    "\u00e9\u4e2d\ufeff",
    "\udcff",
    "x" * 5000,
    "Digest " + "a=b," * 300,
    "sip:" + "a" * 2000 + "@h",
    "1 INVITE",
    "1 BYE",
    "2147483648 INVITE",
    "application/sdp",
    "multipart/mixed;boundary=",
    "tag=;tag=",
]
HEADER_NAMES = [
    "Via",
    "v",
    "From",
    "f",
    "To",
    "t",
    "Call-ID",
    "i",
    "CSeq",
    "Contact",
    "m",
    "Content-Length",
    "l",
    "Content-Type",
    "c",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Expires",
    "Authorization",
    "Proxy-Authorization",
    "Require",
    "Supported",
    "X-" + "y" * 100,
    "Bad Name",
    ":",
    "A\x00",
]
SDP_HOSTILE = [
    b"m=audio 99999999 RTP/AVP 0",
    b"m=audio x RTP/AVP",
    b"c=IN IP4",
    b"v=1",
    b"a=" + b"x" * 3000,
    b"m=audio 1 RTP/AVP " + b"0 " * 500,
    b"c=IN IP6 ::ffff:1.2.3.4",
    b"o=",
    b"\x00",
    b"m=",
]
START_LINES = [
    b"INVITE sip:a@b SIP/3.0",
    b"INVITE  sip:a@b SIP/2.0",
    b"INVITE sip:a@b",
    b"SIP/2.0 200 OK",
    b"SIP/2.0 999 What",
    b"\xff\xfe",
    b"",
    b"INVITE <sip:a@b> SIP/2.0",
    b"INV\x00TE sip:a@b SIP/2.0",
    b"REGISTER tel:+1 SIP/2.0",
    b"OPTIONS http://x SIP/2.0",
]


class Mutator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seeds = seeds()

    def _headers(self, lines: list[bytes]) -> None:
        rng = self.rng
        headers = lines[1:-1]
        op = rng.randrange(7)
        if op == 0 and headers:
            del headers[rng.randrange(len(headers))]
        elif op == 1 and headers:
            headers.insert(rng.randrange(len(headers) + 1), rng.choice(headers))
        elif op == 2 and headers:
            headers[rng.randrange(len(headers))] += b", " + rng.choice(headers).partition(b":")[2].strip()
        elif op == 3:
            rng.shuffle(headers)
        elif op == 4:
            headers += [rng.choice(headers or [b"X: y"])] * rng.choice((10, 100, 200))
        elif op == 5 and headers:
            i = rng.randrange(len(headers))
            name = headers[i].partition(b":")[0]
            headers[i] = name + b": " + rng.choice(HOSTILE).encode("utf-8", "surrogateescape")
        else:
            name = rng.choice(HEADER_NAMES)
            headers.insert(rng.randrange(len(headers) + 1),
                           f"{name}: {rng.choice(HOSTILE)}".encode("utf-8", "surrogateescape"))  # fmt: skip
        lines[1:-1] = headers

    def _body(self, lines: list[bytes]) -> None:
        rng = self.rng
        sdp = lines[-1].split(b"\r\n") if lines[-1] else [b"v=0"]
        sdp[rng.randrange(len(sdp))] = rng.choice(SDP_HOSTILE)
        lines[-1] = b"\r\n".join(sdp)
        if rng.random() < 0.5:  # keep Content-Length right half the time, so the SDP gets parsed
            lines[1:-1] = [h for h in lines[1:-1] if not h.lower().startswith(b"content-length")]
            lines.insert(-1, b"Content-Length: %d" % len(lines[-1]))

    def _bytes(self, data: bytearray) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            elif op == 2:
                del data[pos : pos + rng.randint(1, 64)]
            else:
                data[pos:pos] = rng.choice((b"\r\n", b"\r", b"\n", b"\x00", b"\r\n\r\n", b":", b"%0D%0A"))

    def message(self, n: int) -> bytes:
        rng = self.rng
        lines = [line.replace(b"{n}", str(n).encode()) for line in rng.choice(self.seeds)]
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            if kind < 0.55:
                self._headers(lines)
            elif kind < 0.7:
                self._body(lines)
            elif kind < 0.8:
                lines[0] = rng.choice(START_LINES)
            else:  # a Content-Length that lies
                lines[1:-1] = [h for h in lines[1:-1] if not h.lower().startswith(b"content-length")]
                lies = (b"-1", b"99999999", b"0", b"%d" % (len(lines[-1]) + 1), b"1e3", b" 12 ")
                lines.insert(-1, b"Content-Length: " + rng.choice(lies))
        data = bytearray(b"\r\n".join(lines[:-1]) + b"\r\n\r\n" + lines[-1])
        if rng.random() < 0.25:
            self._bytes(data)
        if rng.random() < 0.03:
            data = data[: rng.randrange(len(data) + 1)]
        return bytes(data)

    def stream(self, count: int) -> Iterator[bytes]:
        for n in range(count):
            yield self.message(n)


# -- parser ---------------------------------------------------------------------------------------------
@dataclass
class ParserReport:
    messages: int = 0
    parsed: int = 0
    refused: int = 0  # SipParseError: the designed answer to bad input
    crashes: int = 0
    crash_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    max_rss_mb: float = 0.0


def exercise(data: bytes) -> bool:
    """Parse, validate, touch every view, parse an SDP body, build a response. True if it parsed."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return False
    try:
        msg.validate()
        _ = (msg.content_type, msg.contact, msg.route, msg.record_route, msg.get_all("Allow"))
        if isinstance(msg, Request):
            _ = msg.uri
            msg.create_response(400).to_bytes()
        if msg.body:
            parse_sdp(msg.body).to_bytes()
    except SipParseError:
        pass
    msg.to_bytes()
    return True


def fuzz_parser(count: int, seed: int) -> ParserReport:
    report = ParserReport()
    started = time.perf_counter()
    for data in Mutator(seed).stream(count):
        report.messages += 1
        try:
            if exercise(data):
                report.parsed += 1
            else:
                report.refused += 1
        except Exception as exc:  # counting crashes is the point
            report.crashes += 1
            if len(report.crash_samples) < 5:
                report.crash_samples.append(f"{type(exc).__name__}: {exc} <- {data[:200]!r}")
    report.seconds = round(time.perf_counter() - started, 1)
    report.max_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


# -- a running edge -------------------------------------------------------------------------------------
@dataclass
class EdgeReport:
    messages: int = 0
    udp_sent: int = 0
    tcp_sent: int = 0
    requests_expected_answer: int = 0  # parseable, valid requests other than ACK
    answered: int = 0
    unanswered_samples: list[str] = field(default_factory=list)  # Call-IDs to look up in the edge's log
    tracebacks: int = 0
    # "SIP core failed" lines: written at a failure's 1st, 2nd, 4th... (trunkline_sip_core_failures_total)
    core_failure_lines: int = 0
    traceback_samples: list[str] = field(default_factory=list)  # each kind: count, exception, frame
    alive: bool = True
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    seconds: float = 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _wants_answer(data: bytes) -> str | None:
    """The Call-ID of a request the edge should answer (by our own parser's judgement), else None."""
    try:
        msg = parse_message(data)
        msg.validate()
    except SipParseError:
        return None
    if not isinstance(msg, Request) or msg.method == "ACK":
        return None
    return msg.call_id


def fuzz_edge(host: str, port: int, pid: int, log: Path, count: int, seed: int, rate: float) -> EdgeReport:
    """Send `count` messages (3 in 4 over UDP, the rest over TCP connections of 50 messages each)."""
    report = EdgeReport(rss_before_mb=rss_mb(pid))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.2", 0))  # the trunk's IP ACL address in the test manifests: not flood-limited
    udp.setblocking(False)
    expected: set[str] = set()
    answered: set[str] = set()
    tcp: socket.socket | None = None
    on_tcp = 0
    started = time.perf_counter()

    def drain() -> None:
        while True:
            try:
                data = udp.recv(65536)
            except BlockingIOError:
                return
            for line in data.split(b"\r\n"):
                if line.lower().startswith((b"call-id:", b"i:")):
                    answered.add(line.partition(b":")[2].strip().decode("utf-8", "surrogateescape"))

    for n, data in enumerate(Mutator(seed).stream(count)):
        report.messages += 1
        if n % 4 == 3:
            if tcp is None or on_tcp >= 50:
                if tcp is not None:
                    tcp.close()
                tcp = socket.create_connection((host, port), timeout=5, source_address=("127.0.0.2", 0))
                on_tcp = 0
            try:
                tcp.sendall(data)
                report.tcp_sent += 1
                on_tcp += 1
            except OSError:
                tcp.close()  # the edge closed it, as it must on a framing error
                tcp = None
        else:
            if len(data) > 65507:
                data = data[:65507]  # the most a UDP datagram holds
            call_id = _wants_answer(data)
            if call_id is not None and len(data) < 1400:  # a larger answer may not fit a datagram back
                expected.add(call_id)
            udp.sendto(data, (host, port))
            report.udp_sent += 1
        drain()
        pause = started + (n + 1) / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not expected <= answered:
        drain()
        time.sleep(0.05)
    if tcp is not None:
        tcp.close()
    report.requests_expected_answer = len(expected)
    report.answered = len(expected & answered)
    report.unanswered_samples = sorted(expected - answered)[:10]
    report.seconds = round(time.perf_counter() - started, 1)
    try:
        os.kill(pid, 0)
        report.rss_after_mb = rss_mb(pid)
    except OSError:
        report.alive = False
    text = log.read_text(errors="replace")
    report.tracebacks = text.count("Traceback (most recent call last):")
    report.core_failure_lines = text.count("SIP core failed")
    kinds: dict[str, int] = {}
    for chunk in text.split("Traceback (most recent call last):")[1:]:
        lines = chunk.splitlines()[1:]
        frames = [line.strip() for line in lines if line.startswith("  File ")]
        error = next((line for line in lines if line and not line.startswith(" ")), "?")
        kind = f"{error[:120]} at {frames[-2] if len(frames) > 1 else '?'}"
        kinds[kind] = kinds.get(kind, 0) + 1
    report.traceback_samples = [f"{count}x {kind}" for kind, count in kinds.items()]
    return report


def start_up(workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`trunkline up` on free loopback ports with a carrier, a digest trunk (ACL 127.0.0.2) and DIDs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.trunkline_up import manifests  # the same configuration as the integration tests

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "manifests.yaml").write_text(manifests(free(), free()))
    sip, http = free(), free()
    log = workdir / "trunkline.log"
    trunkline = str(Path(sys.executable).parent / "trunkline")
    proc = subprocess.Popen(
        [trunkline, "up", "-f", str(workdir / "manifests.yaml"), "--sip-listen", f"127.0.0.1:{sip}",
         "--http-listen", f"127.0.0.1:{http}", "--grace", "1",
         "--default-channels", "0", "--default-calls-per-second", "0"],  # the trunk's caps: not fuzzed
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, sip, log
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("trunkline up never became ready")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["parser", "edge"])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1000.0, help="edge mode: messages/s sent")
    args = parser.parse_args()
    if args.mode == "parser":
        result: ParserReport | EdgeReport = fuzz_parser(args.messages, args.seed)
        failed = result.crashes > 0
    else:
        with tempfile.TemporaryDirectory() as tmp:
            proc, port, log = start_up(Path(tmp))
            try:
                result = fuzz_edge("127.0.0.1", port, proc.pid, log, args.messages, args.seed, args.rate)
            finally:
                proc.terminate()
                proc.wait(timeout=20)
        failed = result.tracebacks > 0 or result.core_failure_lines > 0 or not result.alive
    print(json.dumps(asdict(result), indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
