"""The packet path: one single-threaded epoll loop owning a slice of the media port range.

Why not asyncio: a stock asyncio DatagramProtocol collapses near ~36k packets/s; a plain epoll loop
that reads one packet per ready socket with `recvfrom_into` into one reused buffer and answers with
one `sendto` does several times that. One engine runs per core, each in its own process with its own
port slice (see `trunkline.media.pool`); both legs of a session live in the same engine, so relaying
is a local `sendto`.

Per packet, with both legs plain: one recv, a version/length check, a source comparison, one
struct unpack for the statistics, one send. SRTP adds libsrtp's unprotect/protect.

A socket with packets queued (a flood, or an engine that fell behind) is read with one recvmmsg of
up to `BATCH` datagrams instead (`trunkline.media.mmsg`: ctypes on libc; the standard library has
no recvmmsg); each datagram then takes the same path, with its own `sendto`. Under a flood that
relays ~1.5x the packets per CPU-second; at call rates a socket holds one packet when epoll reports
it and is read as before (bench/README-media.md, "System-call batching (recvmmsg)").

Strict media source (per socket; RTCP follows RTP). A leg's party address is learned once:
  1. The relay sends to the address from the party's SDP from the start.
  2. Until the leg is locked, a packet from exactly that SDP address locks it at once (only a spoofer
     could send from it); so does an authenticated packet on an SRTP leg. A packet from any other
     source must pass a probation: `LatchPolicy.probation` RTP packets from one source address with
     one SSRC and consecutive sequence numbers (NAT rewrites the SDP's address; the SDP is a hint).
     Only sources on a trusted host may try: the SDP's host (unless it is a private, NATed address)
     and the host the party's signalling came from, when the edge says; with neither, any host.
     RTCP (its own port) locks onto the SDP's RTCP address or any port of the RTP lock's host.
  3. Once locked, every other source is dropped and counted (`dropped_source`), forever: no
     relearning after a silence (RTP Bleed, CVE-2017-14099). Only an UpdateSession that changes the
     party's SDP address or signalling host starts again at 1 (a re-INVITE after a network move).
  In steady state this costs the packet path nothing: the source compares equal to the lock.

The engine talks to its owner over a pipe (multiprocessing Connection): requests are tuples
`(request_id, op, args)`, answers `(request_id, True, result)` or `(request_id, False, (code, text))`,
and events `(None, kind, args)`. Nothing a peer sends on a media port can raise out of the loop.
Besides the sessions' own operations, "create" with leg states re-creates a session of a previous
run on its ports (its latches confirmed, our SRTP keys kept), and "report" (every few seconds) tells
which sessions had packets since the last one and where their parties are: nothing per packet.
Work over every session (that report, the inactivity sweep) runs as a background pass, a slice of
sessions per loop turn between packets, so no packet waits for a pass over a thousand sessions.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import resource
import select
import socket
import time
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import pylibsrtp

from trunkline.media import mmsg, rtp
from trunkline.media.errors import (
    CODE_OF,
    InvalidRequest,
    LocalError,
    PortInUse,
    PortsExhausted,
    SessionExists,
    SessionNotFound,
)

log = logging.getLogger(__name__)

# A socket address as recvfrom returns it: (host, port) for IPv4, (host, port, flow, scope) for IPv6.
Address = tuple[Any, ...]

SWEEP_INTERVAL = 0.5  # seconds between inactivity checks
# Sessions a background pass (inactivity sweep, report) visits per loop turn: a pass over every
# session at once held packets back for a millisecond or more with a thousand sessions.
PASS_SLICE = 64
SOCKET_BUFFER = 1 << 18  # absorbs bursts while the loop serves other sockets
# Datagrams one recvmmsg reads from a socket that has packets queued (see `Engine.run`); 0: always one
# `recvfrom_into` per readiness event. TRUNKLINE_MEDIA_BATCH=0 switches it off (to compare).
MAX_BATCH = 256


def batch_setting(text: str) -> int:
    """TRUNKLINE_MEDIA_BATCH as a datagram count: 0-256, or a clear error at start-up (not a
    traceback from deep in the engine, nor a negative buffer size)."""
    if not text.strip().isdigit() or int(text) > MAX_BATCH:
        raise ValueError(f"TRUNKLINE_MEDIA_BATCH={text!r}: a whole number of datagrams, 0-{MAX_BATCH}")
    return int(text)


BATCH = batch_setting(os.environ.get("TRUNKLINE_MEDIA_BATCH", "32"))


# Source addresses a flow tracks at once during probation; more (a spray) starts the table afresh.
MAX_CANDIDATES = 8
# Party addresses behind NAT: an SDP naming one says nothing about where the packets will come from.
NATED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


@dataclass(frozen=True)
class LatchPolicy:
    """How a leg learns its party's source address (see the module docstring)."""

    probation: int = 4  # RTP packets in a row (one SSRC, consecutive sequence numbers) from a new source


