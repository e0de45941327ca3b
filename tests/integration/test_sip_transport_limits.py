"""Transport bounds: endless headers and trickling peers are cut off; CRLF pings get pongs; a slow
peer does not delay others; the top Via of requests gets received/rport."""

from __future__ import annotations

import asyncio

import pytest

from trunkline.sip import Message, Request
from trunkline.sip.transaction import Deliver, TransactionLayer
from trunkline.sip.transport import SipTransport

pytestmark = pytest.mark.integration

OPTIONS = (
    b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.9.9.9:5999;branch=z9hG4bKx;rport\r\n"
    b"From: <sip:b@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


async def start(max_size: int = 4096, idle: float = 5.0) -> tuple[SipTransport, int, list[Message]]:
    got: list[Message] = []
    layer = TransactionLayer()  # parses, stamps Via and validates what the transport frames

    def deliver(item: bytes | Message, addr: tuple[str, int], transport: str) -> None:
        actions = layer.receive_message(item, addr, transport, 0.0) if isinstance(item, Message) else []
        got.extend(a.message for a in actions if isinstance(a, Deliver))

    t = SipTransport(deliver, max_size=max_size, idle_timeout=idle)
    _, port = await t.listen_stream("127.0.0.1", 0)
    return t, port, got


async def test_endless_header_is_cut_off_with_bounded_memory() -> None:
    t, port, _ = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"INVITE sip:a SIP/2.0\r\nX: ")
    with pytest.raises((ConnectionError, OSError)):
        for _ in range(200):
            writer.write(b"a" * 1024)
            await writer.drain()
            await asyncio.sleep(0)
        assert await reader.read() == b""
        raise ConnectionResetError
    await t.close()


async def test_trickling_peer_hits_idle_timeout() -> None:
    t, port, _ = await start(idle=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"OPTIONS sip:a SIP/2.0\r\n")
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by us
    await t.close()


async def test_keepalive_pong_and_via_stamping_and_slow_peer_isolation() -> None:
    t, port, got = await start()
    _slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
    slow_w.write(OPTIONS[:30])  # a peer that stalls mid-message
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
    writer.write(OPTIONS)
    for _ in range(50):
        if got:
            break
        await asyncio.sleep(0.02)
    (msg,) = got
    assert isinstance(msg, Request)
    assert msg.top_via.params["received"] == "127.0.0.1" and msg.top_via.params["rport"] != ""
    slow_w.close()
    writer.close()
    await t.close()
