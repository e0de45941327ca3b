"""The layer stamps Via from the packet's real source (RFC 3261 18.2.1, RFC 3581): a received= or
rport= the peer wrote itself never decides where our responses go; a request that fails validation
is answered by the layer with its error's status, and bytes that are no message are dropped."""

from __future__ import annotations

from trunkline.sip.transaction import Deliver, Send, TransactionLayer

SOURCE = ("127.0.0.2", 40000)


def options(via_params: str) -> bytes:
    return (
        "OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKforged{via_params}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.2>;tag=1\r\nTo: <sip:edge@127.0.0.1>\r\n"
        "Call-ID: forged\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answer(layer: TransactionLayer, data: bytes) -> Send:
    (deliver,) = layer.receive_data(data, SOURCE, "udp", 0.0)
    assert isinstance(deliver, Deliver)
    (sent,) = layer.send_response(deliver.message.create_response(200, to_tag="t"), 0.0)  # type: ignore[union-attr]
    assert isinstance(sent, Send)
    return sent


def test_a_forged_received_and_rport_do_not_redirect_the_response() -> None:
    sent = answer(TransactionLayer(), options(";received=127.0.0.66;rport=7777"))
    assert sent.addr == SOURCE
    assert (
        b"received=127.0.0.2" in sent.data and b"rport=40000" in sent.data and b"127.0.0.66" not in sent.data
    )


def test_a_forged_received_without_rport_is_replaced_by_the_real_source() -> None:
    sent = answer(TransactionLayer(), options(";received=127.0.0.66"))
    assert sent.addr == ("127.0.0.2", 5060)  # sent-by's port (no rport), the real host
    assert b"127.0.0.66" not in sent.data


def test_a_request_that_fails_validation_is_answered_by_the_layer() -> None:
    layer = TransactionLayer()
    out = layer.receive_data(options("").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INFO"), SOURCE, "udp", 0.0)
    assert [type(a) for a in out] == [Send]
    assert isinstance(out[0], Send) and out[0].data.startswith(b"SIP/2.0 400") and out[0].addr == SOURCE
    assert layer.transactions == {}


def test_bytes_that_are_no_message_are_dropped() -> None:
    assert TransactionLayer().receive_data(b"\x00\xffnot sip at all\r\n\r\n", SOURCE, "udp", 0.0) == []