@dataclass(frozen=True)
class LegConfig:
    """What the relay knows about one party (from its SDP)."""

    rtp_peer: tuple[str, int] | None = None
    rtcp_peer: tuple[str, int] | None = None
    rtcp_mux: bool = False
    srtp_key: bytes | None = None  # the party's SDES master key + salt: we decrypt with it
    clock_rate: int = 8000
    want_srtp: bool = False  # SRTP leg before the party's key is known (we offer it our key first)
    signalling_host: str | None = None  # the IP the party's SIP came from, when the edge knows it


@dataclass(frozen=True)
class LegAllocation:
    rtp_port: int
    rtcp_port: int
    relay_key: bytes | None  # ours: we encrypt towards the party with it


# A party's address as the relay latched onto it: (host, port), the host as the kernel reports it.
Latched = tuple[str, int]


@dataclass(frozen=True)
class LegState:
    """What a leg needs besides its LegConfig to be rebuilt after a restart (see trunkline.media)."""

    rtp_port: int  # the pair rtp_port, rtp_port + 1 is bound again
    relay_key: bytes | None = None
    rtp_latched: Latched | None = None
    rtcp_latched: Latched | None = None


@dataclass
class EngineReport:
    """An engine's periodic report: sessions with packets since the last report (and where their
    parties are now), and packet totals since the engine started."""

    active: dict[str, tuple[tuple[Latched | None, Latched | None], tuple[Latched | None, Latched | None]]]
    relayed_packets: int
    dropped_source: int = 0  # not (or not yet) the party's source
    dropped_malformed: int = 0
    dropped_srtp: int = 0

    @property
    def dropped_packets(self) -> int:
        return self.dropped_source + self.dropped_malformed + self.dropped_srtp

    def add(self, other: EngineReport) -> None:
        self.active.update(other.active)
        self.relayed_packets += other.relayed_packets
        self.dropped_source += other.dropped_source
        self.dropped_malformed += other.dropped_malformed
        self.dropped_srtp += other.dropped_srtp


@dataclass
class DirectionCounters:
    packets: int = 0
    bytes: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    rtcp_packets: int = 0


@dataclass
class LegCounters:
    received: DirectionCounters = field(default_factory=DirectionCounters)
    sent: DirectionCounters = field(default_factory=DirectionCounters)
    dropped_unexpected_source: int = 0
    dropped_malformed: int = 0
    dropped_srtp: int = 0
    rtp_peer: str = ""
    latches: int = 0


@dataclass
class SessionCounters:
    leg_a: LegCounters
    leg_b: LegCounters
    age: float


