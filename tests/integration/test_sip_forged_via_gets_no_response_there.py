"""A request whose top Via carries a forged received=/rport= (RFC 3581 values only we may write) is
answered where it really came from, over real UDP sockets: nothing reaches the forged address."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from trunkline.sip.stack import Incoming, SipStack

pytestmark = pytest.mark.integration


def bound(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def test_the_response_goes_to_the_real_source_not_the_forged_one() -> None:
    stack = SipStack()

    def on_request(inc: Incoming) -> None:
        stack.respond(inc.request.create_response(200, to_tag="edge"))

    stack.bind(on_request, lambda *_: None, lambda _: None)
    _, port = await stack.transport.listen_udp("127.0.0.1", 0)
    sender, forged = bound("127.0.0.2"), bound("127.0.0.3")
    forged_port = forged.getsockname()[1]
    request = (
        "OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:{sender.getsockname()[1]};branch=z9hG4bKforged;"
        f"received=127.0.0.3;rport={forged_port}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.2>;tag=1\r\nTo: <sip:edge@127.0.0.1>\r\n"
        "Call-ID: forged-via\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    try:
        sender.sendto(request, ("127.0.0.1", port))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        answer = b""
        while not answer and loop.time() < deadline:
            with contextlib.suppress(BlockingIOError):
                answer = sender.recv(65536)
            await asyncio.sleep(0.05)
        assert answer.startswith(b"SIP/2.0 200"), "no response at the real source"
        with pytest.raises(BlockingIOError):
            forged.recv(65536)  # the response above was sent once, and not here
    finally:
        sender.close()
        forged.close()
        await stack.close()
