"""With `--service-listen` (edges sharing one address), an edge sends from the shared address (a peer
or NAT that keeps to the address it first heard from finds an edge there), and its Via names its own
socket without `rport`: a peer answers to the source IP at Via's port (RFC 3261 18.2.2), which is this
edge, never another one behind the shared address (with `rport` an RFC 3581 peer would answer to the
shared port, and the kernel may hand that to any edge)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.support.edge_harness import invite
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests

SERVICE_IP = "127.0.0.1"  # the edges' own sockets share its IP: answers come to IP:Via port


def receive(sock: socket.socket, want: bytes, timeout: float = 20.0) -> tuple[bytes, tuple[str, int]]:
    """The first datagram starting with `want` (others, such as 100 Trying, are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data, addr = sock.recvfrom(65535)
        if data.startswith(want):
            return data, (addr[0], addr[1])
        assert time.monotonic() < deadline, f"no {want!r} within {timeout} s"


def header(message: bytes, name: str) -> str:
    for line in message.decode().split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in {message!r}")


def busy_for(request: bytes) -> bytes:
    """486 to `request`, as a UAS writes it (all its Vias, a To tag)."""
    lines = request.decode().split("\r\n")
    copied = [line for line in lines if line.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
    to = header(request, "To") + ";tag=gw"
    return (
        "\r\n".join(["SIP/2.0 486 Busy Here", *copied, f"To: {to}", "Content-Length: 0", "", ""])
    ).encode()


def test_an_answer_to_an_edges_request_comes_back_to_that_edge(tmp_path: Path) -> None:
    carrier_port = free_port()
    service = (SERVICE_IP, free_port())
    gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gateway.bind(("127.0.0.1", carrier_port))
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.2", 0))
    edge = Up(tmp_path / "edge", manifests(carrier_port, free_port()),
              ["--service-listen", f"{service[0]}:{service[1]}"], command="edge").start()  # fmt: skip
    try:
        pbx.sendto(invite(call_id="via-check", source=pbx.getsockname()).encode(), service)
        request, source = receive(gateway, b"INVITE ")
        assert source == service  # what the carrier sees (and may keep to): the shared address
        via = header(request, "Via")
        assert via.split()[1].split(";")[0] == f"127.0.0.1:{edge.sip_port}"  # this edge's own socket
        assert "rport" not in via, via

        gateway.sendto(busy_for(request), (source[0], edge.sip_port))  # to the source IP at Via's port
        receive(gateway, b"ACK ")  # the edge's transaction got it: it acknowledges the final answer
        final, _ = receive(pbx, b"SIP/2.0 486")
        assert header(final, "Call-ID") == "via-check"
    finally:
        edge.stop()
        gateway.close()
        pbx.close()
