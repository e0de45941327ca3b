"""Message model: compact forms, list headers, folding, URIs, mutation, serialization, stream framing."""

from __future__ import annotations

import pytest

from trunkline.sip import (
    KEEPALIVE,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamFramer,
    TelUri,
    Via,
    parse_message,
    parse_uri,
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKdef, SIP/2.0/UDP h.example.com\r\n"
    b'f: "Alice, A." <sip:alice@example.com>;tag=1\r\n'
    b"t: <sip:bob@example.com>\r\n"
    b"i: abc@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b'm: <sip:alice@192.0.2.1;transport=tcp>, "x,y" <sip:b@c>;q=0.5\r\n'
    b'WWW-Authenticate: Digest realm="a,b", nonce="1", qop="auth,auth-int"\r\n'
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"k: timer,\r\n 100rel\r\n"
    b"l: 4\r\n\r\nbody"
)


def test_compact_forms_and_multi_values() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    assert m.call_id == "abc@192.0.2.1" and m.get("Call-ID") == m.get("I")
    assert [v.sent_by for v in m.via] == ["192.0.2.1:5060", "[2001:db8::1]:5070", "h.example.com"]
    assert m.from_.display == "Alice, A." and m.from_.tag == "1"
    assert [c.display for c in m.contact] == [None, "x,y"] and m.contact[1].params == {"q": "0.5"}
    assert m.get_all("WWW-Authenticate") == ['Digest realm="a,b", nonce="1", qop="auth,auth-int"']
    assert m.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert m.get_all("Supported") == ["timer", "100rel"]  # folded line
    assert m.body == b"body"


def test_mutation_is_serialized() -> None:
    m = parse_message(INVITE)
    m.top_via.params["received"] = "198.51.100.7"
    m.top_via.params["rport"] = "4000"
    m.add("Record-Route", "<sip:edge.example.com;lr>")
    m.body = b"hello world"
    again = parse_message(m.to_bytes())
    assert again.top_via.params == {"branch": "z9hG4bKabc", "rport": "4000", "received": "198.51.100.7"}
    assert len(again.via) == 3 and again.get("Content-Length") == "11" and again.body == b"hello world"
    assert str(again.record_route[0].uri) == "sip:edge.example.com;lr"
    m.remove("Via")
    assert "via" not in m and m.via == []


def test_build_request_and_response() -> None:
    r = Request(
        "OPTIONS",
        parse_uri("sip:edge.example.com"),
        [
            ("Via", Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK1"})),
            ("From", NameAddr(parse_uri("sip:a@example.com"), "A", {"tag": "t"})),
            ("To", "<sip:edge.example.com>"),
            ("Call-ID", "x"),
            ("CSeq", "1 OPTIONS"),
        ],
    )
    r.validate()
    resp = r.create_response(200, to_tag="srv")
    assert resp.to.tag == "srv" and resp.top_via.branch == "z9hG4bK1" and resp.cseq.method == "OPTIONS"
    data = resp.to_bytes()
    assert data.startswith(b"SIP/2.0 200 OK\r\n") and b"Content-Length: 0\r\n\r\n" in data
    parsed = parse_message(data)
    assert isinstance(parsed, Response) and parsed.from_.display == "A"


def test_uris() -> None:
    u = parse_uri("sips:alice:pw@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&Priority=urgent")
    assert isinstance(u, SipUri) and u.scheme == "sips" and u.user == "alice" and u.password == "pw"
    assert u.host == "[2001:db8::1]" and u.port == 5061 and u.params == {"transport": "tcp", "lr": None}
    assert u.headers == {"Subject": "hi", "Priority": "urgent"} and u.transport == "tcp"
    assert str(u) == "sips:alice:pw@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&Priority=urgent"
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(t, TelUri) and t.number == "+1-201-555-0123"
    for bad in ("sip:", "sip:a@", "sip:host:99999", "sip:a b@c", "<sip:a>", "nocolon"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_size_limit_and_errors() -> None:
    with pytest.raises(SipParseError) as err:
        parse_message(INVITE + b"x" * 70000)
    assert err.value.status == 513
    for bad in (
        b"",
        b"INVITE sip:a SIP/2.0\r\n\r\n",
        b"garbage\r\n\r\n",
        b"INVITE sip:a SIP/2.0\r\nNoColon\r\n\r\n",
    ):
        with pytest.raises(SipParseError):
            parse_message(bad).validate()


def test_stream_framer_messages_keepalives_and_partial_data() -> None:
    f = StreamFramer()
    data = b"\r\n\r\n" + INVITE + b"\r\n" + INVITE
    out = []
    for i in range(0, len(data), 7):  # trickled in small pieces
        out += f.feed(data[i : i + 7])
    assert out[0] is KEEPALIVE and len(out) == 3 and all(isinstance(m, Request) for m in out[1:])
    assert f.buffered == 0


def test_stream_framer_bounds() -> None:
    f = StreamFramer(max_size=1024)
    with pytest.raises(SipParseError) as err:
        f.feed(b"INVITE sip:a SIP/2.0\r\nX: " + b"a" * 2000)
    assert err.value.status == 513
    f = StreamFramer(max_size=1024)
    with pytest.raises(SipParseError):
        f.feed(b"INVITE sip:a SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")  # no Content-Length


def test_wire_size_is_the_serialized_length_without_serializing() -> None:
    """edge/observing.py gives each traced message's size from wire_size(): it must equal what
    to_bytes() writes, for structured (mutated) headers, non-ASCII text and every RFC 4475 vector."""
    import pathlib

    m = parse_message(INVITE)
    messages: list[Request | Response] = [
        m,
        m.create_response(180, "Ringing"),
        m.create_response(200, "Ça va"),
    ]
    m.via[0].params["received"] = "192.0.2.9"  # a structured value, written from its object
    m.add("Subject", "réunion \udcff")  # UTF-8 and a surrogate-escaped byte
    m.set("Content-Length")  # to_bytes() adds one
    fixtures = pathlib.Path(__file__).parent.parent / "fixtures" / "rfc4475"
    for path in sorted(fixtures.glob("*.dat")):
        try:
            messages.append(parse_message(path.read_bytes()))
        except SipParseError:
            continue
    assert len(messages) > 20
    for message in messages:
        assert message.wire_size() == len(message.to_bytes())


def test_last_wire_size_is_what_was_received_then_what_was_written() -> None:
    """A traced message's size (edge/observing.py): the bytes it came in (compact forms, folding and
    all), once written the bytes written, and before either what it would write."""
    data = INVITE  # compact forms and a folded line: written back, it is another size
    received = parse_message(data)
    assert received.last_wire_size() == len(data)
    received.via[0].params["received"] = "192.0.2.9"
    written = received.to_bytes()
    assert received.last_wire_size() == len(written) != len(data)
    framer = StreamFramer()
    (streamed,) = framer.feed(INVITE)
    assert streamed.last_wire_size() == len(INVITE)
    made = received.create_response(180, "Ringing")
    assert made.last_wire_size() == made.wire_size() == len(made.to_bytes())
