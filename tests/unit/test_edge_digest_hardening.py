"""Digest hardening: source-bound nonces, qop=auth required, key rotation, lockout keys, one realm shape."""

from __future__ import annotations

import os
from pathlib import Path

from trunkline.core.models import DigestAlgorithm
from trunkline.edge.digest import (
    DigestAuthenticator,
    Outcome,
    digest_response,
    parse_credentials,
)
from trunkline.edge.lockout import Lockout, LockoutPolicy, challenge_realm
from trunkline.edge.nonce_keys import NonceKeys

ALGS = [DigestAlgorithm.MD5]
URI = "sip:+14155550100@edge"


def credentials(challenge: str, qop: str | None = "auth", password: str = "pw") -> dict[str, str]:
    offered = parse_credentials(challenge)
    nc, cnonce = ("00000001", "c0ffee") if qop else ("", "")
    response = digest_response("MD5", "alice", offered["realm"], password, "INVITE", URI, offered["nonce"],
                               qop, nc, cnonce)  # fmt: skip
    params = {"username": "alice", "realm": offered["realm"], "nonce": offered["nonce"], "uri": URI,
              "response": response, "algorithm": "MD5"}  # fmt: skip
    if qop:
        params |= {"qop": qop, "nc": nc, "cnonce": cnonce}
    return params


def check(auth: DigestAuthenticator, params: dict[str, str], source: str, **kw: bool) -> Outcome:
    return auth.verify(params, "INVITE", URI, "acme", ALGS, {"alice": "pw"}.get, source=source, **kw).outcome


def test_a_nonce_is_good_only_from_the_source_it_was_issued_to() -> None:
    auth = DigestAuthenticator(b"k")
    params = credentials(auth.challenges("acme", ALGS, source="198.51.100.7")[0])
    assert check(auth, params, "198.51.100.7") is Outcome.OK
    assert check(auth, params, "198.51.100.8") is Outcome.BAD_NONCE


def test_an_ipv6_nonce_is_good_within_the_same_64() -> None:
    auth = DigestAuthenticator(b"k")
    params = credentials(auth.challenges("acme", ALGS, source="2001:db8:1:2::10")[0])
    assert check(auth, params, "2001:db8:1:2:ffff::1") is Outcome.OK
    assert check(auth, params, "2001:db8:1:3::10") is Outcome.BAD_NONCE


def test_rfc2069_credentials_need_the_trunk_to_opt_in() -> None:
    auth = DigestAuthenticator(b"k")
    params = credentials(auth.challenges("acme", ALGS, source="192.0.2.1")[0], qop=None)
    assert check(auth, params, "192.0.2.1") is Outcome.NO_QOP
    assert check(auth, params, "192.0.2.1", allow_rfc2069=True) is Outcome.OK


def test_wrong_password_stays_wrong_without_qop() -> None:
    auth = DigestAuthenticator(b"k")
    params = credentials(auth.challenges("acme", ALGS)[0], qop=None, password="guess")
    assert check(auth, params, "", allow_rfc2069=True) is Outcome.WRONG_PASSWORD


def test_several_keys_newest_signs_all_verify(tmp_path: Path) -> None:
    path = tmp_path / "nonce-secret"
    path.write_bytes(b"old-key\n")
    keys = NonceKeys.from_file(str(path), recheck=0)
    auth = DigestAuthenticator(keys)
    in_flight = credentials(auth.challenges("acme", ALGS, source="192.0.2.1")[0])
    # Rotation: a new first line; the old key still verifies the challenges already sent.
    path.write_bytes(b"# newest first\nnew-key\nold-key\n")
    os.utime(path, ns=(1, 1))
    assert keys.current() == [b"new-key", b"old-key"]
    assert check(auth, in_flight, "192.0.2.1") is Outcome.OK
    fresh = credentials(auth.challenges("acme", ALGS, source="192.0.2.1")[0])
    assert DigestAuthenticator(b"new-key").nonce_age(fresh["nonce"], "acme", "192.0.2.1") is not None
    # The old key retired: its nonces fail, the new ones pass.
    path.write_bytes(b"new-key\n")
    os.utime(path, ns=(2, 2))
    assert check(auth, in_flight, "192.0.2.1") is Outcome.BAD_NONCE
    assert check(auth, fresh, "192.0.2.1") is Outcome.OK


