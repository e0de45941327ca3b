"""asyncio adapters: UDP, TCP and TLS with a connection table, framing, keep-alives and bounds.

Thin by design: it moves bytes. A datagram goes to the `on_message` callback as bytes, a stream is
framed (`StreamFramer`) into messages first; parsing, validation, Via stamping and error answers are
the transaction layer's (`TransactionLayer.receive_data` / `receive_message`). The stack hands back
`Send` actions which `send()` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from trunkline.sip.errors import SipParseError
from trunkline.sip.flood import FloodGuard, source_group
from trunkline.sip.message import MAX_MESSAGE_SIZE, KeepAlive, Message, StreamFramer
from trunkline.sip.peer_log import peer_log
from trunkline.sip.transaction import Addr

log = logging.getLogger(__name__)


def at_doubling(count: int) -> bool:
    """True at the 1st, 2nd, 4th, 8th... occurrence: how often a repeatable failure is logged."""
    return count & (count - 1) == 0


OnMessage = Callable[[bytes | Message, Addr, str], None]  # a datagram's bytes, or a framed message
UDP_RECEIVE_BUFFER = 4 << 20
DEFAULT_CONNECTIONS_PER_SOURCE: Final = 32
DEFAULT_HEADER_DEADLINE: Final = 10.0
DEFAULT_IDLE_TIMEOUT: Final = 120.0


@dataclass(frozen=True)
class StreamLimits:
    """Bounds on TCP/TLS connections peers open to us (docs/security.md).

    - at most `max_connections_per_source` accepted connections per source (IPv6: per /64);
    - a message, once its first byte arrived (or the connection was accepted), must be complete
      within `header_deadline` seconds, and a TLS handshake must finish within it too;
    - a connection with nothing in flight is closed after `idle_timeout` seconds without a byte
      (CRLF keep-alives count as traffic).
    """

    max_connections_per_source: int = DEFAULT_CONNECTIONS_PER_SOURCE
    header_deadline: float = DEFAULT_HEADER_DEADLINE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_connections_per_source < 1 or self.header_deadline <= 0 or self.idle_timeout <= 0:
            raise ValueError("stream limits: connections >= 1, deadline and idle timeout > 0")


class SipTransport:
    """Listens on UDP and TCP (and TLS when given a context); sends on the right socket/connection."""

    def __init__(
        self,
        on_message: OnMessage,
        *,
        max_size: int = MAX_MESSAGE_SIZE,
        idle_timeout: float | None = None,
        max_write_buffer: int = 1 << 20,
        limits: StreamLimits | None = None,
        flood: FloodGuard | None = None,
    ) -> None:
        self.on_message = on_message
        self.max_size = max_size
        limits = limits or StreamLimits()
        if idle_timeout is not None:
            limits = StreamLimits(limits.max_connections_per_source, limits.header_deadline, idle_timeout)
        # Both may be replaced before listening starts (the TLS handshake bound is set at listen time).
        self.limits = limits
        self.flood = flood  # None: no per-source rate limit
        self.max_write_buffer = max_write_buffer
        self.connections: dict[tuple[str, str, int], asyncio.StreamWriter] = {}
        self._accepted: dict[str, int] = {}  # accepted connections per source group
        self.refused_connections = 0  # over the per-source cap (for /metrics)
        self.deadline_closes = 0  # incomplete message past the header deadline (for /metrics)
        self.core_failures = 0  # connections closed because the core failed on their bytes (for /metrics)
        self._udp: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.tls_client: ssl.SSLContext | None = None  # None: connections we open do not verify
        # The name a TLS peer's certificate must carry, when we know it by a name rather than its
        # address (RFC 5922: the domain of the URI that led to it).
        self.tls_names: dict[Addr, str] = {}
        self.local: dict[str, Addr] = {}

    # -- listening ------------------------------------------------------------------------------
    async def listen_udp(self, host: str, port: int, sock: socket.socket | None = None) -> Addr:
        """Listen on host:port, or on `sock` when the caller bound it already (to report errors early)."""
        loop = asyncio.get_running_loop()
        where = {"sock": sock} if sock is not None else {"local_addr": (host, port)}
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), **where)
        udp = transport.get_extra_info("socket")
        if udp is not None:
            # Room for a burst of datagrams while the loop is busy (a GC pass, a slow callback): the
            # default ~200 KiB holds only ~100 of them, and each one dropped comes back retransmitted
            # 500 ms later on top of new work. The kernel caps it at net.core.rmem_max.
            with contextlib.suppress(OSError):
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        self._udp = transport
        self.local["udp"] = transport.get_extra_info("sockname")[:2]
        return self.local["udp"]

    async def listen_stream(
        self, host: str, port: int, tls: ssl.SSLContext | None = None, sock: socket.socket | None = None
    ) -> Addr:
        name = "tls" if tls else "tcp"

        def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Awaitable[None]:
            return self._accept(r, w, name)

        handshake = self.limits.header_deadline if tls else None  # a TLS handshake is bounded the same way
        if sock is not None:
            server = await asyncio.start_server(
                serve, sock=sock, ssl=tls, limit=self.max_size, ssl_handshake_timeout=handshake
            )
        else:
            server = await asyncio.start_server(
                serve, host, port, ssl=tls, limit=self.max_size, ssl_handshake_timeout=handshake
            )
        self._servers.append(server)
        self.local[name] = server.sockets[0].getsockname()[:2]
        return self.local[name]

    async def close(self) -> None:
        for writer in list(self.connections.values()):
            writer.close()
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()

    # -- receiving ------------------------------------------------------------------------------
    def datagram(self, data: bytes, addr: Addr) -> None:
        if self.flood is not None and not self.flood.admit(addr[0], len(data), time.monotonic()):
            return  # over its budget: not even parsed
        if data in (b"\r\n\r\n", b"\r\n"):
            return  # keep-alive on UDP: nothing to answer
        self.on_message(data, addr, "udp")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        """A connection a peer opened: counted against its source's cap, held to the header deadline
        from the start (a connection that never sends a message is closed after it)."""
        peer = writer.get_extra_info("peername")[:2]
        group = source_group(str(peer[0]))
        if self._accepted.get(group, 0) >= self.limits.max_connections_per_source:
            self.refused_connections += 1
            open_now = self._accepted[group]
            peer_log.info("refusing %s connection from %s: %d already open", name, peer, open_now)
            writer.close()
            return
        self._accepted[group] = self._accepted.get(group, 0) + 1
        try:
            await self._serve(reader, writer, name, pending_since=time.monotonic())
        finally:
            left = self._accepted.pop(group) - 1
            if left:
                self._accepted[group] = left

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        name: str,
        pending_since: float | None = None,
    ) -> None:
        peer = writer.get_extra_info("peername")[:2]
        self.connections[(name, peer[0], peer[1])] = writer
        framer = StreamFramer(self.max_size)
        limits = self.limits
        late = False
        try:
            while True:
                # Part of a message in hand: it must be complete by the deadline; else the idle bound.
                now = time.monotonic()
                wait, late = limits.idle_timeout, False
                if pending_since is not None:
                    left = pending_since + limits.header_deadline - now
                    late = left <= wait  # a timeout now means the deadline passed
                    if left <= 0:
                        raise TimeoutError
                    wait = min(wait, left)
                data = await asyncio.wait_for(reader.read(65536), wait)
                if not data:
                    break
                now = time.monotonic()
                flood = self.flood
                if flood is not None and not flood.admit(peer[0], len(data), now):
                    raise ConnectionError("source over its flood budget")
                items = framer.feed(data)  # raises on framing errors: the connection ends
                for i, item in enumerate(items):
                    if isinstance(item, KeepAlive):
                        writer.write(b"\r\n")  # RFC 5626 pong
                    else:
                        # Each further message in one read costs a message token too.
                        if i and flood is not None and not flood.admit(peer[0], 0, now):
                            raise ConnectionError("source over its flood budget")
                        self.on_message(item, peer, name)
                if framer.buffered == 0:
                    pending_since = None
                elif pending_since is None or items:
                    pending_since = now  # a new message started in this read
        except TimeoutError:
            self.deadline_closes += late
            why = "no complete message within the header deadline" if late else "idle"
            peer_log.info("closing %s connection from %s: %s", name, peer, why)
        except (SipParseError, ConnectionError, ssl.SSLError) as err:
            peer_log.info("closing %s connection from %s: %s", name, peer, err or type(err).__name__)
        except Exception as err:  # our bug on this stream's bytes (the framer): this connection only
            self.core_failures += 1
            if at_doubling(self.core_failures):  # a peer reconnecting to repeat it cannot flood the log
                log.error("closing %s connection from %s: SIP core failed (%d so far): %r", name, peer,
                          self.core_failures, err)  # fmt: skip
        finally:
            self.connections.pop((name, peer[0], peer[1]), None)
            writer.close()

    def tls_session(self, addr: Addr) -> ssl.SSLObject | None:
        """The TLS session (version, cipher, verified peer cert) of the live TLS connection with `addr`."""
        writer = self.connections.get(("tls", addr[0], addr[1]))
        session = writer.get_extra_info("ssl_object") if writer is not None else None
        return session if isinstance(session, ssl.SSLObject) else None

    # -- sending --------------------------------------------------------------------------------
    def send(self, data: bytes, addr: Addr, transport: str) -> None:
        if transport == "udp":
            if self._udp is not None:
                self._udp.sendto(data, addr)
            return
        writer = self.connections.get((transport, addr[0], addr[1]))
        if writer is None:
            task = asyncio.ensure_future(self._connect_and_send(data, addr, transport))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if writer.transport.get_write_buffer_size() > self.max_write_buffer:
            peer_log.info("closing %s connection to %s: peer is not reading", transport, addr)
            writer.close()  # a slow reader must not make us buffer without bound
            return
        writer.write(data)

    async def _connect_and_send(self, data: bytes, addr: Addr, transport: str) -> None:
        tls: ssl.SSLContext | None = None
        if transport == "tls":
            tls = self.tls_client or _unverified()
        name = self.tls_names.get(addr) if tls else None
        try:
            reader, writer = await asyncio.open_connection(
                addr[0], addr[1], ssl=tls, server_hostname=name, limit=self.max_size
            )
        except OSError as err:
            log.info("cannot connect to %s/%s: %s", addr, transport, err)
            return
        writer.write(data)
        await self._serve(reader, writer, transport)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner.datagram(data, (str(addr[0]), int(addr[1])))


def _unverified() -> ssl.SSLContext:
    """TLS without checking the peer: only for a transport nobody gave a client context (test UAs)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
