"""Digest authentication of a caller that is in no IP ACL: a challenge, the call with the right
password, failures counted per source, 403 past `lockout_after` and silence past `silence_after`."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world
from trunkline.edge.context import EdgeOptions
from trunkline.edge.digest import digest_response, parse_credentials

URI = "sip:+442071234567@127.0.0.1:5060"


def credentials(challenge: str, password: str, nc: int = 1) -> str:
    params = parse_credentials(challenge)
    algorithm, realm, nonce = params["algorithm"], params["realm"], params["nonce"]
    count = f"{nc:08x}"
    response = digest_response(
        algorithm, "acme", realm, password, "INVITE", URI, nonce, "auth", count, "c0ffee"
    )
    return (f'Digest username="acme", realm="{realm}", nonce="{nonce}", uri="{URI}", response="{response}", '
            f'algorithm={algorithm}, qop=auth, nc={count}, cnonce="c0ffee"')  # fmt: skip


async def challenge_of(h: world.Harness) -> str:
    await h.stack.deliver(world.invite(caller="+14155550100", source=world.STRANGER), world.STRANGER)
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
    await h.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
    assert [tx.addr for tx in h.stack.requests("INVITE")] == [world.GATEWAYS[0]]


async def test_wrong_passwords_lock_the_source_out_then_silence_it(tmp_path: Path) -> None:
    h = world.build(tmp_path, EdgeOptions(lockout_after=3, silence_after=5))
    for _ in range(3):
        auth = f"Proxy-Authorization: {credentials(await challenge_of(h), 'guess')}"
        await h.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
        assert h.stack.responses[-1].status == 407  # a wrong password is challenged again
    assert await h.store.auth_failures(world.STRANGER[0], 60.0) == 3
    await h.stack.deliver(world.invite(source=world.STRANGER), world.STRANGER)
    assert h.stack.responses[-1].status == 403  # locked out: even the right password would not do
    assert "too many" in h.stack.responses[-1].reason
    await h.stack.deliver(world.invite(source=world.STRANGER), world.STRANGER)
    assert h.stack.responses[-1].status == 403  # hammering counts too: now 5 failures
    answered = len(h.stack.responses)
    await h.stack.deliver(world.invite(source=world.STRANGER), world.STRANGER)
    assert len(h.stack.responses) == answered  # silence
    assert h.stack.requests("INVITE") == []


async def test_a_locked_out_source_does_not_lock_out_the_trunks_own_addresses(tmp_path: Path) -> None:
    h = world.build(tmp_path, EdgeOptions(lockout_after=1, silence_after=2))
    auth = f"Proxy-Authorization: {credentials(await challenge_of(h), 'guess')}"
    await h.stack.deliver(world.invite(source=world.STRANGER, headers=(auth,)), world.STRANGER)
    await h.stack.deliver(world.invite(), world.PBX)  # from the IP ACL: no authentication at all
    assert [tx.addr for tx in h.stack.requests("INVITE")] == [world.GATEWAYS[0]]
