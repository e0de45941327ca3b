"""Issue #14 as an attacker would try it: raw sockets against a real `trunkline edge` (one, or two
sharing Redis), each test asserting the secure behaviour and that the legitimate PBX in the same run
still gets through. Sources are loopback addresses: 127.0.0.2 is the trunk's PBX (its IP ACL),
127.0.0.1 the carrier, 127.0.0.9 and up strangers."""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up, manifests
from trunkline.edge.digest import digest_response, parse_credentials
from trunkline.sip import peer_log

pytestmark = pytest.mark.integration

PBX = "127.0.0.2"
FLAGS = ["--flood-rate", "20", "--flood-cooldown", "120", "--max-connections-per-source", "3",
         "--contact-deny", "127.0.0.5/32"]  # fmt: skip


def edge(tmp_path: Path, carrier_port: int, *extra: str, name: str = "edge") -> Up:
    return Up(tmp_path / name, manifests(carrier_port, free_port()), [*FLAGS, *extra], command="edge").start()


def udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(3)
    return sock


def request(
    method: str,
    sock: socket.socket,
    ruri: str = "sip:+442071234567@127.0.0.1",
    user: str = "+14155550100",
    call_id: str | None = None,
    from_tag: str = "pbx",
    to_tag: str | None = None,
    cseq: int = 1,
    headers: tuple[str, ...] = (),
    via_extra: str = ";rport",
) -> bytes:
    host, port = sock.getsockname()[:2]
    to = f"<{ruri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)}{via_extra}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{host}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id or secrets.token_hex(8)}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@{host}:{port}>",
        *headers,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def ask(sock: socket.socket, data: bytes, up: Up, tries: int = 5) -> bytes:
    """Send (again, as a UA does, should a datagram be lost) until a final response comes."""
    for _ in range(tries):
        sock.sendto(data, ("127.0.0.1", up.sip_port))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                break
            if status(answer) >= 200:
                return answer
    raise AssertionError(f"no final answer to {data[:40]!r}\n{up.output()}")


def header(data: bytes, name: str) -> str:
    found = re.search(rb"(?im)^" + name.encode() + rb":\s*(.*?)\r$", data)
    assert found, data
    return found.group(1).decode()


def silent(sock: socket.socket, seconds: float) -> list[bytes]:
    """What reaches `sock` within `seconds` (empty: nothing)."""
    got: list[bytes] = []
    sock.settimeout(0.5)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            continue
    sock.settimeout(3)
    return got


def authorization(challenge: bytes, method: str, ruri: str, user: str, password: str, kind: str) -> str:
    params = parse_credentials(header(challenge, kind))
    response = digest_response(params["algorithm"], user, params["realm"], password, method, ruri,
                               params["nonce"], "auth", "00000001", "c0ffee")  # fmt: skip
    name = "Authorization" if kind == "WWW-Authenticate" else "Proxy-Authorization"
    return (f'{name}: Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="{ruri}", response="{response}", algorithm={params["algorithm"]}, qop=auth, '
            'nc=00000001, cnonce="c0ffee"')  # fmt: skip


def register(sock: socket.socket, up: Up, password: str, user: str = "acme", contacts: int = 1,
             contact_host: str | None = None) -> bytes:  # fmt: skip
    """A digest REGISTER: the challenge, then the answer to the credentials."""
    ruri, call_id = "sip:127.0.0.1", secrets.token_hex(8)
    host, port = sock.getsockname()[:2]
    where = contact_host or host
    contact = ", ".join(f"<sip:{user}@{where}:{port + i}>" for i in range(contacts))

    def message(cseq: int, *extra: str) -> bytes:
        text = request("REGISTER", sock, ruri, user, call_id, cseq=cseq, headers=extra)
        text = text.replace(f"To: <{ruri}>".encode(), f"To: <sip:{user}@127.0.0.1>".encode())
        return re.sub(rb"Contact: [^\r]*", f"Contact: {contact}".encode(), text)

    challenge = ask(sock, message(1), up)
    if status(challenge) != 401:
        return challenge  # refused before any challenge (locked out)
    return ask(
        sock, message(2, authorization(challenge, "REGISTER", ruri, user, password, "WWW-Authenticate")), up
    )