class Flow:
    """One socket of a leg (its RTP port, which also carries RTCP with rtcp-mux, or its RTCP port),
    the party's address on it and how that address is learned (see the module docstring)."""

    __slots__ = (
        "any_host",
        "candidates",
        "confirmed",
        "deep",
        "expected",
        "leg",
        "peer",
        "rtcp_only",
        "sock",
        "trusted",
        "turn",
    )

    def __init__(self, sock: socket.socket, leg: Leg, rtcp_only: bool) -> None:
        self.sock = sock
        self.leg = leg
        self.rtcp_only = rtcp_only
        self.peer: Address | None = None  # where the relay sends; the lock once `confirmed`
        self.expected: Address | None = None  # the SDP's address
        self.confirmed = False  # locked: only `peer` is accepted
        self.trusted: frozenset[str] = frozenset()  # hosts whose sources may pass probation
        self.any_host = True  # no trusted host known: any source may pass probation
        # Sources on probation: address -> (ssrc, next sequence number, packets in a row).
        self.candidates: dict[Address, tuple[int, int, int]] = {}
        self.turn = -3  # the engine loop's turn that last read this socket
        self.deep = False  # the last batched read found more than one datagram

    def expect(self, peer: Address | None, trusted: frozenset[str]) -> None:
        """Send to `peer` (from SDP) and learn the party's address again."""
        self.peer = self.expected = peer
        self.confirmed, self.trusted, self.any_host = False, trusted, not trusted
        self.candidates = {}

    def latched(self) -> Latched | None:
        return (self.peer[0], self.peer[1]) if self.confirmed and self.peer else None

    def relatch(self, family: int, address: Latched) -> None:
        """Take `address` as the party's lock (a restored session: the first stranger to send must
        not latch)."""
        host, port = address
        self.peer = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
        self.confirmed, self.candidates = True, {}

    def admit(self, src: Address, data: memoryview, rtcp: bool) -> bool:
        """Whether a valid packet from `src` (not the lock) is the party's; locks onto `src` if so.
        Only runs before the lock or for a stranger's packet: the steady state never calls it."""
        leg = self.leg
        if not self.confirmed:
            if src == self.expected or leg.party_key is not None:  # announced, or authenticated
                return self._lock(src)
            if self.rtcp_only:  # RTCP follows the RTP lock's host
                lock = leg.rtp
                if lock.confirmed and lock.peer is not None and src[0] == lock.peer[0]:
                    return self._lock(src)
            elif not rtcp and (self.any_host or src[0] in self.trusted) and self._probation(src, data):
                return self._lock(src)
        leg.dropped_source += 1
        return False

    def _probation(self, src: Address, data: memoryview) -> bool:
        """Count an RTP packet of `src`; True once it sent `probation` in a row."""
        ssrc = rtp.packet_ssrc(data, False)
        seq = data[2] << 8 | data[3]
        candidates = self.candidates
        previous = candidates.get(src)
        if previous is not None and previous[0] == ssrc and previous[1] == seq:
            count = previous[2] + 1
        else:
            if previous is None and len(candidates) >= MAX_CANDIDATES:
                candidates.clear()  # bounded: a spray of sources cannot grow the table
            count = 1
        candidates[src] = (ssrc, (seq + 1) & 0xFFFF, count)
        return count >= self.leg.policy.probation

    def _lock(self, src: Address) -> bool:
        self.peer, self.confirmed, self.candidates = src, True, {}
        if not self.rtcp_only:
            self.leg.latches += 1
        return True


