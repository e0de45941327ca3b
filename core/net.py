"""Listen addresses: parsing HOST:PORT, and binding sockets up front so that a port in use is one clear
error before anything starts."""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import ssl
from dataclasses import dataclass


class ConfigError(Exception):
    """A bad flag, file or value given by the operator of the process: one readable line, exit 1."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def parse_host(text: str, flag: str, names: bool = False) -> str:
    """An IP address (`names`: or a DNS host name, kept as written)."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError(f"{flag}: empty host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        if host == "localhost":
            return "127.0.0.1"
        if names and _HOST_NAME.match(host):
            return host
        raise ConfigError(
            f"{flag}: {text!r} is not an IP address{' or host name' if names else ''}"
        ) from None


def parse_hostport(text: str, flag: str, default_port: int | None = None, names: bool = False) -> HostPort:
    """`HOST:PORT`, `[V6]:PORT`, or a bare host when a default port is given; HOST is an IP address
    (`names`: or a host name)."""
    raw = text.strip()
    host, port_text = raw, ""
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ConfigError(f"{flag}: {text!r} is not HOST:PORT (unclosed '[')")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{flag}: {text!r} is not HOST:PORT")
        port_text = rest[1:]
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    if not port_text:
        if default_port is None:
            raise ConfigError(f"{flag}: {text!r} is not HOST:PORT (no port)")
        port = default_port
    elif not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{flag}: port {port_text!r} is not a number from 0 to 65535")
    else:
        port = int(port_text)
    return HostPort(parse_host(host, flag, names), port)


def parse_port_range(text: str, flag: str) -> tuple[int, int]:
    lo_text, sep, hi_text = text.partition("-")
    if not sep or not lo_text.isdigit() or not hi_text.isdigit():
        raise ConfigError(f"{flag}: {text!r} is not a range LO-HI (e.g. 20000-20999)")
    lo, hi = int(lo_text), int(hi_text)
    if not 1024 <= lo < hi <= 65535:
        raise ConfigError(f"{flag}: {text!r} must satisfy 1024 <= LO < HI <= 65535")
    return lo, hi


PORT_PAIR_ATTEMPTS = 20


def bind(addr: HostPort, kind: socket.SocketKind, what: str, shared: bool = False) -> socket.socket:
    """Bind (and for TCP listen on) a socket, or raise ConfigError naming the address and protocol.
    `shared`: other processes may bind the same address (SO_REUSEPORT); the kernel spreads peers
    over them and moves a dead process's peers to the others."""
    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
    sock = socket.socket(addr.family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr.host, addr.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(512)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ConfigError(f"{what}: cannot listen on {addr} ({proto}): {reason}") from None
    return sock


def bind_udp_and_tcp(addr: HostPort, what: str, shared: bool = False) -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on one port (SIP serves both on its port). With port 0 the
    kernel picks the UDP port, whose number may be taken on TCP (every outgoing TCP connection holds
    one): then another port is tried."""
    attempts = PORT_PAIR_ATTEMPTS if addr.port == 0 else 1
    for attempt in range(attempts):
        udp = bind(addr, socket.SOCK_DGRAM, what, shared)
        try:
            return udp, bind(HostPort(addr.host, bound_port(udp)), socket.SOCK_STREAM, what, shared)
        except ConfigError:
            udp.close()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def tcp_listener(text: str, flag: str) -> socket.socket:
    """A listening TCP socket for a `HOST:PORT` flag (the ops HTTP server's), or ConfigError naming it."""
    return bind(parse_hostport(text, flag), socket.SOCK_STREAM, flag)


def bound_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def server_tls_context(cert: str | None, key: str | None, what: str = "--tls-listen") -> ssl.SSLContext:
    """The context a TLS listener serves `cert`/`key` with, or ConfigError naming the flag at fault."""
    if not cert or not key:
        raise ConfigError(f"{what} needs --tls-cert and --tls-key")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{flag}: cannot read {path}: no such file or not readable")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"--tls-cert {cert} / --tls-key {key}: not a usable certificate and key ({exc})"
        ) from None
    return context


def client_tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """What TLS connections we open verify peers with: the system's CAs, or those in `cafile`."""
    if cafile is not None and not os.access(cafile, os.R_OK):
        raise ConfigError(f"--tls-ca: cannot read {cafile}: no such file or not readable")
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"--tls-ca {cafile}: not a usable CA bundle ({exc})") from None
