"""In-dialog requests from an address that is not their party's (docs/security.md "In-dialog"): the
caller's signalling source, the callee's target, a trunk's IP ACL, carriers' CIDRs and gateways are
the party; anyone else must authenticate as the call's trunk on a PBX's side, and gets 403 on a
carrier's side. Known parties go on as before."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world
from trunkline.edge.digest import digest_response, parse_credentials


async def test_a_bye_from_the_pbx_ends_the_call(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h)
    await h.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert h.stack.responses[-1].status == 200 and h.edge.active_calls == 0


async def test_a_bye_from_a_stranger_on_the_pbx_side_is_challenged_and_changes_nothing(
    tmp_path: Path,
) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h)
    bye = world.in_dialog("BYE", call.call_id, call.a_tag, 2, source=world.STRANGER)
    await h.stack.deliver(bye, world.STRANGER)
    assert h.stack.responses[-1].status == 407
    assert h.edge.active_calls == 1 and h.stack.requests("BYE") == []
    # With the trunk's credentials it is the PBX speaking from elsewhere: the BYE goes through.
    params = parse_credentials(h.stack.responses[-1].get("Proxy-Authenticate") or "")
    uri = "sip:trunkline@127.0.0.1:5060"
    response = digest_response(params["algorithm"], "acme", params["realm"], "s3cret-acme", "BYE", uri,
                               params["nonce"], "auth", "00000001", "c0ffee")  # fmt: skip
    auth = (f'Proxy-Authorization: Digest username="acme", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", '
            f'algorithm={params["algorithm"]}, qop=auth, nc=00000001, cnonce="c0ffee"')  # fmt: skip
    bye = world.in_dialog("BYE", call.call_id, call.a_tag, 3, source=world.STRANGER, headers=(auth,))
    await h.stack.deliver(bye, world.STRANGER)
    assert h.stack.responses[-1].status == 200 and h.edge.active_calls == 0


async def test_a_bye_from_a_stranger_on_the_carrier_side_is_403(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h)
    b_tag = call.b_ok.to.tag
    from_callee = world.in_dialog("BYE", call.b.request.call_id, call.b.request.from_.tag, 2,
                                  source=world.STRANGER, from_tag=b_tag)  # fmt: skip
    await h.stack.deliver(from_callee, world.STRANGER)
    assert h.stack.responses[-1].status == 403
    assert h.edge.active_calls == 1 and h.stack.requests("BYE") == []
    gateway = world.GATEWAYS[0]
    from_callee = world.in_dialog("BYE", call.b.request.call_id, call.b.request.from_.tag, 3,
                                  source=gateway, from_tag=b_tag)  # fmt: skip
    await h.stack.deliver(from_callee, gateway)
    assert h.stack.responses[-1].status == 200 and h.edge.active_calls == 0


async def test_an_ack_from_a_stranger_is_not_passed_on(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h)
    await h.stack.deliver(
        world.in_dialog("ACK", call.call_id, call.a_tag, 1, source=world.STRANGER), world.STRANGER
    )
    assert h.stack.acks == []
    await h.stack.deliver(world.in_dialog("ACK", call.call_id, call.a_tag, 1), world.PBX)
    assert len(h.stack.acks) == 1
