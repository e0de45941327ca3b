"""Transaction state machines (RFC 3261 17, RFC 6026) walked with injected time."""

from __future__ import annotations

from trunkline.sip import Request, Response, parse_message
from trunkline.sip.ids import new_branch
from trunkline.sip.transaction import (
    Deliver,
    Send,
    Timeout,
    Timers,
    TransactionLayer,
    build_cancel,
    server_key,
)

PEER = ("192.0.2.9", 5060)


def request(method: str = "INVITE", branch: str | None = None, cseq: int = 1) -> Request:
    data = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch or new_branch()};rport\r\n"
        "Route: <sip:proxy.example.com;lr>\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n"
        f"Call-ID: c1@example.com\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def walk(layer: TransactionLayer, until: float) -> list[tuple[float, object]]:
    """Fire every timer up to `until`, recording (time, action)."""
    seen: list[tuple[float, object]] = []
    while (at := layer.next_deadline()) is not None and at <= until:
        seen += [(at, a) for a in layer.handle_timer(at)]
    return seen


def test_invite_client_timer_a_doubles_and_timer_b_times_out() -> None:
    layer = TransactionLayer()
    assert isinstance(layer.send_request(request(), PEER, "udp", 0.0)[0], Send)
    seen = walk(layer, 100)
    sends = [t for t, a in seen if isinstance(a, Send)]
    assert sends == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # intervals 0.5, 1, 2, 4, 8, 16 (A is not capped)
    assert [(t, type(a)) for t, a in seen if not isinstance(a, Send)] == [(32.0, Timeout)]  # B = 64*T1
    assert layer.transactions == {}


def test_non_invite_client_timer_e_caps_at_t2_and_f_times_out() -> None:
    layer = TransactionLayer(Timers(t1=0.5, t2=4.0))
    layer.send_request(request("OPTIONS"), PEER, "udp", 0.0)
    seen = walk(layer, 100)
    sends = [t for t, a in seen if isinstance(a, Send)]
    assert sends == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [t for t, a in seen if isinstance(a, Timeout)] == [32.0]


def test_non_invite_client_in_proceeding_retransmits_every_t2_then_timer_k() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_request(req, PEER, "udp", 0.0)
    out = layer.receive(req.create_response(180), PEER, "udp", 0.2)
    assert isinstance(out[0], Deliver)
    seen = walk(layer, 9.0)
    assert [t for t, a in seen if isinstance(a, Send)] == [0.5, 4.5, 8.5]
    out = layer.receive(req.create_response(200), PEER, "udp", 9.0)
    assert isinstance(out[0], Deliver) and layer.next_deadline() == 9.0 + 5.0  # Timer K = T4
    assert layer.receive(req.create_response(200), PEER, "udp", 10.0) == []  # absorbed
    walk(layer, 20)
    assert layer.transactions == {}


def test_reliable_transport_has_no_retransmissions() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), PEER, "tcp", 0.0)
    seen = walk(layer, 100)
    assert [(t, type(a)) for t, a in seen] == [(32.0, Timeout)]


def test_invite_client_acks_non_2xx_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, PEER, "udp", 0.0)
    busy = inv.create_response(486, to_tag="b1")
    out = layer.receive(busy, PEER, "udp", 0.1)
    assert isinstance(out[0], Deliver) and isinstance(out[1], Send)
    ack = parse_message(out[1].data)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.cseq.method == "ACK" and ack.cseq.seq == 1
    assert ack.to.tag == "b1" and ack.top_via.branch == inv.top_via.branch and len(ack.via) == 1
    assert str(ack.uri) == str(inv.uri) and ack.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    again = layer.receive(busy, PEER, "udp", 1.0)
    assert [type(a) for a in again] == [Send] and again[0].data == out[1].data  # ACK resent, not delivered
    assert layer.next_deadline() == 0.1 + 32  # Timer D
    walk(layer, 40)
    assert layer.transactions == {}


def test_invite_client_accepted_state_passes_2xx_retransmissions_to_tu() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.send_request(inv, PEER, "udp", 0.0)
    ok = inv.create_response(200, to_tag="b1")
    assert [type(a) for a in layer.receive(ok, PEER, "udp", 0.1)] == [Deliver]
    assert [type(a) for a in layer.receive(ok, PEER, "udp", 0.6)] == [Deliver]  # RFC 6026
    assert layer.next_deadline() == 0.1 + 32  # Timer M
    walk(layer, 40)
    assert [type(a) for a in layer.receive(ok, PEER, "udp", 41)] == [Deliver]  # stray: to the TU


