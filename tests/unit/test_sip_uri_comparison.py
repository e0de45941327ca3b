"""RFC 3261 19.1.4 URI comparison: every example of the section, and each rule on its own."""

from __future__ import annotations

import itertools

import pytest

from trunkline.sip import Request, parse_message
from trunkline.sip.transaction import TransactionLayer, server_key
from trunkline.sip.uri import SipUri, parse_uri, uri_equal

# "The URIs within each of the following sets are equivalent" (RFC 3261 19.1.4).
EQUIVALENT_SETS = [
    ["sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"],
    ["sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"],
    [
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ],
    [
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ],
]

# "The URIs within each of the following sets are not equivalent", with the RFC's reason.
NOT_EQUIVALENT_PAIRS = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # different usernames
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # can resolve to different ports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # can resolve to different transports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),  # different port and transports
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # different header component
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # even though that is what it resolves to
]


def same(a: str, b: str) -> bool:
    """Both directions, which must agree: the relation is symmetric."""
    forward, backward = uri_equal(parse_uri(a), parse_uri(b)), uri_equal(parse_uri(b), parse_uri(a))
    assert forward == backward, (a, b)
    return forward


@pytest.mark.parametrize(
    ("a", "b"),
    [pair for group in EQUIVALENT_SETS for pair in itertools.combinations(group, 2)],
)
def test_rfc3261_equivalent_examples(a: str, b: str) -> None:
    assert same(a, b)


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT_PAIRS)
def test_rfc3261_not_equivalent_examples(a: str, b: str) -> None:
    assert not same(a, b)


def test_equality_is_not_transitive() -> None:
    # The RFC's own example: both equal the bare URI, not each other.
    assert same("sip:carol@chicago.com", "sip:carol@chicago.com;security=on")
    assert same("sip:carol@chicago.com", "sip:carol@chicago.com;security=off")
    assert not same("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off")


def test_a_uri_equals_itself() -> None:
    for group in EQUIVALENT_SETS:
        for text in group:
            assert same(text, text)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com", False),  # sip never equals sips
        ("sips:alice@atlanta.com", "SIPS:alice@ATLANTA.com", True),
        ("sip:atlanta.com", "sip:alice@atlanta.com", False),  # omitted user
        ("sip:alice@atlanta.com", "sip:alice:secret@atlanta.com", False),  # omitted password
        ("sip:alice:secret@atlanta.com", "sip:alice:Secret@atlanta.com", False),  # password keeps case
        ("sip:alice:s%65cret@atlanta.com", "sip:alice:secret@atlanta.com", True),
        ("sip:+1415@gw.com;user=phone", "sip:+1415@gw.com", False),  # user= in one only
        ("sip:h.com;ttl=15", "sip:h.com", False),  # ttl= in one only
        ("sip:h.com;method=INVITE", "sip:h.com", False),  # method= in one only
        ("sip:h.com;maddr=239.255.255.1", "sip:h.com", False),  # maddr= in one only
        ("sip:h.com;maddr=239.255.255.1", "sip:h.com;MADDR=239.255.255.1", True),
        ("sip:h.com;transport=tcp", "sip:h.com;transport=udp", False),  # in both, different
        ("sip:h.com;lr", "sip:h.com", True),  # other params in one only are ignored
        ("sip:h.com;foo=Bar", "sip:h.com;foo=bar", True),  # param values without case
        ("sip:h.com;foo=%62ar", "sip:h.com;foo=bar", True),  # escaped unreserved == unescaped
        ("sip:a%3Bb@h.com", "sip:a;b@h.com", False),  # escaped reserved char is not the char
        ("sip:a%3bb@h.com", "sip:a%3Bb@h.com", True),  # hex digits have no case
        ("sip:h.com?subject=x", "sip:h.com?Subject=x", True),  # header names without case
        ("sip:h.com?subject=x", "sip:h.com?subject=X", False),  # header values exactly
        ("sip:h.com?subject=x&a=b", "sip:h.com?subject=x", False),  # every header must be in both
        ("sip:[::1]:5060", "sip:[0:0::1]:5060", True),  # IPv6 references as addresses
        ("sip:[::1]", "sip:[::2]", False),
        ("sip:h.com:5070", "sip:h.com:5071", False),
    ],
)
def test_each_rule(a: str, b: str, equal: bool) -> None:
    assert same(a, b) is equal


def test_uris_built_by_hand_compare_like_parsed_ones() -> None:
    # Names and hosts may be set in any case by code; the comparison does not rely on the parser.
    built = SipUri("sip", "", "ua", None, "Example.COM", None, {"Transport": "TCP"})
    assert uri_equal(built, parse_uri("sip:ua@example.com;transport=tcp"))
    assert not uri_equal(built, parse_uri("sip:UA@example.com;transport=tcp"))


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("tel:+1-415-555-0100", "tel:+14155550100", True),  # RFC 3966 4: visual separators ignored
        ("tel:+14155550100;ext=12", "tel:+14155550100", False),  # parameters must all match
        ("tel:7042;phone-context=Example.com", "tel:7042;PHONE-CONTEXT=example.com", True),
        ("tel:+14155550100", "sip:+14155550100@gw.com", False),  # different schemes
        ("urn:service:sos", "URN:service:sos", True),  # other schemes: scheme without case, rest exact
        ("urn:service:sos", "urn:service:SOS", False),
    ],
)
def test_other_schemes(a: str, b: str, equal: bool) -> None:
    assert same(a, b) is equal


def rfc2543_request(method: str, uri: str) -> Request:
    """A request without a magic-cookie branch: its transaction is matched on its fields (17.2.3)."""
    data = (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060\r\nMax-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n"
        f"Call-ID: c1@example.com\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


@pytest.mark.parametrize(
    ("cancel_uri", "matches"),
    [
        ("sip:bob@example.com;transport=udp", True),  # the same text
        ("sip:%62ob@EXAMPLE.com;Transport=UDP", True),  # equivalent per 19.1.4
        ("sip:bob@example.com", False),  # transport= in one only
        ("sip:Bob@example.com;transport=udp", False),  # user differs in case
    ],
)
def test_rfc2543_cancel_finds_its_invite_by_an_equivalent_request_uri(cancel_uri: str, matches: bool) -> None:
    layer = TransactionLayer()
    invite = rfc2543_request("INVITE", "sip:bob@example.com;transport=udp")
    layer.receive(invite, ("192.0.2.1", 5060), "udp", 0.0)
    cancel = rfc2543_request("CANCEL", cancel_uri)
    expected = server_key(invite, "INVITE") if matches else None
    assert expected is None or expected[0] == "2543"
    assert layer.invite_for_cancel(cancel) == expected
