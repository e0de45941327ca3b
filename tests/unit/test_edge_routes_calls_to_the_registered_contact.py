"""A carrier we register to may send its calls to the Contact exactly as bound (its user is ours, not
the DID): the DID is then read from To."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world

REGISTERING = {"registration": {"enabled": True, "user": "trunk-7"}}


def to_contact(did: str = "+14155550100", user: str = "trunk-7") -> str:
    request = world.invite(to=user, caller="+442071234567", source=world.CARRIER)
    return request.replace(f"To: <sip:{user}@127.0.0.1>", f"To: <sip:{did}@carrier.example>")


async def test_a_call_to_the_registered_contact_goes_to_the_did_in_to(tmp_path: Path) -> None:
    h = world.build(tmp_path, carrier=REGISTERING)
    await h.stack.deliver(to_contact(), world.CARRIER)
    (invite,) = h.stack.requests("INVITE")
    assert invite.addr == world.ORIGINATION
    assert invite.request.uri.user == "+14155550100"  # type: ignore[union-attr]


async def test_only_the_registered_user_reads_to_and_an_unknown_did_there_is_404(tmp_path: Path) -> None:
    h = world.build(tmp_path, carrier=REGISTERING)
    await h.stack.deliver(to_contact(did="+14155550199"), world.CARRIER)
    await h.stack.deliver(to_contact(user="someone-else"), world.CARRIER)
    assert h.stack.statuses() == [404, 404] and h.stack.requests("INVITE") == []
    not_registering = world.build(tmp_path, owner="edge-2")
    await not_registering.stack.deliver(to_contact(), world.CARRIER)
    assert not_registering.stack.statuses() == [404]
