"""The other leg's From/To carry only a validated E.164 number, a plain id or `anonymous`: no text a
peer wrote (percent-decoded or raw CR/LF) ever becomes a header line."""

from __future__ import annotations

import pytest

from trunkline.edge.legs import Local, first_invite, header_user, user_of
from trunkline.sip import Request, SipParseError, parse_message
from trunkline.sip.uri import SipUri

LOCAL = Local("192.0.2.10", 5060, "192.0.2.10", 5060)


def offer(from_user: str) -> Request:
    data = (
        f"INVITE sip:+14155550100@edge SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKi\r\n"
        f"From: <sip:{from_user}@pbx.example>;tag=a\r\nTo: <sip:+14155550100@edge>\r\n"
        f"Call-ID: inj@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+14155550123", "+14155550123"),
        ("alice", "alice"),
        ("pbx-01.main_line", "pbx-01.main_line"),
        ("anonymous", "anonymous"),
        ("+1\r\nP-Asserted-Identity: <sip:+1999@evil>", "anonymous"),
        ("alice\r\nCall-Info: <sip:x>;answer-after=0", "anonymous"),
        ("a\nb", "anonymous"),
        ("a b", "anonymous"),
        ("a@b", "anonymous"),
        ("a>;tag=x", "anonymous"),
        ("", "anonymous"),
        ("+0123", "anonymous"),
        ("+1234567890123456", "anonymous"),  # 16 digits: not E.164
        ("x" * 65, "anonymous"),
        ("\u00e9", "anonymous"),
    ],
)
def test_header_user(text: str, expected: str) -> None:
    assert header_user(text) == expected


def test_percent_encoded_crlf_in_the_caller_never_reaches_the_other_leg() -> None:
    incoming = offer("%2B1%0D%0AP-Asserted-Identity%3A%20%3Csip%3A%2B1999%40evil%3E")
    caller = user_of(incoming.from_.uri) or ""
    assert "\r\n" in caller  # decoding made real line breaks of it
    uri = SipUri("sip", "", "+14155550100", None, "203.0.113.5", 5060, {})
    invite = first_invite(LOCAL, "udp", uri, caller, "+14155550100", 69, incoming)
    wire = invite.to_bytes()
    assert b"P-Asserted-Identity" not in wire and b"evil" not in wire
    assert invite.from_.uri.user == "anonymous"  # type: ignore[union-attr]
    reparsed = parse_message(wire)  # the other side sees one well-formed message
    assert [name for name, _ in reparsed.headers()].count("From") == 1


def test_a_callee_that_is_not_a_number_becomes_anonymous() -> None:
    uri = SipUri("sip", "", "+14155550100", None, "203.0.113.5", 5060, {})
    invite = first_invite(LOCAL, "udp", uri, "+14155550123", "x\r\nCall-Info: a", 69, offer("alice"))
    assert b"Call-Info" not in invite.to_bytes() and invite.to.uri.user == "anonymous"  # type: ignore[union-attr]


def test_raw_crlf_in_a_user_part_is_refused_by_the_parser() -> None:
    with pytest.raises(SipParseError) as err:
        offer("alice\rP-Asserted-Identity: <sip:+1999@evil>")
    assert err.value.status == 400