class FakeCarrier:
    """A carrier gateway on a UDP port: rings (180) or answers (200) every INVITE, 200s BYEs, and keeps
    what it received."""

    def __init__(self, port: int, answer: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.answer, self.port = answer, port
        self.invites: list[bytes] = []
        self.byes: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if data.startswith(b"INVITE"):
                self.invites.append(data)
                self.sock.sendto(self._response(data, self.answer), addr)
            elif data.startswith(b"BYE"):
                self.byes.append(data)
                self.sock.sendto(self._response(data, 200), addr)

    def _response(self, data: bytes, code: int) -> bytes:
        keep = [
            line
            for line in data.split(b"\r\n")
            if line.split(b":")[0] in (b"Via", b"From", b"Call-ID", b"CSeq")
        ]
        to = next(line for line in data.split(b"\r\n") if line.startswith(b"To:"))
        if b";tag=" not in to:
            to += b";tag=gw"
        reason = {180: b"Ringing", 200: b"OK"}[code]
        lines = [b"SIP/2.0 %d %s" % (code, reason), *keep, to, b"Contact: <sip:gw@127.0.0.1:%d>" % self.port]
        return b"\r\n".join([*lines, b"Content-Length: 0", b"", b""])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Up, FakeCarrier]]:
    """One edge and its answering carrier for the tests that need no flags of their own (fewer
    processes on a loaded machine); each test attacks from its own stranger address."""
    port = free_port()
    gateway = FakeCarrier(port, 200)
    up = edge(tmp_path_factory.mktemp("shared"), port)
    yield up, gateway
    up.stop()
    gateway.close()


def test_a_forged_via_gets_nothing_at_the_third_host_and_a_refusal_costs_one_datagram(
    shared: tuple[Up, FakeCarrier],
) -> None:
    up = shared[0]
    sender, forged = udp("127.0.0.21"), udp("127.0.0.3")
    try:
        via = f";received=127.0.0.3;rport={forged.getsockname()[1]}"
        sender.sendto(request("INVITE", sender, via_extra=via), ("127.0.0.1", up.sip_port))
        answers = silent(sender, 4.0)  # Timer G would have resent at 0.5, 1.5 and 3.5 s
        assert [status(a) for a in answers] == [407], answers
        assert silent(forged, 0.5) == []
        assert status(ask(sender, request("OPTIONS", sender), up)) == 200  # the source is not cut off
    finally:
        sender.close()
        forged.close()


def test_control_characters_and_oversize_headers_are_400(shared: tuple[Up, FakeCarrier]) -> None:
    up = shared[0]
    sock = udp(PBX)
    try:
        for bad in ("X-Evil: a\x01b", "X-Big: " + "a" * 5000, "X-Nul: a\x00b"):
            assert status(ask(sock, request("OPTIONS", sock, headers=(bad,)), up)) == 400, bad
        assert status(ask(sock, request("OPTIONS", sock), up)) == 200
    finally:
        sock.close()


def test_a_flood_from_one_source_is_cut_while_the_pbx_keeps_calling(shared: tuple[Up, FakeCarrier]) -> None:
    up = shared[0]
    flood, pbx = udp("127.0.0.22"), udp(PBX)
    try:
        for i in range(300):  # the budget is 20/s with 40 in the bucket
            method = ("INVITE", "REGISTER", "OPTIONS")[i % 3]
            flood.sendto(request(method, flood), ("127.0.0.1", up.sip_port))
        answered = silent(flood, 2.0)
        assert 0 < len(answered) <= 60, len(answered)
        flood.sendto(request("OPTIONS", flood), ("127.0.0.1", up.sip_port))
        assert silent(flood, 2.0) == []  # cooling down: ignored before parsing
        for _ in range(3):  # the PBX's calls go through all along
            answer = ask(pbx, request("INVITE", pbx), up)
            assert status(answer) == 200, answer
            to_tag = header(answer, "To").split("tag=")[1]
            ack = request("ACK", pbx, call_id=header(answer, "Call-ID"), to_tag=to_tag)
            pbx.sendto(ack, ("127.0.0.1", up.sip_port))
        cooldowns = re.search(r"^trunkline_sip_flood_cooldowns_total (\S+)", up.metrics(), re.M)
        assert cooldowns and float(cooldowns.group(1)) >= 1
        dropped = re.search(
            r'trunkline_sip_flood_messages_total\{verdict="dropped_rate"\} (\S+)', up.metrics()
        )
        assert dropped and float(dropped.group(1)) >= 1
    finally:
        flood.close()
        pbx.close()


def test_tcp_connections_per_source_are_capped(shared: tuple[Up, FakeCarrier]) -> None:
    up = shared[0]
    held: list[socket.socket] = []
    try:
        for _ in range(3):
            conn = socket.create_connection(
                ("127.0.0.1", up.sip_port), timeout=5, source_address=("127.0.0.23", 0)
            )
            held.append(conn)
        extra = socket.create_connection(
            ("127.0.0.1", up.sip_port), timeout=5, source_address=("127.0.0.23", 0)
        )
        held.append(extra)
        extra.settimeout(10)
        try:
            assert extra.recv(100) == b""  # closed at once by the edge
        except ConnectionResetError:
            pass  # closed at once by the edge, before we read
        pbx = socket.create_connection(("127.0.0.1", up.sip_port), timeout=10, source_address=(PBX, 0))
        held.append(pbx)
        options = request("OPTIONS", pbx).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        pbx.sendall(options)
        assert pbx.recv(65536).startswith(b"SIP/2.0 200")
        assert 'trunkline_sip_connections_refused_total{limit="per_source"} 1.0' in up.metrics()
    finally:
        for conn in held:
            conn.close()


