"""Digest authentication of a caller that is in no IP ACL: a challenge, the call with the right
password, failures counted per (source, username), 403 past `lockout_after` and silence (no answer, no
transaction) past `silence_after`; the same challenge for unknown usernames; nonces bound to the
source; RFC 2069 credentials only where the trunk allows them."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world
from trunkline.edge.context import EdgeOptions
from trunkline.edge.digest import digest_response, parse_credentials
from trunkline.edge.lockout import LockoutPolicy

URI = "sip:+442071234567@127.0.0.1:5060"


def credentials(challenge: str, password: str, nc: int = 1, user: str = "acme", qop: bool = True) -> str:
    params = parse_credentials(challenge)
    algorithm, realm, nonce = params["algorithm"], params["realm"], params["nonce"]
    count = f"{nc:08x}"
    if not qop:  # RFC 2069: no qop, no cnonce, no nonce-count
        response = digest_response(algorithm, user, realm, password, "INVITE", URI, nonce, None)
        return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{URI}", '
                f'response="{response}", algorithm={algorithm}')  # fmt: skip
    response = digest_response(
        algorithm, user, realm, password, "INVITE", URI, nonce, "auth", count, "c0ffee"
    )
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{URI}", '
            f'response="{response}", algorithm={algorithm}, qop=auth, nc={count}, '
            'cnonce="c0ffee"')  # fmt: skip


async def challenge_of(
    h: world.Harness, source: tuple[str, int] = world.STRANGER, caller: str = "acme"
) -> str:
    await h.stack.deliver(world.invite(caller=caller, source=source), source)
    response = h.stack.responses[-1]
    assert response.status == 407
    value = response.get("Proxy-Authenticate")
    assert value is not None
    return value


async def test_a_stranger_is_challenged_and_the_right_password_places_the_call(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    challenge = await challenge_of(h)
    assert h.stack.requests("INVITE") == []
    auth = f"Proxy-Authorization: {credentials(challenge, 's3cret-acme')}"
    assert h.stack.vouched == []
    await h.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
    assert [tx.addr for tx in h.stack.requests("INVITE")] == [world.GATEWAYS[0]]
    assert h.stack.vouched == [world.STRANGER[0]]  # its flood budget grows: a busy PBX is not cut off


async def test_wrong_passwords_lock_the_source_out_then_silence_it(tmp_path: Path) -> None:
    h = world.build(tmp_path, EdgeOptions(lockout_after=3, silence_after=5))
    for _ in range(3):
        auth = f"Proxy-Authorization: {credentials(await challenge_of(h), 'guess')}"
        await h.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
        assert h.stack.responses[-1].status == 407  # a wrong password is challenged again
    pair = LockoutPolicy.keys(world.STRANGER[0], "acme")[0]
    assert await h.store.auth_failures(pair, 60.0) == 3
    await h.stack.deliver(world.invite(caller="acme", source=world.STRANGER), world.STRANGER)
    assert h.stack.responses[-1].status == 403  # locked out: even the right password would not do
    assert "too many" in h.stack.responses[-1].reason
    await h.stack.deliver(world.invite(caller="acme", source=world.STRANGER), world.STRANGER)
    assert h.stack.responses[-1].status == 403  # hammering counts too: now 5 failures
    answered = len(h.stack.responses)
    await h.stack.deliver(world.invite(caller="acme", source=world.STRANGER), world.STRANGER)
    assert len(h.stack.responses) == answered  # silence
    assert len(h.stack.discarded) == 1  # ... and no transaction left to answer later
    assert h.stack.requests("INVITE") == []


async def test_a_stranger_guessing_a_username_does_not_lock_out_its_real_pbx(tmp_path: Path) -> None:
    """Lockout is per (source, username): the PBX that owns `acme`, elsewhere, still gets in."""
    h = world.build(tmp_path, EdgeOptions(lockout_after=2, silence_after=3))
    for _ in range(2):
        auth = f"Proxy-Authorization: {credentials(await challenge_of(h), 'guess')}"
        await h.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
    await h.stack.deliver(world.invite(caller="acme", source=world.STRANGER), world.STRANGER)
    assert h.stack.responses[-1].status == 403  # the stranger is locked out of `acme`
    real = ("127.0.0.10", 5060)
    auth = f"Proxy-Authorization: {credentials(await challenge_of(h, real), 's3cret-acme')}"
    await h.stack.deliver(world.invite(source=real, headers=(auth,)), real)
    assert [tx.addr for tx in h.stack.requests("INVITE")] == [world.GATEWAYS[0]]


async def test_unknown_and_known_usernames_get_the_same_challenge(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    known = parse_credentials(await challenge_of(h, caller="acme"))
    unknown = parse_credentials(await challenge_of(h, caller="nobody"))
    assert unknown.keys() == known.keys() and unknown["realm"] == known["realm"]
    assert unknown["algorithm"] == known["algorithm"]
    wrong_user = f"Proxy-Authorization: {credentials(await challenge_of(h), 'x', user='nobody')}"
    await h.stack.deliver(world.invite(source=world.STRANGER, headers=(wrong_user,)), world.STRANGER)
    assert h.stack.responses[-1].status == 407  # not a 403 that says "no such user"


async def test_a_nonce_is_good_only_from_the_source_it_was_issued_to(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    auth = f"Proxy-Authorization: {credentials(await challenge_of(h), 's3cret-acme')}"
    elsewhere = ("127.0.0.11", 5060)
    await h.stack.deliver(world.invite(source=elsewhere, headers=(auth,)), elsewhere)
    assert h.stack.responses[-1].status == 407
    assert h.stack.requests("INVITE") == []


async def test_rfc2069_credentials_only_where_the_trunk_allows_them(tmp_path: Path) -> None:
    strict = world.build(tmp_path)
    auth = f"Proxy-Authorization: {credentials(await challenge_of(strict), 's3cret-acme', qop=False)}"
    await strict.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
    assert strict.stack.responses[-1].status == 407 and strict.stack.requests("INVITE") == []
    digest = {"credentialsSecret": "acme-creds", "allowRfc2069": True}
    old = world.build(tmp_path, owner="edge-2", auth={"digest": digest, "ipAcl": ["127.0.0.2/32"]})
    auth = f"Proxy-Authorization: {credentials(await challenge_of(old), 's3cret-acme', qop=False)}"
    await old.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
    assert [tx.addr for tx in old.stack.requests("INVITE")] == [world.GATEWAYS[0]]


async def test_a_locked_out_source_does_not_lock_out_the_trunks_own_addresses(tmp_path: Path) -> None:
    h = world.build(tmp_path, EdgeOptions(lockout_after=1, silence_after=2))
    auth = f"Proxy-Authorization: {credentials(await challenge_of(h), 'guess')}"
    await h.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
    await h.stack.deliver(world.invite(), world.PBX)  # from the IP ACL: no authentication at all
    assert [tx.addr for tx in h.stack.requests("INVITE")] == [world.GATEWAYS[0]]
