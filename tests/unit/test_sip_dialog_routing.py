"""Dialogs (RFC 3261 12): ids, route sets, CSeq, target refresh, loose and strict routing."""

from __future__ import annotations

import pytest

from trunkline.sip import Request, Response, SipParseError, Via, parse_message, parse_uri
from trunkline.sip.dialog import Dialog

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
    b'Max-Forwards: 70\r\nFrom: "A" <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n'
    b"Call-ID: c1\r\nCSeq: 5 INVITE\r\nContact: <sip:alice@192.0.2.1>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nContent-Length: 0\r\n\r\n"
)


def pair() -> tuple[Request, Response]:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = req.create_response(200, to_tag="b1")
    resp.add("Contact", "<sip:bob@192.0.2.2:5070>")
    return req, resp


def test_uac_dialog_reverses_record_route_and_builds_bye() -> None:
    req, resp = pair()
    d = Dialog.from_uac(req, resp)
    assert d.id == ("c1", "a1", "b1") and d.local_seq == 5
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    bye = d.create_request("BYE", Via("UDP", "192.0.2.1", 5060))
    assert str(bye.uri) == "sip:bob@192.0.2.2:5070" and bye.cseq.seq == 6
    assert bye.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert bye.from_.tag == "a1" and bye.to.tag == "b1" and bye.top_via.rfc3261_branch
    bye.validate()


def test_uas_dialog_keeps_route_order_checks_cseq_and_refreshes_target() -> None:
    req, resp = pair()
    d = Dialog.from_uas(req, resp)
    assert d.id == ("c1", "b1", "a1") and d.remote_seq == 5
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    reinvite = d.create_request("INVITE", Via("UDP", "h", None))  # just to get a well-formed request
    reinvite.set("CSeq", "6 INVITE")
    reinvite.set("Contact", "<sip:alice@198.51.100.1>")
    d.receive_request(reinvite)
    assert str(d.remote_target) == "sip:alice@198.51.100.1" and d.remote_seq == 6
    with pytest.raises(SipParseError) as err:
        d.receive_request(reinvite)  # same CSeq again
    assert err.value.status == 500


def test_strict_route_puts_first_route_in_request_uri() -> None:
    req, resp = pair()
    resp.set("Record-Route", "<sip:strict.example.com>")
    d = Dialog.from_uac(req, resp)
    bye = d.create_request("BYE", Via("UDP", "h", None))
    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.get_all("Route") == ["<sip:bob@192.0.2.2:5070>"]
    assert parse_uri("sip:x") is not None