def test_a_stranger_locked_out_of_a_username_does_not_lock_out_the_real_pbx(
    shared: tuple[Up, FakeCarrier],
) -> None:
    up = shared[0]
    stranger, real = udp("127.0.0.24"), udp("127.0.0.10")
    try:
        statuses = [status(register(stranger, up, "guess")) for _ in range(11)]
        assert statuses[:10] == [401] * 10 and statuses[10] == 403, statuses
        assert status(register(real, up, "s3cret-acme")) == 200
    finally:
        stranger.close()
        real.close()


def test_unknown_and_known_usernames_get_the_same_challenge(shared: tuple[Up, FakeCarrier]) -> None:
    up = shared[0]
    sock = udp("127.0.0.11")
    try:
        shapes = []
        for user in ("acme", "nobody"):
            challenge = ask(sock, request("INVITE", sock, user=user), up)
            assert status(challenge) == 407
            params = parse_credentials(header(challenge, "Proxy-Authenticate"))
            shapes.append((params["realm"], params["algorithm"], params["qop"], sorted(params)))
        assert shapes[0] == shapes[1]
    finally:
        sock.close()


def test_register_with_ten_contacts_or_a_denied_contact_is_refused(shared: tuple[Up, FakeCarrier]) -> None:
    up = shared[0]
    sock = udp("127.0.0.12")
    try:
        assert status(register(sock, up, "s3cret-acme", contacts=10)) == 403
        assert status(register(sock, up, "s3cret-acme", contact_host="127.0.0.5")) in (
            400,
            403,
        )  # --contact-deny
        assert status(register(sock, up, "s3cret-acme", contact_host="169.254.1.1")) in (400, 403)
        assert status(register(sock, up, "s3cret-acme")) == 200
    finally:
        sock.close()


def test_a_second_invite_with_the_call_id_of_a_live_call_is_482_across_edges(
    tmp_path: Path, carrier_port: int, redis: RedisProcess
) -> None:
    gateway = FakeCarrier(carrier_port, 180)  # rings: the call stays live
    secret = tmp_path / "nonce"
    secret.write_text("k" * 32 + "\n")
    store = ["--redis", redis.url, "--nonce-secret-file", str(secret)]
    a = edge(tmp_path, carrier_port, *store, "--edge-id", "a", name="a")
    b = edge(tmp_path, carrier_port, *store, "--edge-id", "b", name="b")
    pbx = udp(PBX)
    try:
        call_id = secrets.token_hex(8)
        pbx.sendto(request("INVITE", pbx, call_id=call_id), ("127.0.0.1", a.sip_port))
        deadline = time.monotonic() + 20
        while not gateway.invites:
            assert time.monotonic() < deadline, a.output()
            time.sleep(0.05)
        other_tag = request("INVITE", pbx, call_id=call_id, from_tag="another")
        assert status(ask(pbx, other_tag, b)) == 482
        assert status(ask(pbx, request("INVITE", pbx, call_id=call_id, from_tag="third"), a)) == 482
        assert len(gateway.invites) == 1
    finally:
        pbx.close()
        a.stop()
        b.stop()
        gateway.close()