def test_invite_server_trying_final_timer_g_h_and_ack() -> None:
    layer = TransactionLayer()
    inv = request()
    out = layer.receive(inv, PEER, "udp", 0.0)
    assert isinstance(out[0], Deliver) and out[0].transaction == server_key(inv, "INVITE")
    assert layer.receive(inv, PEER, "udp", 0.1) == []  # retransmission before any response: absorbed
    trying = layer.handle_timer(0.2)
    assert isinstance(trying[0], Send) and trying[0].data.startswith(b"SIP/2.0 100 Trying")
    assert trying[0].addr == ("192.0.2.1", 5060)
    assert layer.receive(inv, PEER, "udp", 0.3)[0] == trying[0]  # retransmission: last response resent
    layer.send_response(inv.create_response(486, to_tag="x"), 1.0)
    seen = walk(layer, 10.0)
    assert [t for t, a in seen if isinstance(a, Send)] == [1.5, 2.5, 4.5, 8.5]  # G: 0.5, 1, 2, 4(=T2)
    ack = parse_message(inv.to_bytes().replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK"))
    assert layer.receive(ack, PEER, "udp", 10.0) == []  # absorbed; Confirmed
    assert layer.next_deadline() == 15.0  # Timer I = T4
    walk(layer, 20)
    assert layer.transactions == {}


def test_invite_server_timer_h_without_ack() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.receive(inv, PEER, "udp", 0.0)
    layer.send_response(inv.create_response(500), 0.0)
    seen = walk(layer, 100)
    assert [(t, type(a)) for t, a in seen if not isinstance(a, Send)] == [(32.0, Timeout)]


def test_invite_server_immediate_trying_and_accepted_state() -> None:
    layer = TransactionLayer(Timers(trying=0))
    inv = request()
    out = layer.receive(inv, PEER, "udp", 0.0)
    assert [type(a) for a in out] == [Deliver, Send]
    ok = inv.create_response(200, to_tag="x")
    assert [type(a) for a in layer.send_response(ok, 0.1)] == [Send]
    assert layer.send_response(ok, 0.6)[0].data == ok.to_bytes()  # TU retransmits 2xx (Accepted)
    assert layer.receive(inv, PEER, "udp", 0.7) == []  # INVITE retransmission absorbed
    ack = request("ACK", branch=new_branch())
    assert isinstance(layer.receive(ack, PEER, "udp", 0.8)[0], Deliver)  # 2xx ACK: to the TU
    walk(layer, 40)
    assert layer.transactions == {}


def test_non_invite_server_timer_j_and_retransmissions() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.receive(req, PEER, "udp", 0.0)
    resp = req.create_response(200)
    sent = layer.send_response(resp, 0.1)
    assert layer.receive(req, PEER, "udp", 1.0) == sent
    assert layer.next_deadline() == 0.1 + 32  # Timer J = 64*T1


def test_cancel_matches_the_invite_server_transaction() -> None:
    layer = TransactionLayer()
    inv = request()
    layer.receive(inv, PEER, "udp", 0.0)
    cancel = build_cancel(inv)
    assert cancel.cseq.seq == inv.cseq.seq and cancel.top_via.branch == inv.top_via.branch
    assert cancel.get_all("Route") == inv.get_all("Route")
    assert isinstance(layer.receive(cancel, PEER, "udp", 0.1)[0], Deliver)  # its own transaction
    assert layer.invite_for_cancel(cancel) == server_key(inv, "INVITE")


def test_rfc2543_requests_match_without_branch() -> None:
    layer = TransactionLayer()
    data = request("OPTIONS").to_bytes()
    import re

    data = re.sub(rb";branch=[^;\r]+", b"", data)
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert len(layer.receive(msg, PEER, "udp", 0.0)) == 1
    assert layer.receive(msg, PEER, "udp", 0.5) == []  # recognised as a retransmission
    resp = msg.create_response(200)
    assert isinstance(resp, Response) and layer.send_response(resp, 0.6)