def test_a_broken_key_file_keeps_the_keys_in_use(tmp_path: Path) -> None:
    path = tmp_path / "nonce-secret"
    path.write_bytes(b"k1\n")
    keys = NonceKeys.from_file(str(path), recheck=0)
    path.write_bytes(b"\n\n")
    os.utime(path, ns=(3, 3))
    assert keys.current() == [b"k1"]
    path.unlink()
    assert keys.current() == [b"k1"]


def test_lockout_keys_group_ipv6_and_pair_with_the_username() -> None:
    pair, user = LockoutPolicy.keys("2001:db8:1:2::10", "alice")
    assert pair == LockoutPolicy.keys("2001:db8:1:2::99", "alice")[0]
    assert pair != LockoutPolicy.keys("2001:db8:1:2::10", "bob")[0]
    assert pair != LockoutPolicy.keys("192.0.2.1", "alice")[0]
    assert user == LockoutPolicy.keys("192.0.2.1", "alice")[1]


def test_lockout_decisions() -> None:
    policy = LockoutPolicy(per_source_user=3, silence_after=5, per_user=10)
    assert policy.decide(0, 0) is Lockout.ANSWER
    assert policy.decide(2, 9) is Lockout.ANSWER
    assert policy.decide(3, 0) is Lockout.FORBID
    assert policy.decide(0, 10) is Lockout.FORBID  # a distributed guesser
    assert policy.decide(5, 0) is Lockout.SILENCE


def test_unknown_usernames_get_a_stable_plausible_realm() -> None:
    known = {"alice": "acme"}.get
    realms = ["acme", "globex", "initech"]
    assert challenge_realm("alice", known, realms, b"k") == "acme"
    picked = {challenge_realm(f"user{i}", known, realms, b"k") for i in range(60)}
    assert picked == set(realms)  # not one tell-tale realm for every unknown name
    assert challenge_realm("mallory", known, realms, b"k") == challenge_realm("mallory", known, realms, b"k")


async def test_auth_failures_over_the_store() -> None:
    from trunkline.core.state import MemoryStore
    from trunkline.edge.lockout import AuthFailures

    failures = AuthFailures(MemoryStore(), 60, LockoutPolicy(per_source_user=2, silence_after=4, per_user=5))
    assert await failures.verdict("192.0.2.1", "alice") is Lockout.ANSWER
    for _ in range(2):
        await failures.failed("192.0.2.1", "alice")
    assert await failures.verdict("192.0.2.1", "alice") is Lockout.FORBID
    # A stranger at another address, or the same address with another username, is not locked out.
    assert await failures.verdict("192.0.2.1", "bob") is Lockout.ANSWER
    assert await failures.verdict("198.51.100.7", "alice") is Lockout.ANSWER
    for _ in range(2):
        await failures.failed("192.0.2.1", "alice")
    assert await failures.verdict("192.0.2.1", "alice") is Lockout.SILENCE
    # Distributed guessing: one failure each from many sources reaches the per-username limit.
    await failures.failed("203.0.113.1", "carol")
    await failures.succeeded("203.0.113.1", "carol")
    for i in range(5):
        await failures.failed(f"203.0.113.{10 + i}", "carol")
    assert await failures.verdict("203.0.113.99", "carol") is Lockout.FORBID
    await failures.succeeded("192.0.2.1", "alice")
    assert await failures.verdict("192.0.2.1", "alice") is Lockout.ANSWER