def test_an_in_dialog_bye_from_a_stranger_is_refused(shared: tuple[Up, FakeCarrier]) -> None:
    up, carrier = shared
    pbx, stranger = udp(PBX), udp("127.0.0.25")
    byes = len(carrier.byes)
    try:
        answer = ask(pbx, request("INVITE", pbx), up)
        assert status(answer) == 200
        call_id, to_tag = header(answer, "Call-ID"), header(answer, "To").split("tag=")[1]
        pbx.sendto(request("ACK", pbx, call_id=call_id, to_tag=to_tag), ("127.0.0.1", up.sip_port))
        bye = request("BYE", stranger, call_id=call_id, to_tag=to_tag, cseq=2)
        assert status(ask(stranger, bye, up)) == 407  # the PBX's side: only with the trunk's password
        b_invite = carrier.invites[-1]
        b_call_id, b_tag = header(b_invite, "Call-ID"), header(b_invite, "From").split("tag=")[1]
        from_callee = request("BYE", stranger, call_id=b_call_id, from_tag="gw", to_tag=b_tag, cseq=2)
        assert status(ask(stranger, from_callee, up)) == 403  # the carrier's side
        assert len(carrier.byes) == byes
        bye = request("BYE", pbx, call_id=call_id, to_tag=to_tag, cseq=2)
        assert status(ask(pbx, bye, up)) == 200  # the PBX itself hangs up
    finally:
        pbx.close()
        stranger.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_100000_refused_malformed_and_unanswerable_requests_leave_memory_bounded(
    tmp_path: Path, carrier_port: int
) -> None:
    """From 100 strangers (no flood limit here: it would hide what the rest costs): garbage, requests
    with control characters (400, stateless), INVITEs challenged (407 once, T4 for the ACK), BYEs for
    no dialog (481)."""
    up = edge(tmp_path, carrier_port, "--flood-rate", "1000000", "--flood-bytes", "1000000000", name="rss")
    socks = [udp(f"127.0.1.{i}") for i in range(1, 101)]
    try:
        assert up.proc is not None
        ask(socks[0], request("OPTIONS", socks[0]), up)
        before = rss_mb(up.proc.pid)
        kinds = [
            lambda s: b"\x00\x01garbage" + secrets.token_bytes(40),
            lambda s: request("OPTIONS", s, headers=("X-Bad: a\x02b",)),
            lambda s: request("INVITE", s, user=secrets.token_hex(4)),
            lambda s: request("BYE", s, to_tag="none"),
        ]
        peak = before
        for i in range(100_000):
            sock = socks[i % len(socks)]
            sock.sendto(kinds[i % len(kinds)](sock), ("127.0.0.1", up.sip_port))
            if i % 100 == 99:
                time.sleep(0.04)  # ~2,500/s at most: the edge keeps up, nothing piles in the socket
            if i % 10_000 == 0:
                peak = max(peak, rss_mb(up.proc.pid))
        peak = max(peak, rss_mb(up.proc.pid))
        assert peak < before + 150, (before, peak)
        fresh = udp("127.0.1.200")  # the strangers' sockets still hold answers to what they sent
        socks.append(fresh)
        assert status(ask(fresh, request("OPTIONS", fresh), up)) == 200  # and it still answers
        assert "Traceback" not in up.output()
        metrics = up.metrics()  # a peer's bad input is refused, never a failure of the core
        assert 'trunkline_sip_core_failures_total{where="message"} 0.0' in metrics
        assert 'trunkline_sip_core_failures_total{where="stream"} 0.0' in metrics
    finally:
        for sock in socks:
            sock.close()
        up.stop()


def test_a_flood_of_malformed_datagrams_writes_a_bounded_number_of_log_lines(
    tmp_path: Path, carrier_port: int
) -> None:
    """Spoofed sources get past a per-source flood guard (off here): the lines they cause are bounded
    by the peers' log budget (sip/peer_log.py), not by their packet rate, and the edge still answers."""
    up = edge(tmp_path, carrier_port, "--flood-rate", "1000000", "--flood-bytes", "1000000000", name="noise")
    log = up.workdir / "trunkline.log"
    socks = [udp(f"127.0.2.{i}") for i in range(1, 51)]
    try:
        ask(socks[0], request("OPTIONS", socks[0]), up)
        started = time.monotonic()
        for i in range(5_000):
            garbage = b"\x00\x01garbage" + secrets.token_bytes(40)
            socks[i % len(socks)].sendto(garbage, ("127.0.0.1", up.sip_port))
            if i % 100 == 99:
                time.sleep(0.02)  # ~5,000/s: nothing lost in the socket, every datagram reaches the edge
        fresh = udp("127.0.2.200")
        socks.append(fresh)
        assert status(ask(fresh, request("OPTIONS", fresh), up)) == 200  # every datagram before it read
        elapsed = time.monotonic() - started
        noise = [line for line in log.read_text().splitlines() if "dropping message from" in line]
        assert len(noise) <= peer_log.BURST + peer_log.RATE * elapsed + 1, (len(noise), elapsed)
        time.sleep(1.0)  # tokens back: the next line says how many were left out
        socks[1].sendto(b"\x00\x01garbage", ("127.0.0.1", up.sip_port))
        assert status(ask(fresh, request("OPTIONS", fresh), up)) == 200
        lines = [line for line in log.read_text().splitlines() if "message from" in line]
        counted = [re.search(r"\((\d+) such lines left out\)", line) for line in lines]
        assert counted[-1] is not None  # the last line, after the flood, says how many were left out
        assert len(lines) + sum(int(m.group(1)) for m in counted if m) == 5_001  # each logged or counted
    finally:
        for sock in socks:
            sock.close()
        up.stop()
