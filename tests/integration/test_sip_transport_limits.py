"""Transport bounds: endless headers and trickling peers are cut off; CRLF pings get pongs; a slow
peer does not delay others; the top Via of requests gets received/rport."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.certs import tls_contexts
from trunkline.sip import Message, Request
from trunkline.sip import transport as transport_module
from trunkline.sip.flood import BURST_SECONDS, Budget, FloodGuard
from trunkline.sip.transaction import Deliver, TransactionLayer
from trunkline.sip.transport import SipTransport, StreamLimits

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


# -- per-source connection cap, header deadline, TLS handshake bound, flood guard ------------------------
async def closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the other side closes (EOF or reset) within `within` seconds."""
    try:
        while await asyncio.wait_for(reader.read(4096), within):
            pass
    except (ConnectionError, OSError):
        return True
    except TimeoutError:
        return False
    return True


async def wait_until(check: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_connections_per_source_are_capped() -> None:
    got: list[Message] = []
    t = SipTransport(lambda m, a, tr: got.append(m), limits=StreamLimits(max_connections_per_source=3))
    _, port = await t.listen_stream("127.0.0.1", 0)
    kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await wait_until(lambda: len(t.connections) == 3)
    extra_r, extra_w = await asyncio.open_connection("127.0.0.1", port)
    assert await closed_by_peer(extra_r, 10)
    assert t.refused_connections == 1
    # Another source is not affected, and the kept ones still carry messages.
    _other_r, other_w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
    other_w.write(OPTIONS)
    kept[0][1].write(OPTIONS)
    await wait_until(lambda: len(got) == 2)
    # A closed connection frees its place.
    kept[1][1].close()
    await wait_until(lambda: len(t.connections) == 3)
    _again_r, again_w = await asyncio.open_connection("127.0.0.1", port)
    again_w.write(OPTIONS)
    await wait_until(lambda: len(got) == 3)
    for w in (kept[0][1], kept[2][1], extra_w, other_w, again_w):
        w.close()
    await t.close()


async def test_a_trickled_message_is_cut_at_the_header_deadline() -> None:
    # Idle timeout far away: only the header deadline can close these.
    t = SipTransport(lambda m, a, tr: None, limits=StreamLimits(header_deadline=1.5, idle_timeout=300))
    _, port = await t.listen_stream("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)  # never sends a byte
    started = asyncio.get_running_loop().time()
    closed = False
    for byte in OPTIONS[:-4]:  # a byte every 0.2 s: never idle, never complete
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except (ConnectionError, OSError):
            closed = True
            break
        if reader.at_eof() or asyncio.get_running_loop().time() - started > 30:
            break
        await asyncio.sleep(0.2)
    assert closed or await closed_by_peer(reader, 10)
    assert asyncio.get_running_loop().time() - started < 30
    assert await closed_by_peer(silent_r, 10)
    assert t.deadline_closes >= 2
    writer.close()
    silent_w.close()
    await t.close()


async def test_a_completed_message_resets_the_deadline_and_pings_keep_it_open() -> None:
    got: list[Message] = []
    t = SipTransport(
        lambda m, a, tr: got.append(m), limits=StreamLimits(header_deadline=1.0, idle_timeout=300)
    )
    _, port = await t.listen_stream("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(3):  # a message, then quiet longer than the deadline: still open (idle bound applies)
        writer.write(OPTIONS)
        await asyncio.sleep(1.5)
    await wait_until(lambda: len(got) == 3)
    assert not reader.at_eof() and t.deadline_closes == 0
    writer.close()
    await t.close()


async def test_a_tls_handshake_that_never_comes_is_cut_off(tmp_path: Path) -> None:
    server_ctx, client_ctx, _, _ = tls_contexts(tmp_path)
    t = SipTransport(lambda m, a, tr: None, limits=StreamLimits(header_deadline=1.0, idle_timeout=300))
    _, port = await t.listen_stream("127.0.0.1", 0, tls=server_ctx)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # plain TCP, no ClientHello
    assert await closed_by_peer(reader, 15)
    writer.close()
    # A real TLS client still gets through.
    tls_r, tls_w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
    tls_w.write(b"\r\n\r\n")
    assert await asyncio.wait_for(tls_r.readexactly(2), 10) == b"\r\n"
    tls_w.close()
    await t.close()


async def test_udp_flood_from_one_source_is_dropped_before_parsing() -> None:
    got: list[tuple[str, int]] = []
    guard = FloodGuard(Budget(rate=5, bytes_per_second=1e9, cooldown=60))
    t = SipTransport(lambda m, a, tr: got.append(a), flood=guard)
    _, port = await t.listen_udp("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    flooder, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.3", 0))
    for _ in range(200):
        flooder.sendto(OPTIONS, ("127.0.0.1", port))
    await wait_until(lambda: guard.counters.admitted + guard.counters.dropped_rate
                     + guard.counters.dropped_cooldown >= 200)  # fmt: skip
    assert len(got) <= int(5 * BURST_SECONDS) and guard.counters.cooldowns == 1
    legit, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.4", 0))
    legit.sendto(OPTIONS, ("127.0.0.1", port))
    await wait_until(lambda: any(a[0] == "127.0.0.4" for a in got))
    flooder.close()
    legit.close()
    await t.close()


async def test_a_stream_the_core_fails_on_closes_that_connection_only_with_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug on a stream's bytes (a framer that raises what no peer error is, as the compiled core
    does with TypeError) ends that connection with no traceback; others go on. Logged at the 1st,
    2nd, 4th... such connection: a peer reconnecting to repeat it cannot flood the log."""
    real = transport_module.StreamFramer

    def framer(max_size: int) -> object:
        inner = real(max_size)

        class Wrapper:
            buffered = 0

            def feed(self, data: bytes) -> list[object]:
                if b"X-Boom" in data:
                    raise TypeError("str object expected; got int")
                items: list[object] = inner.feed(data)
                self.buffered = inner.buffered
                return items

        return Wrapper()

    monkeypatch.setattr(transport_module, "StreamFramer", framer)
    t, port, got = await start()
    with caplog.at_level(logging.INFO, logger="trunkline.sip.transport"):
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"X-Boom\r\n")
            assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by us
            writer.close()
        _, other = await asyncio.open_connection("127.0.0.1", port)
        other.write(OPTIONS)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
    assert [m.method for m in got if isinstance(m, Request)] == ["OPTIONS"]
    failed = [r for r in caplog.records if "SIP core failed" in r.getMessage()]
    assert len(failed) == 2 and "TypeError" in failed[0].getMessage()  # the 1st and 2nd of 3
    assert not any(r.exc_info for r in failed)
    assert t.core_failures == 3  # on /metrics as trunkline_sip_core_failures_total{where="stream"}
    other.close()
    await t.close()
