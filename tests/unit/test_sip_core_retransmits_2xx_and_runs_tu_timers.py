"""The transaction layer keeps the UAS core's 2xx retransmission (RFC 3261 13.3.1.4) and the TU's
timers as timers of its own: one clock (`now`) drives all of them, no loop task anywhere."""

from __future__ import annotations

from trunkline.sip import Request, parse_message
from trunkline.sip.transaction import AckTimeout, Send, TimerFired, TransactionLayer

PEER = ("127.0.0.2", 5060)


def message(method: str, branch: str, to_tag: str = "", cseq_method: str | None = None) -> Request:
    to = f"<sip:bob@127.0.0.1>;tag={to_tag}" if to_tag else "<sip:bob@127.0.0.1>"
    data = (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch={branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.2>;tag=a1\r\nTo: {to}\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {cseq_method or method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def answered(layer: TransactionLayer, transport: str = "udp") -> bytes:
    invite = message("INVITE", "z9hG4bKinv")
    layer.receive(invite, PEER, transport, 0.0)
    ok = invite.create_response(200, to_tag="b1")
    sent = layer.send_response(ok, 0.0)
    assert isinstance(sent[0], Send)
    return sent[0].data


def walk(layer: TransactionLayer, until: float) -> list[tuple[float, object]]:
    seen: list[tuple[float, object]] = []
    while (at := layer.next_deadline()) is not None and at <= until:
        seen += [(at, a) for a in layer.handle_timer(at)]
    return seen


def test_a_2xx_is_retransmitted_doubling_to_t2_until_64_t1_then_the_ack_timeout_is_reported() -> None:
    layer = TransactionLayer()
    ok = answered(layer)
    seen = walk(layer, 100.0)
    resent = [t for t, a in seen if isinstance(a, Send)]
    assert all(a.data == ok for _, a in seen if isinstance(a, Send))
    assert resent[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # T1, 2T1, 4T1, then every T2 (4 s)
    assert resent[-1] <= 32.0
    assert [(t, a) for t, a in seen if isinstance(a, AckTimeout)] == [(32.0, AckTimeout(("c1", "b1", "a1")))]


def test_the_ack_stops_the_retransmission_and_still_reaches_the_tu() -> None:
    layer = TransactionLayer()
    answered(layer)
    walk(layer, 2.0)
    out = layer.receive(message("ACK", "z9hG4bKack", to_tag="b1"), PEER, "udp", 2.0)
    assert [type(a).__name__ for a in out] == ["Deliver"]
    assert [a for _, a in walk(layer, 100.0) if isinstance(a, Send | AckTimeout)] == []


def test_a_dialog_that_ended_stops_its_2xx_and_leaves_nothing_behind() -> None:
    layer = TransactionLayer()
    answered(layer)
    layer.stop_answer(("c1", "b1", "a1"))
    assert [a for _, a in walk(layer, 100.0) if isinstance(a, Send | AckTimeout)] == []
    assert layer.transactions == {} and layer._answers == {}
    # Ended by its ACK or its timeout, a 2xx leaves no trace either (the per-dialog index included).
    answered(layer)
    layer.receive(message("ACK", "z9hG4bKack", to_tag="b1"), PEER, "udp", 1.0)
    walk(layer, 100.0)
    assert layer._answers == {}
    answered(layer)
    walk(layer, 100.0)
    assert layer._answers == {}


def test_an_ack_of_another_dialog_does_not_stop_it() -> None:
    layer = TransactionLayer()
    answered(layer)
    layer.receive(message("ACK", "z9hG4bKack", to_tag="other"), PEER, "udp", 1.0)
    assert any(isinstance(a, AckTimeout) for _, a in walk(layer, 100.0))


def test_over_a_reliable_transport_there_is_no_retransmission() -> None:
    layer = TransactionLayer()
    answered(layer, "tcp")
    assert [a for _, a in walk(layer, 100.0) if isinstance(a, Send | AckTimeout)] == []


def test_tu_timers_fire_in_order_on_the_layers_clock_and_a_cancelled_one_never_fires() -> None:
    layer = TransactionLayer()
    late = layer.set_timer(90.0, 0.0)
    early = layer.set_timer(5.0, 0.0)
    dropped = layer.set_timer(10.0, 0.0)
    layer.cancel_timer(dropped)
    assert layer.next_deadline() == 5.0
    assert layer.handle_timer(4.9) == []
    assert layer.handle_timer(5.0) == [TimerFired(early)]
    assert walk(layer, 1000.0) == [(90.0, TimerFired(late))]
    assert layer.transactions == {}
