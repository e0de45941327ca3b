"""Digest authentication (RFC 7616 / RFC 8760), checked against RFC 7616's own example."""

from __future__ import annotations

import pytest

from trunkline.core.models import DigestAlgorithm
from trunkline.edge.digest import (
    DigestAuthenticator,
    DigestError,
    Outcome,
    digest_response,
    parse_credentials,
    same_target,
)

BOTH = [DigestAlgorithm.MD5, DigestAlgorithm.SHA256]


def test_rfc7616_section_3_9_1_example_vectors() -> None:
    # RFC 7616 3.9.1: Mufasa / Circle of Life, qop=auth, both algorithms.
    args = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life", method="GET",
                uri="/dir/index.html", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                qop="auth", nc="00000001", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")  # fmt: skip
    assert digest_response("MD5", **args) == "8ca523f5e9506fed4657c9700eebdbec"  # type: ignore[arg-type]
    assert (
        digest_response("SHA-256", **args)  # type: ignore[arg-type]
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_rfc2617_section_3_5_example() -> None:
    params = parse_credentials(
        'Digest username="Mufasa", realm="testrealm@host.com",'
        ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001,'
        ' cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1",'
        ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert params["username"] == "Mufasa" and params["uri"] == "/dir/index.html" and params["qop"] == "auth"
    expected = digest_response(
        "MD5", "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
        params["nonce"], params["qop"], params["nc"], params["cnonce"],
    )  # fmt: skip
    assert expected == params["response"]


@pytest.mark.parametrize(
    "bad", ["Basic dXNlcjpwYXNz", 'Digest username="x", realm', 'Digest username="unterminated']
)
def test_unreadable_credentials(bad: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(bad)


def test_quoted_pairs_and_odd_spacing() -> None:
    params = parse_credentials('Digest  username = "a\\"b" ,realm="r",nc=00000001, qop=auth')
    assert params == {"username": 'a"b', "realm": "r", "nc": "00000001", "qop": "auth"}


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def answer(auth: DigestAuthenticator, challenge: str, password: str = "pw", uri: str = "sip:+1@edge",
           nc: str = "00000001", algorithm: str | None = None) -> dict[str, str]:  # fmt: skip
    offered = parse_credentials(challenge)
    alg = algorithm or offered["algorithm"]
    response = digest_response(alg, "alice", offered["realm"], password, "INVITE", uri, offered["nonce"],
                               "auth", nc, "c0ffee")  # fmt: skip
    return {"username": "alice", "realm": offered["realm"], "nonce": offered["nonce"], "uri": uri,
            "response": response, "algorithm": alg, "qop": "auth", "nc": nc, "cnonce": "c0ffee"}  # fmt: skip


def verify(auth: DigestAuthenticator, params: dict[str, str], uri: str = "sip:+1@edge") -> Outcome:
    users = {"alice": "pw"}
    return auth.verify(params, "INVITE", uri, "acme", BOTH, users.get).outcome


def test_challenges_offer_md5_first_then_sha256_with_qop_auth() -> None:
    md5, sha = DigestAuthenticator().challenges("acme", BOTH)
    assert md5.startswith('Digest realm="acme", nonce="') and md5.endswith('algorithm=MD5, qop="auth"')
    assert sha.endswith('algorithm=SHA-256, qop="auth"')


@pytest.mark.parametrize("which", [0, 1])
def test_good_answers_pass_for_both_algorithms(which: int) -> None:
    auth = DigestAuthenticator()
    verdict = auth.verify(answer(auth, auth.challenges("acme", BOTH)[which]), "INVITE", "sip:+1@edge", "acme",
                          BOTH, {"alice": "pw"}.get)  # fmt: skip
    assert verdict.ok and verdict.username == "alice" and verdict.replay_key.endswith(":00000001")


def test_failures_say_why() -> None:
    clock = Clock()
    auth = DigestAuthenticator(nonce_ttl=60, clock=clock)
    challenge = auth.challenges("acme", BOTH)[0]
    assert verify(auth, answer(auth, challenge, password="nope")) is Outcome.WRONG_PASSWORD
    assert verify(auth, {**answer(auth, challenge), "username": "mallory"}) is Outcome.UNKNOWN_USER
    assert verify(auth, {**answer(auth, challenge), "realm": "other"}) is Outcome.WRONG_REALM
    assert verify(auth, answer(auth, challenge), uri="sip:+2@edge") is Outcome.WRONG_URI
    assert verify(auth, {**answer(auth, challenge), "nonce": "forged"}) is Outcome.BAD_NONCE
    other_edge = DigestAuthenticator(secret=b"another secret")
    assert verify(other_edge, answer(auth, challenge)) is Outcome.BAD_NONCE
    assert verify(auth, {**answer(auth, challenge), "algorithm": "SHA-512-256"}) is Outcome.BAD_ALGORITHM
    assert verify(auth, {"username": "alice"}) is Outcome.MALFORMED
    clock.t += 61
    assert verify(auth, answer(auth, challenge)) is Outcome.STALE  # right password, old nonce


def test_edges_sharing_a_secret_accept_each_others_nonces() -> None:
    a, b = DigestAuthenticator(secret=b"shared"), DigestAuthenticator(secret=b"shared")
    assert verify(b, answer(a, a.challenges("acme", BOTH)[1])) is Outcome.OK


@pytest.mark.parametrize(
    ("digest_uri", "same"),
    [("sip:+1@edge", True), ("sip:edge", True), ("sip:edge:5060", True), ("sip:+2@edge", False),
     ("sip:other", False), ("sips:edge", False), ("sip:edge:5070", False), ("", False)],
)  # fmt: skip
def test_the_digest_uri_must_name_the_request_uri(digest_uri: str, same: bool) -> None:
    assert same_target(digest_uri, "sip:+1@edge") is same
