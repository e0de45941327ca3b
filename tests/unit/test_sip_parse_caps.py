"""Header-section caps: control characters, header count and line length are refused before parsing."""

from __future__ import annotations

import pytest

from trunkline.sip import SipParseError, StreamFramer, parse_message
from trunkline.sip.message import MAX_HEADER_LINES, MAX_LINE_LENGTH

HEAD = (
    b"OPTIONS sip:edge.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcaps\r\n"
    b"From: <sip:a@example.com>;tag=1\r\n"
    b"To: <sip:edge.example.com>\r\n"
    b"Call-ID: caps@192.0.2.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
)


def message(extra: bytes = b"") -> bytes:
    return HEAD + extra + b"Content-Length: 0\r\n\r\n"


def refused(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as err:
        parse_message(data)
    return err.value


def test_a_plain_message_still_parses() -> None:
    parse_message(message(b"Subject: tab\there\r\n")).validate()


@pytest.mark.parametrize(
    "char", [b"\x00", b"\x01", b"\x07", b"\x0b", b"\x1b", b"\x1f", b"\x7f", b"\r", b"\n"]
)
def test_control_characters_in_a_value_are_a_400(char: bytes) -> None:
    err = refused(message(b"Subject: a" + char + b"P-Asserted-Identity: <sip:evil@x>\r\n"))
    assert err.status == 400


def test_control_characters_are_refused_on_streams_too() -> None:
    with pytest.raises(SipParseError) as err:
        StreamFramer().feed(message(b"Subject: a\nP-Asserted-Identity: <sip:evil@x>\r\n"))
    assert err.value.status == 400


def test_control_bytes_in_the_body_are_fine() -> None:
    body = b"\x00\x01binary\r\n"
    data = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert parse_message(data).body == body


def test_header_count_cap() -> None:
    below = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER_LINES - 6))  # 6 more lines in message()
    assert len(parse_message(message(below)).headers()) == MAX_HEADER_LINES
    err = refused(message(below + b"X-One-More: v\r\n"))
    assert err.status == 400 and str(MAX_HEADER_LINES) in err.reason


def test_header_line_length_cap() -> None:
    prefix = b"Subject: "
    fits = prefix + b"s" * (MAX_LINE_LENGTH - len(prefix)) + b"\r\n"
    assert parse_message(message(fits)).get("Subject") is not None
    err = refused(message(prefix + b"s" * (MAX_LINE_LENGTH - len(prefix) + 1) + b"\r\n"))
    assert err.status == 400 and str(MAX_LINE_LENGTH) in err.reason


def test_a_long_request_line_is_capped_too() -> None:
    data = (
        b"OPTIONS sip:"
        + b"a" * MAX_LINE_LENGTH
        + b"@edge.example.com SIP/2.0\r\n"
        + message()[len(b"OPTIONS sip:edge.example.com SIP/2.0\r\n") :]
    )
    assert refused(data).status == 400
