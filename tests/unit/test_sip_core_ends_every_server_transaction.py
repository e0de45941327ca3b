"""Every server transaction ends: one the TU leaves unanswered is answered 500 by the layer after
64*T1 (an INVITE that got a provisional: 300 s after the latest one); a TU handler that raises gets
its request a final response (the error's status, 503 for the store, else 500) and one log line."""

from __future__ import annotations

import asyncio
import logging

import pytest

from trunkline.core.state import StoreUnavailable
from trunkline.sip import Request
from trunkline.sip.errors import SipParseError
from trunkline.sip.stack import Incoming, SipStack
from trunkline.sip.transaction import Addr, Send, Timers, TransactionLayer
from trunkline.sip.transport import SipTransport

PEER = ("127.0.0.2", 5060)


def request(method: str, branch: str = "z9hG4bKend") -> bytes:
    return (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.2>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def sends(layer: TransactionLayer, until: float) -> list[tuple[float, bytes]]:
    seen: list[tuple[float, bytes]] = []
    while (at := layer.next_deadline()) is not None and at <= until:
        seen += [(at, a.data) for a in layer.handle_timer(at) if isinstance(a, Send)]
    return seen


def test_an_unanswered_request_is_answered_500_after_64_t1_and_its_transaction_ends() -> None:
    layer = TransactionLayer()
    layer.receive_data(request("OPTIONS"), PEER, "udp", 0.0)
    seen = sends(layer, 1000.0)
    assert [(t, d.split(b"\r\n")[0]) for t, d in seen] == [
        (32.0, b"SIP/2.0 500 Server Internal Error (no answer)")
    ]
    assert layer.transactions == {}


def test_an_invite_that_rings_is_answered_500_300_s_after_its_latest_provisional() -> None:
    layer = TransactionLayer(Timers(trying=10.0))
    (deliver,) = layer.receive_data(request("INVITE"), PEER, "udp", 0.0)
    invite = deliver.message  # type: ignore[union-attr]
    assert isinstance(invite, Request)
    sends(layer, 5.0)
    layer.send_response(invite.create_response(180, to_tag="b1"), 5.0)
    assert sends(layer, 304.0) == []  # 64*T1 is long past: the provisional moved the deadline
    first = sends(layer, 305.2)
    assert [d.split(b"\r\n")[0] for _, d in first] == [b"SIP/2.0 500 Server Internal Error (no answer)"]
    sends(layer, 1000.0)  # retransmitted until Timer H, then the transaction is gone
    assert layer.transactions == {}


def test_a_final_answer_in_time_stops_the_deadline() -> None:
    layer = TransactionLayer()
    (deliver,) = layer.receive_data(request("OPTIONS"), PEER, "udp", 0.0)
    layer.send_response(deliver.message.create_response(200, to_tag="t"), 1.0)  # type: ignore[union-attr]
    assert sends(layer, 1000.0) == []


class RecordingTransport(SipTransport):
    def __init__(self) -> None:
        super().__init__(lambda *_: None)
        self.sent: list[tuple[bytes, Addr, str]] = []

    def send(self, data: bytes, addr: Addr, transport: str) -> None:
        self.sent.append((data, addr, transport))


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SipParseError("Bad Event", 489), b"489 Bad Event"),
        (StoreUnavailable("down"), b"503 Service Unavailable"),
        (KeyError("bug"), b"500 Server Internal Error"),
    ],
)
async def test_a_handler_that_raises_gets_its_request_a_final_answer_and_one_log_line(
    error: Exception, status: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(inc: Incoming) -> None:
        await asyncio.sleep(0)
        raise error

    transport = RecordingTransport()
    stack = SipStack(handler, transport=transport)
    with caplog.at_level(logging.ERROR, logger="trunkline.sip.stack"):
        transport.datagram(request("SUBSCRIBE"), PEER)
        for _ in range(20):
            await asyncio.sleep(0)
    await stack.close()
    assert [d.split(b"\r\n")[0] for d, _, _ in transport.sent] == [b"SIP/2.0 " + status]
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None  # one line, no traceback


async def test_a_handler_that_answered_before_raising_gets_no_second_answer() -> None:
    transport = RecordingTransport()
    stack: SipStack

    def handler(inc: Incoming) -> None:
        stack.respond(inc.request.create_response(200, to_tag="t"))
        raise RuntimeError("after the answer")

    stack = SipStack(handler, transport=transport)
    transport.datagram(request("OPTIONS"), PEER)
    await stack.close()
    assert [d.split(b"\r\n")[0] for d, _, _ in transport.sent] == [b"SIP/2.0 200 OK"]


class FailingLayer:
    """The stack's real transaction layer, but failing on messages that carry `X-Boom` as our own bug
    would (the compiled core raises TypeError for a value of an unexpected type)."""

    def __init__(self, real: TransactionLayer) -> None:
        self.real = real

    def receive_data(self, data: bytes, addr: Addr, transport: str, now: float) -> list[object]:
        if b"X-Boom" in data:
            raise TypeError("str object expected; got int")
        return self.real.receive_data(data, addr, transport, now)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


async def test_a_message_the_core_fails_on_is_dropped_logged_sparingly_and_the_next_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(inc: Incoming) -> None:
        stack.respond(inc.request.create_response(200, to_tag="t"))

    transport = RecordingTransport()
    stack = SipStack(handler, transport=transport)
    stack.layer = FailingLayer(stack.layer)  # type: ignore[assignment]
    boom = request("OPTIONS", branch="z9hG4bKboom").replace(b"Content-Length", b"X-Boom: 1\r\nContent-Length")
    with caplog.at_level(logging.ERROR, logger="trunkline.sip.stack"):
        for _ in range(5):
            transport.datagram(boom, PEER)  # raises nothing
        transport.datagram(request("OPTIONS"), PEER)
        for _ in range(20):
            await asyncio.sleep(0)
    await stack.close()
    assert stack.core_failures == 5
    logged = [r.getMessage() for r in caplog.records if "SIP core failed" in r.getMessage()]
    assert len(logged) == 3  # the 1st, 2nd and 4th
    assert "TypeError" in logged[0] and "127.0.0.2" in logged[0]
    assert not any(r.exc_info for r in caplog.records)  # no traceback
    assert [d.split(b"\r\n")[0] for d, _, _ in transport.sent] == [b"SIP/2.0 200 OK"]
