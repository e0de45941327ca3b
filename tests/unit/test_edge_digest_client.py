"""The digest client (edge/digest_client.py): RFC vectors, the challenge it picks, what it refuses,
how often it answers one request, and the request it resends."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.core.models import DigestAlgorithm
from trunkline.edge.carrier_auth import resend
from trunkline.edge.digest import DigestAuthenticator, Outcome, parse_credentials
from trunkline.edge.digest_client import (
    MAX_CHALLENGES,
    Challenge,
    ChallengeError,
    DigestClient,
    Tries,
    parse_challenge,
    read_challenge,
)
from trunkline.sip.headers import Via
from trunkline.sip.message import Request, Response, parse_message

# RFC 7616 section 3.9.1 (the same challenge and client nonce for MD5 and SHA-256).
RFC7616 = dict(realm="http-auth@example.org", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")  # fmt: skip
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def challenge(algorithm: str, qop: str | None = "auth", **overrides: str) -> Challenge:
    fields = {**RFC7616, **overrides}
    return Challenge(False, fields["realm"], fields["nonce"], algorithm, qop, fields["opaque"], False)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    client = DigestClient("Mufasa", "Circle of Life")
    value = client.authorization(challenge(algorithm), "GET", "/dir/index.html", cnonce=RFC7616_CNONCE)
    params = parse_credentials(value)
    assert params["response"] == expected
    assert params | {"response": ""} == {
        "username": "Mufasa", "realm": RFC7616["realm"], "nonce": RFC7616["nonce"], "uri": "/dir/index.html",
        "response": "", "algorithm": algorithm, "cnonce": RFC7616_CNONCE, "qop": "auth", "nc": "00000001",
        "opaque": RFC7616["opaque"],
    }  # fmt: skip


def test_rfc2617_vector_and_rfc2069_style_without_qop() -> None:
    client = DigestClient("Mufasa", "Circle Of Life")
    c = challenge("MD5", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093")
    params = parse_credentials(client.authorization(c, "GET", "/dir/index.html", cnonce="0a4f113b"))
    assert params["response"] == "6629fae49393a05397450978507c4ef1"  # RFC 2617 section 3.5
    # RFC 2069 section 2.4 (as corrected by its errata): no qop, so no cnonce and no nonce count.
    client = DigestClient("Mufasa", "CircleOfLife")
    rfc2069 = Challenge(False, c.realm, c.nonce, "MD5", None, "5ccc069c403ebaf9f0171e9517f40e41", False)
    params = parse_credentials(client.authorization(rfc2069, "GET", "/dir/index.html"))
    assert params["response"] == "1949323746fe6a43ef61f9606e7febea"
    assert "qop" not in params and "cnonce" not in params and "nc" not in params
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


def test_sha512_256_is_the_truncated_sha512_of_fips_180_4() -> None:
    assert hashlib.new("sha512_256", b"abc").hexdigest() == (
        "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    )

    def h(text: str) -> str:
        return hashlib.new("sha512_256", text.encode()).hexdigest()

    client = DigestClient("Mufasa", "Circle of Life")
    params = parse_credentials(client.authorization(challenge("SHA-512-256"), "GET", "/dir/index.html", "cn"))
    ha1, ha2 = h(f"Mufasa:{RFC7616['realm']}:Circle of Life"), h("GET:/dir/index.html")
    assert params["response"] == h(f"{ha1}:{RFC7616['nonce']}:00000001:cn:auth:{ha2}")
    assert params["algorithm"] == "SHA-512-256"


@pytest.mark.parametrize("algorithm", [DigestAlgorithm.MD5, DigestAlgorithm.SHA256])
def test_our_own_server_side_accepts_what_the_client_sends(algorithm: DigestAlgorithm) -> None:
    server = DigestAuthenticator(b"key")
    uri = "sip:+14155550100@192.0.2.1"
    header = server.challenges("carrier", [algorithm], source="127.0.0.1")[0]
    client = DigestClient("acme", "s3cret")
    value = client.authorization(parse_challenge(header, proxy=True), "INVITE", uri)
    verdict = server.verify(parse_credentials(value), "INVITE", uri, "carrier", [algorithm],
                            {"acme": "s3cret"}.get, source="127.0.0.1")  # fmt: skip
    assert verdict.outcome is Outcome.OK


def response_with(status: int, *challenges: str) -> Response:
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    lines = "".join(f"{name}: {c}\r\n" for c in challenges)
    raw = (
        f"SIP/2.0 {status} Auth\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
        f"{lines}Content-Length: 0\r\n\r\n"
    )
    message = parse_message(raw.encode())
    assert isinstance(message, Response)
    return message


def test_the_strongest_offered_algorithm_for_the_configured_realm_is_answered() -> None:
    response = response_with(
        407,
        'Digest realm="carrier", nonce="n1", algorithm=MD5, qop="auth"',
        'Digest realm="carrier", nonce="n2", algorithm=SHA-256, qop="auth,auth-int", opaque="o"',
        'Digest realm="other", nonce="n3", algorithm=SHA-512-256, qop="auth"',
    )
    picked = read_challenge(response, realm="carrier")
    assert (picked.nonce, picked.algorithm, picked.qop, picked.opaque, picked.proxy) == (
        "n2", "SHA-256", "auth", "o", True)  # fmt: skip
    assert picked.answer_header == "Proxy-Authorization"
    assert read_challenge(response).algorithm == "SHA-512-256"  # no realm configured: any
    www = read_challenge(response_with(401, 'Digest realm="r", nonce="n"'))
    assert (www.answer_header, www.algorithm, www.qop) == ("Authorization", "MD5", None)


@pytest.mark.parametrize(
    "header",
    [
        'Digest realm="carrier", nonce="n", algorithm=SHA-1',
        'Digest realm="carrier", nonce="n", algorithm=MD5-sess, qop="auth"',
        'Digest realm="carrier", nonce="n", qop="auth-int"',
        'Digest realm="other", nonce="n"',
        'Digest realm="carrier"',
        'Basic realm="carrier"',
        'Digest realm="carrier", nonce="unterminated',
        'Digest realm="carrier", nonce="' + "n" * 3000 + '"',
        'Digest realm="carrier", nonce="' + "n" * 600 + '"',
        "Digest " + ", ".join(f"p{i}=v" for i in range(250)),
    ],
)
def test_a_challenge_we_cannot_answer_is_a_clear_error(header: str) -> None:
    with pytest.raises(ChallengeError):
        read_challenge(response_with(407, header), realm="carrier")


def test_control_characters_are_never_echoed() -> None:
    # The message parser refuses them already; the challenge reader does not count on it.
    with pytest.raises(ChallengeError, match="printable"):
        parse_challenge('Digest realm="carrier", nonce="n\\\x01"', proxy=True)


def test_bytes_that_are_not_utf8_are_refused_not_hashed() -> None:
    raw = (
        b"SIP/2.0 407 Auth\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
        b'Proxy-Authenticate: Digest realm="carrier", nonce="n\xff\xfe"\r\nContent-Length: 0\r\n\r\n'
    )
    response = parse_message(raw)
    assert isinstance(response, Response)
    with pytest.raises(ChallengeError, match="printable"):
        read_challenge(response)


def test_no_challenge_header_and_not_a_challenge_status() -> None:
    with pytest.raises(ChallengeError, match="no Proxy-Authenticate"):
        read_challenge(response_with(407))
    with pytest.raises(ChallengeError):
        read_challenge(response_with(403, 'Digest realm="r", nonce="n"'))


def test_only_the_first_challenges_are_read() -> None:
    bad = ['Digest realm="r", nonce="n", algorithm=SHA-1'] * MAX_CHALLENGES
    with pytest.raises(ChallengeError):
        read_challenge(response_with(407, *bad, 'Digest realm="r", nonce="n"'))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000) | st.binary(max_size=3000).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_any_challenge_text_is_read_or_refused_never_crashes(text: str) -> None:
    try:
        picked = parse_challenge("Digest " + text, proxy=True)
    except ChallengeError:
        return
    DigestClient("u", "p").authorization(picked, "INVITE", "sip:x@127.0.0.1")  # and it can be answered


def test_nonce_count_goes_on_for_the_same_nonce_and_restarts_with_a_new_one() -> None:
    client = DigestClient("u", "p")
    counts = [parse_credentials(client.authorization(challenge("MD5", nonce=n), "BYE", "sip:x"))["nc"]
              for n in ("a", "a", "b")]  # fmt: skip
    assert counts == ["00000001", "00000002", "00000001"]


def test_one_answer_per_request_and_one_more_for_a_stale_nonce() -> None:
    fresh = challenge("MD5")
    stale = Challenge(False, "r", "n2", "MD5", "auth", None, True)
    tries = Tries()
    assert tries.may_answer(fresh) and not tries.may_answer(fresh)
    tries = Tries()
    assert tries.may_answer(fresh) and tries.may_answer(stale) and not tries.may_answer(stale)


def test_the_resent_request_is_a_new_transaction_of_the_same_dialog() -> None:
    raw = (
        "INVITE sip:+14155550100@127.0.0.1:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKold\r\n"
        "Max-Forwards: 69\r\nFrom: <sip:+1@127.0.0.1>;tag=ours\r\nTo: <sip:+14155550100@127.0.0.1>\r\n"
        "Call-ID: call-1\r\nCSeq: 1 INVITE\r\nProxy-Authorization: Digest old\r\n"
        "Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0"
    )
    invite = parse_message(raw.encode())
    assert isinstance(invite, Request)
    again = resend(invite, Via("UDP", "127.0.0.1", 5060, {"branch": "z9hG4bKnew"}), 2, "Proxy-Authorization",
                   "Digest new")  # fmt: skip
    again = parse_message(again.to_bytes())
    assert isinstance(again, Request)
    assert (again.call_id, again.from_.tag, str(again.cseq)) == ("call-1", "ours", "2 INVITE")
    assert [v.params["branch"] for v in again.via] == ["z9hG4bKnew"]
    assert again.get_all("Proxy-Authorization") == ["Digest new"]
    assert again.body == b"v=0" and str(again.uri) == str(invite.uri)