class Leg:
    """One side of a session: its sockets, the party's addresses and keys, and its counters."""

    __slots__ = (
        "clock_rate",
        "dropped_malformed",
        "dropped_source",
        "dropped_srtp",
        "latches",
        "mux",
        "other",
        "party_key",
        "policy",
        "received",
        "relay_key",
        "rtcp",
        "rtp",
        "sent_bytes",
        "sent_packets",
        "sent_rtcp",
        "srtp_in",
        "srtp_out",
    )  # fmt: skip

    def __init__(self, rtp_sock: socket.socket, rtcp_sock: socket.socket, policy: LatchPolicy) -> None:
        self.policy = policy
        self.rtp = Flow(rtp_sock, self, rtcp_only=False)
        self.rtcp = Flow(rtcp_sock, self, rtcp_only=True)
        self.other: Leg = self
        self.mux = False
        self.clock_rate = 8000
        self.received = rtp.ReceiveStats(self.clock_rate)
        self.sent_packets = self.sent_bytes = self.sent_rtcp = 0
        self.dropped_source = self.dropped_malformed = self.dropped_srtp = self.latches = 0
        self.party_key: bytes | None = None
        self.relay_key: bytes | None = None
        self.srtp_in: pylibsrtp.Session | None = None
        self.srtp_out: pylibsrtp.Session | None = None

    @property
    def rtcp_out(self) -> Flow:
        """Where RTCP for this leg's party goes."""
        return self.rtp if self.mux else self.rtcp

    def configure(self, config: LegConfig, family: int) -> None:
        rtp_peer, rtcp_peer = sockaddr(family, config.rtp_peer), sockaddr(family, config.rtcp_peer)
        trusted = trusted_hosts(family, config)
        # The lock stays while the SDP's address and the signalling host stay (a re-INVITE that only
        # changes codecs or keys); a change learns the party's address again.
        if (rtp_peer, trusted) != (self.rtp.expected, self.rtp.trusted) or not self.rtp.confirmed:
            self.rtp.expect(rtp_peer, trusted)
            self.rtcp.expect(rtcp_peer, trusted)
        elif rtcp_peer != self.rtcp.expected or not self.rtcp.confirmed:
            self.rtcp.expect(rtcp_peer, trusted)
        self.mux = config.rtcp_mux
        self.clock_rate = config.clock_rate
        self.received.set_clock_rate(config.clock_rate)
        if config.srtp_key is None and not config.want_srtp:
            self.party_key = self.relay_key = self.srtp_in = self.srtp_out = None
            return
        if config.srtp_key is None:
            # Until the party's key comes, nothing it sends authenticates: a throwaway key drops it all.
            self.party_key, self.srtp_in = None, rtp.srtp_session(rtp.new_key(), inbound=True)
        elif config.srtp_key != self.party_key:
            self.party_key = config.srtp_key
            self.srtp_in = rtp.srtp_session(config.srtp_key, inbound=True)
        if self.relay_key is None:  # ours stays for the whole session: re-offers repeat it
            self.relay_key = rtp.new_key()
            self.srtp_out = rtp.srtp_session(self.relay_key, inbound=False)

    def restore(self, config: LegConfig, state: LegState, family: int) -> None:
        if state.relay_key is not None:  # the party has it from our SDP: it stays
            self.relay_key = state.relay_key
            self.srtp_out = rtp.srtp_session(state.relay_key, inbound=False)
        self.configure(config, family)
        if state.rtp_latched is not None:
            self.rtp.relatch(family, state.rtp_latched)
        if state.rtcp_latched is not None:
            self.rtcp.relatch(family, state.rtcp_latched)

    def dropped(self) -> int:
        return self.dropped_source + self.dropped_malformed + self.dropped_srtp

    def allocation(self) -> LegAllocation:
        port = self.rtp.sock.getsockname()[1]
        return LegAllocation(port, port if self.mux else port + 1, self.relay_key)

    def counters(self) -> LegCounters:
        received = self.received
        peer = self.rtp.peer
        return LegCounters(
            received=DirectionCounters(
                received.packets, received.bytes, received.lost, received.jitter_ms, received.rtcp_packets
            ),
            sent=DirectionCounters(self.sent_packets, self.sent_bytes, 0, 0.0, self.sent_rtcp),
            dropped_unexpected_source=self.dropped_source,
            dropped_malformed=self.dropped_malformed,
            dropped_srtp=self.dropped_srtp,
            rtp_peer=f"{peer[0]}:{peer[1]}" if peer else "",
            latches=self.latches,
        )

    def activity(self) -> int:
        return self.received.packets + self.received.rtcp_packets


@dataclass
class Session:
    id: str
    legs: tuple[Leg, Leg]
    timeout: float  # 0: never
    created: float
    last_active: float
    last_activity: int = 0
    reported: int = 0  # activity at the last report

    def counters(self, now: float) -> SessionCounters:
        return SessionCounters(self.legs[0].counters(), self.legs[1].counters(), now - self.created)


