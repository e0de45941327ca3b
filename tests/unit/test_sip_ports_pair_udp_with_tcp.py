"""SIP listens on UDP and TCP at one port number. With port 0 the kernel picks the UDP port, and that
number may already be held on TCP (by any outgoing connection): another port is tried then."""

from __future__ import annotations

import socket

import pytest

from trunkline.core import net
from trunkline.core.net import ConfigError, HostPort, bind_udp_and_tcp


def test_both_sockets_share_a_port() -> None:
    udp, tcp = bind_udp_and_tcp(HostPort("127.0.0.1", 0), "test")
    with udp, tcp:
        assert udp.type == socket.SOCK_DGRAM and tcp.type == socket.SOCK_STREAM
        assert udp.getsockname()[1] == tcp.getsockname()[1] != 0


def test_a_port_held_on_tcp_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    real_bind, tried = net.bind, []

    def bind(addr: HostPort, kind: socket.SocketKind, what: str, shared: bool = False) -> socket.socket:
        if kind == socket.SOCK_STREAM:
            tried.append(addr.port)
            if len(tried) == 1:  # the first UDP port's number is busy on TCP
                raise ConfigError(f"{what}: cannot listen on {addr} (tcp): address already in use")
        return real_bind(addr, kind, what, shared)

    monkeypatch.setattr(net, "bind", bind)
    udp, tcp = bind_udp_and_tcp(HostPort("127.0.0.1", 0), "test")
    with udp, tcp:
        # Skipped: the first number. (Another kernel pick may really be busy on TCP too: then a third.)
        assert len(tried) >= 2 and tcp.getsockname()[1] == udp.getsockname()[1] == tried[-1]


def test_a_given_port_busy_on_tcp_is_an_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"test: cannot listen on 127.0.0.1:{port} \(tcp\)"):
            bind_udp_and_tcp(HostPort("127.0.0.1", port), "test")
