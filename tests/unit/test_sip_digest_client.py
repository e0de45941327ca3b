"""The digest client's answer to a challenge (RFC 7616 vectors, qop, algorithms, hostile challenges)."""

from __future__ import annotations

import hashlib

import pytest

from trunkline.sip.digest_client import DigestError, authorization, digest_response, parse_credentials

# RFC 7616 section 3.9.1
NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
CHALLENGE = f'Digest realm="http-auth@example.org", qop="auth, auth-int", nonce="{NONCE}", opaque="FQhe"'


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_the_rfc_7616_examples(algorithm: str, expected: str) -> None:
    value = authorization(
        f"{CHALLENGE}, algorithm={algorithm}", "GET", "/dir/index.html", "Mufasa", "Circle of Life", 1, CNONCE
    )
    params = parse_credentials(value)
    assert params["response"] == expected
    assert (params["qop"], params["nc"], params["cnonce"], params["opaque"]) == (
        "auth",
        "00000001",
        CNONCE,
        "FQhe",
    )
    assert (params["username"], params["realm"], params["uri"]) == (
        "Mufasa",
        "http-auth@example.org",
        "/dir/index.html",
    )


def test_sha_512_256_is_the_truncated_sha_512_variant() -> None:
    assert hashlib.new("sha512_256", b"abc").hexdigest().startswith("53048e2681941ef99b2e29b76b4c7dab")
    value = authorization(
        'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
        "REGISTER",
        "sip:a",
        "u",
        "p",
        2,
        "c",
    )
    params = parse_credentials(value)
    assert params["algorithm"] == "SHA-512-256" and params["nc"] == "00000002"
    assert params["response"] == digest_response(
        "SHA-512-256", "u", "r", "p", "REGISTER", "sip:a", "n", "auth", "00000002", "c"
    )
    assert len(params["response"]) == 64


def test_a_challenge_without_qop_gets_an_rfc_2069_answer() -> None:
    params = parse_credentials(
        authorization('Digest realm="r", nonce="n"', "REGISTER", "sip:a", "u", "p", 1, "c")
    )
    assert "qop" not in params and "cnonce" not in params
    assert params["response"] == digest_response("MD5", "u", "r", "p", "REGISTER", "sip:a", "n", None)


@pytest.mark.parametrize(
    "challenge",
    [
        'Basic realm="r"',
        'Digest nonce="n"',
        'Digest realm="r"',
        'Digest realm="r", nonce="n", algorithm=SHA-1',
        'Digest realm="r", nonce="n", qop="auth-int"',
        'Digest realm="r", nonce="' + "n" * 5000 + '"',
        'Digest realm="r", nonce="n", ,,, "unterminated',
    ],
)
def test_challenges_it_cannot_answer_are_a_clear_error(challenge: str) -> None:
    with pytest.raises(DigestError):
        authorization(challenge, "REGISTER", "sip:a", "u", "p", 1, "c")


def test_quotes_in_values_stay_inside_their_parameter() -> None:
    value = authorization(
        'Digest realm="a\\"b", nonce="n", qop="auth"', "REGISTER", "sip:a", 'x"y', "p", 1, "c"
    )
    params = parse_credentials(value)
    assert params["realm"] == 'a"b' and params["username"] == 'x"y'