def host_form(family: int, host: str) -> str:
    """`host` as recvfrom reports a source's host on a socket of `family` (IPv4 mapped on IPv6)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidRequest(f"{host!r} is not an IP address") from None
    return f"::ffff:{ip}" if family == socket.AF_INET6 and ip.version == 4 else str(ip)


def trusted_hosts(family: int, config: LegConfig) -> frozenset[str]:
    """Hosts whose sources may pass probation: the signalling host and the SDP's host unless the
    SDP names a NATed address (then its packets come from elsewhere)."""
    hosts = set()
    if config.signalling_host:
        hosts.add(host_form(family, config.signalling_host))
    if config.rtp_peer is not None:
        host = config.rtp_peer[0]
        ip = ipaddress.ip_address(host)
        if not any(ip.version == net.version and ip in net for net in NATED_NETWORKS):
            hosts.add(host_form(family, host))
    return frozenset(hosts)


def sockaddr(family: int, address: tuple[str, int] | None) -> Address | None:
    """The form recvfrom reports for `address`, so that a plain tuple comparison matches it."""
    if address is None:
        return None
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise InvalidRequest(f"{host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise InvalidRequest(f"port {port} is out of range")
    if family == socket.AF_INET6:
        mapped = f"::ffff:{ip}" if ip.version == 4 else str(ip)
        return (mapped, port, 0, 0)
    if ip.version != 4:
        raise InvalidRequest(f"{host} is IPv6 but the relay listens on IPv4")
    return (str(ip), port)


class PortPool:
    """Even/odd port pairs of a range; freed pairs go to the back, so a port is reused as late as
    possible (stale packets of an old call do not reach a new one)."""

    def __init__(self, host: str, low: int, high: int) -> None:
        self.host = host
        self.family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        first = low + (low % 2)
        self._free: deque[int] = deque(range(first, high, 2))  # high: the last RTCP port may be `high`
        self.size = len(self._free)

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self) -> tuple[socket.socket, socket.socket]:
        """Two bound sockets on the next free pair; skips pairs some other program holds."""
        for _ in range(len(self._free)):
            port = self._free.popleft()
            try:
                return self._bind_pair(port)
            except OSError:
                self._free.append(port)  # held by someone else: to the back
        raise PortsExhausted("no free media port pair")

    def take_pair(self, port: int) -> tuple[socket.socket, socket.socket]:
        """The pair `port`, `port + 1` (a restored session's); PortInUse when it cannot be had."""
        try:
            self._free.remove(port)
        except ValueError:
            raise PortInUse(f"ports {port}-{port + 1} are not a free pair of this relay's range") from None
        try:
            return self._bind_pair(port)
        except OSError as exc:
            self._free.append(port)
            raise PortInUse(f"cannot bind ports {port}-{port + 1}: {exc.strerror or exc}") from None

    def give_back(self, rtp_sock: socket.socket, rtcp_sock: socket.socket) -> None:
        port = rtp_sock.getsockname()[1]
        rtp_sock.close()
        rtcp_sock.close()
        self._free.append(port)

    def _bind_pair(self, port: int) -> tuple[socket.socket, socket.socket]:
        first = self._bind(port)
        try:
            return first, self._bind(port + 1)
        except OSError:
            first.close()
            raise

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # best effort: the kernel may cap it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        return sock


class Engine:
    """Sessions of one port slice and the loop that relays their packets."""

    def __init__(
        self, host: str, low: int, high: int, policy: LatchPolicy | None = None, batch: int = BATCH
    ) -> None:
        self.ports = PortPool(host, low, high)
        self.policy = policy or LatchPolicy()
        self.sessions: dict[str, Session] = {}
        self._flows: dict[int, Flow] = {}
        self._epoll = select.epoll()
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)
        self._running = False
        self.batch = batch if mmsg.AVAILABLE else 0
        self._receiver = mmsg.Receiver(self.ports.family, self.batch) if self.batch else None
        # Since the engine started; counted per packet so a report need not visit every session at once.
        self.relayed_packets = self.dropped_source = self.dropped_malformed = self.dropped_srtp = 0
        # Background passes over the sessions, a slice per loop turn, between packets.
        self._passes: deque[Iterator[None]] = deque()

    # ---- session management (called from `handle`, between packets) ----

    def create(
        self,
        session_id: str,
        configs: tuple[LegConfig, LegConfig],
        timeout: float,
        states: tuple[LegState, LegState] | None = None,
    ) -> tuple[LegAllocation, LegAllocation]:
        """A new session on the next free ports, or with `states` a restored one on its old ports."""
        if session_id in self.sessions:
            raise SessionExists(f"session {session_id!r} exists")
        legs: list[Leg] = []
        now = time.monotonic()
        try:
            for index, config in enumerate(configs):
                if states is None:
                    leg = Leg(*self.ports.take(), self.policy)
                    legs.append(leg)
                    leg.configure(config, self.ports.family)
                else:
                    leg = Leg(*self.ports.take_pair(states[index].rtp_port), self.policy)
                    legs.append(leg)
                    leg.restore(config, states[index], self.ports.family)
        except (LocalError, ValueError, pylibsrtp.Error) as exc:
            for leg in legs:
                self.ports.give_back(leg.rtp.sock, leg.rtcp.sock)
            raise exc if isinstance(exc, LocalError) else InvalidRequest(str(exc)) from None
        a, b = legs
        a.other, b.other = b, a
        self.sessions[session_id] = Session(session_id, (a, b), timeout, now, now)
        for leg in legs:
            for flow in (leg.rtp, leg.rtcp):
                self._flows[flow.sock.fileno()] = flow
                self._epoll.register(flow.sock.fileno(), select.EPOLLIN)
        return a.allocation(), b.allocation()

    def update(
        self, session_id: str, configs: tuple[LegConfig | None, LegConfig | None]
    ) -> tuple[LegAllocation, LegAllocation]:
        session = self._get(session_id)
        session.last_active = time.monotonic()  # new SDP (an answer, a re-INVITE): the clock starts again
        for leg, config in zip(session.legs, configs, strict=True):
            if config is not None:
                try:
                    leg.configure(config, self.ports.family)
                except (ValueError, pylibsrtp.Error) as exc:
                    raise InvalidRequest(str(exc)) from None
        return session.legs[0].allocation(), session.legs[1].allocation()

    def delete(self, session_id: str) -> SessionCounters:
        session = self._get(session_id)
        counters = session.counters(time.monotonic())
        del self.sessions[session_id]
        for leg in session.legs:
            for flow in (leg.rtp, leg.rtcp):
                fd = flow.sock.fileno()
                self._epoll.unregister(fd)
                del self._flows[fd]
            self.ports.give_back(leg.rtp.sock, leg.rtcp.sock)
        return counters

    def stats(self, session_id: str) -> SessionCounters:
        return self._get(session_id).counters(time.monotonic())

    def _report_slices(self) -> Generator[None, None, EngineReport]:
        """Sessions with packets since the last report and their parties' latched addresses, and
        the totals; yields between slices of sessions."""
        active = {}
        for n, session in enumerate(list(self.sessions.values()), 1):
            if n % PASS_SLICE == 0:
                yield
            if self.sessions.get(session.id) is not session:
                continue  # ended meanwhile
            a, b = session.legs
            activity = a.activity() + b.activity()
            if activity != session.reported:
                session.reported = activity
                active[session.id] = (
                    (a.rtp.latched(), a.rtcp.latched()),
                    (b.rtp.latched(), b.rtcp.latched()),
                )
        return EngineReport(
            active, self.relayed_packets, self.dropped_source, self.dropped_malformed, self.dropped_srtp
        )

    def _report_pass(self, conn: Connection, request_id: int) -> Iterator[None]:
        report = yield from self._report_slices()
        self._send(conn, (request_id, True, report))

    def _sweep_pass(self, conn: Connection, now: float) -> Iterator[None]:
        """End the sessions without packets for their timeout (`_expired`), telling the owner."""
        for n, session in enumerate(list(self.sessions.values()), 1):
            if n % PASS_SLICE == 0:
                yield
            if self.sessions.get(session.id) is session and self._expired(session, now):
                self._send(conn, (None, "timeout", (session.id, self.delete(session.id))))

    @staticmethod
    def _expired(session: Session, now: float) -> bool:
        """Whether the session had no packets for its timeout. The clock runs only once both parties
        are known: a call that rings without early media has no media to miss yet."""
        a, b = session.legs
        activity = a.activity() + b.activity()
        if activity != session.last_activity or a.rtp.peer is None or b.rtp.peer is None:
            session.last_activity, session.last_active = activity, now
            return False
        return bool(session.timeout) and now - session.last_active >= session.timeout

    def _get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise SessionNotFound(f"no session {session_id!r}") from None

    # ---- the packet path ----

    def relay(self, flow: Flow, now: float) -> None:
        """Relay one packet from a readable socket: check, latch, count, decrypt/encrypt, forward.

        One packet per readiness event, not a drain loop: at call rates a socket holds one packet
        when epoll reports it, and draining costs a second `recvfrom_into` that fails with EAGAIN
        (a system call and a Python exception per packet). The poll is level-triggered, so a socket
        with more queued is reported again on the next round, after every other ready socket had
        its turn: one busy call cannot starve the others. Such a socket is then read with
        `relay_batch` (see `run`)."""
        leg, buf, view = flow.leg, self._buf, self._view
        out = leg.other
        try:
            size, src = flow.sock.recvfrom_into(buf)
        except OSError:  # EAGAIN (spurious wake-up) or an ICMP error: no packet
            return
        if size < rtp.RTCP_HEADER or buf[0] & 0xC0 != 0x80:
            leg.dropped_malformed += 1
            self.dropped_malformed += 1
            return
        rtcp = flow.rtcp_only or (leg.mux and 192 <= buf[1] <= 223)
        if not rtcp and size < rtp.RTP_HEADER:
            leg.dropped_malformed += 1
            self.dropped_malformed += 1
            return
        data: memoryview | bytes = view[:size]
        if leg.srtp_in is not None:
            try:
                packet = bytes(data)
                data = leg.srtp_in.unprotect_rtcp(packet) if rtcp else leg.srtp_in.unprotect(packet)
            except pylibsrtp.Error:  # forged, replayed or not SRTP at all
                leg.dropped_srtp += 1
                self.dropped_srtp += 1
                return
            size = len(data)
        if src != flow.peer:
            if not flow.admit(src, memoryview(data), rtcp):
                self.dropped_source += 1
                return
        elif not flow.confirmed:  # from the SDP's address: locks at once
            flow.confirmed, flow.candidates = True, {}
        if rtcp:
            leg.received.rtcp_packets += 1
            target = out.rtcp_out
        else:
            leg.received.on_rtp(view if leg.srtp_in is None else memoryview(data), size, now)
            target = out.rtp
        peer = target.peer
        if peer is None:  # the other party's address is not known yet
            return
        if out.srtp_out is not None:
            try:
                data = out.srtp_out.protect_rtcp(bytes(data)) if rtcp else out.srtp_out.protect(bytes(data))
            except pylibsrtp.Error:
                out.dropped_srtp += 1
                self.dropped_srtp += 1
                return
        try:
            target.sock.sendto(data, peer)
        except OSError:  # full buffer, unreachable network: a lost packet, as on the wire
            return
        if rtcp:
            out.sent_rtcp += 1
        else:
            self.relayed_packets += 1  # RTP only, as /metrics says
            out.sent_packets += 1
            out.sent_bytes += len(data)

    def relay_batch(self, flow: Flow, now: float) -> None:
        """`relay` for each datagram one recvmmsg reads (up to `batch`): the same checks, latching and
        counters, packet by packet, each relayed one sent with its own `sendto`. For a socket with
        packets queued (see `run`); with one, it costs more than `relay`."""
        receiver = self._receiver
        assert receiver is not None
        got = receiver.receive(flow.sock.fileno())
        flow.deep = got > 1
        if not got:
            return
        buf, view, slot = receiver.buf, receiver.view, mmsg.SLOT
        sizes, stride, first = receiver.sizes, receiver.stride, receiver.first
        leg = flow.leg
        out = leg.other
        # Almost always every datagram is from the lock: one comparison instead of an address each.
        same = receiver.all_from(flow.peer, got)
        for i in range(got):
            size = sizes[i * stride + first]
            off = i * slot
            if size < rtp.RTCP_HEADER or buf[off] & 0xC0 != 0x80:
                leg.dropped_malformed += 1
                self.dropped_malformed += 1
                continue
            rtcp = flow.rtcp_only or (leg.mux and 192 <= buf[off + 1] <= 223)
            if not rtcp and size < rtp.RTP_HEADER:
                leg.dropped_malformed += 1
                self.dropped_malformed += 1
                continue
            datagram = view[off : off + size]
            data: memoryview | bytes = datagram
            if leg.srtp_in is not None:
                try:
                    packet = bytes(data)
                    data = leg.srtp_in.unprotect_rtcp(packet) if rtcp else leg.srtp_in.unprotect(packet)
                except pylibsrtp.Error:
                    leg.dropped_srtp += 1
                    self.dropped_srtp += 1
                    continue
                size = len(data)
            if not same and (src := receiver.source(i)) != flow.peer:
                if not flow.admit(src, memoryview(data), rtcp):
                    self.dropped_source += 1
                    continue
            elif not flow.confirmed:
                flow.confirmed, flow.candidates = True, {}
            if rtcp:
                leg.received.rtcp_packets += 1
                target = out.rtcp_out
            else:
                leg.received.on_rtp(datagram if leg.srtp_in is None else memoryview(data), size, now)
                target = out.rtp
            peer = target.peer
            if peer is None:
                continue
            if out.srtp_out is not None:
                try:
                    packet = bytes(data)
                    data = out.srtp_out.protect_rtcp(packet) if rtcp else out.srtp_out.protect(packet)
                except pylibsrtp.Error:
                    out.dropped_srtp += 1
                    self.dropped_srtp += 1
                    continue
            try:
                target.sock.sendto(data, peer)
            except OSError:
                continue
            if rtcp:
                out.sent_rtcp += 1
            else:
                self.relayed_packets += 1
                out.sent_packets += 1
                out.sent_bytes += len(data)

    def run(self, conn: Connection) -> None:
        """Serve `conn` and relay until a "stop" request; then close every session."""
        control_fd = conn.fileno()
        self._epoll.register(control_fd, select.EPOLLIN)
        self._running = True
        flows, relay, poll, clock = self._flows, self.relay, self._epoll.poll, time.monotonic
        passes = self._passes
        next_sweep = clock() + SWEEP_INTERVAL
        batch, relay_batch, turn = self.batch, self.relay_batch, 0
        while self._running:
            events = poll(0 if passes else SWEEP_INTERVAL)
            now = clock()
            turn += 1
            for fd, _ in events:
                flow = flows.get(fd)
                if flow is not None:
                    # A socket ready again within two turns (a poll returns at most 1,023 sockets),
                    # or whose last batch held several, has packets queued: one recvmmsg takes them.
                    # At call rates a socket is ready every 20 ms, many turns apart: one read each.
                    if batch and (flow.deep or turn - flow.turn <= 2):
                        relay_batch(flow, now)
                    else:
                        relay(flow, now)
                    flow.turn = turn
                elif fd == control_fd:
                    self._serve(conn)
            if now >= next_sweep:
                next_sweep = now + SWEEP_INTERVAL
                passes.append(self._sweep_pass(conn, now))
            if passes:
                try:
                    next(passes[0])
                except StopIteration:
                    passes.popleft()
        self._epoll.close()

    def _serve(self, conn: Connection) -> None:
        try:
            while conn.poll():
                replies = []  # to a batch of requests (EnginePool sends a loop turn's at once): one message
                for request_id, op, args in conn.recv():
                    if op == "report":  # answered once its pass is done, a slice per loop turn
                        self._passes.append(self._report_pass(conn, request_id))
                    else:
                        replies.append(self.handle(request_id, op, args))
                if replies:
                    self._send(conn, replies)
        except (EOFError, OSError):  # the owner went away: nobody will ever delete these sessions
            self.stop()

    def handle(self, request_id: int, op: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        try:
            result: Any
            if op == "create":
                result = self.create(*args)
            elif op == "update":
                result = self.update(*args)
            elif op == "delete":
                result = self.delete(*args)
            elif op == "stats":
                result = self.stats(*args)
            elif op == "stop":
                result = self.stop()
            else:
                raise InvalidRequest(f"unknown operation {op!r}")
        except LocalError as exc:
            return (request_id, False, (CODE_OF.get(type(exc), "invalid"), str(exc)))
        return (request_id, True, result)

    def stop(self) -> dict[str, SessionCounters]:
        """End every session (ports back to the pool) and leave the loop."""
        self._running = False
        return {session_id: self.delete(session_id) for session_id in list(self.sessions)}

    @staticmethod
    def _send(conn: Connection, message: tuple[Any, ...] | list[tuple[Any, ...]]) -> None:
        with contextlib.suppress(OSError):  # the owner is gone; `run` notices on the next read
            conn.send(message)


def run_worker(conn: Connection, host: str, low: int, high: int, policy: LatchPolicy) -> None:
    """Entry point of a worker process or thread. Binding errors surface on the first "create"."""
    with contextlib.suppress(ValueError, OSError):  # two sockets per port pair; raise the soft limit
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole process group
        Engine(host, low, high, policy).run(conn)
