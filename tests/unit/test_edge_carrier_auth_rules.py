"""Where the edge sends a carrier its credentials (edge/carrier_auth.py), over the in-memory stack:
only to the Carrier's gateways, never in a CANCEL, never when the dialog moved elsewhere; an
inbound call's BYE toward its carrier is answered too; a carrier without credentials, or a challenge
we cannot read, is an ordinary final answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import edge_harness as world
from tests.support.fake_stack import ClientTx
from trunkline.core.manifests import load
from trunkline.edge.directory import Directory

CHALLENGE = 'Proxy-Authenticate: Digest realm="carrier.example", nonce="abc", algorithm=MD5, qop="auth"'
WWW = 'WWW-Authenticate: Digest realm="carrier.example", nonce="def", qop="auth"'


def with_credentials(h: world.Harness, tmp_path: Path, username: str = "trunk-acme") -> None:
    docs: list[dict[str, Any]] = world.manifest_docs()
    for doc in docs:
        if doc["kind"] == "Carrier":
            doc["spec"]["auth"] = {"credentialsSecret": "pstn-creds"}
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pstn-creds"},
                 "stringData": {"username": username, "password": "carrier-pw"}})  # fmt: skip
    path = tmp_path / "with-credentials.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    config, problems = load([path])
    assert problems == []
    h.edge.directory = Directory(config)


def credentials(tx: ClientTx) -> list[str]:
    return tx.request.get_all("Authorization") + tx.request.get_all("Proxy-Authorization")


async def test_cancel_goes_with_the_authenticated_invite_and_carries_no_credentials(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    with_credentials(h, tmp_path)
    caller_invite = world.invite(call_id="c1", branch="z9hG4bKcaller1")
    await h.stack.deliver(caller_invite, world.PBX)
    await h.stack.reply(h.stack.requests("INVITE")[0], 407, CHALLENGE)
    second = h.stack.requests("INVITE")[1]
    assert second.addr == world.GATEWAYS[0] and credentials(second)
    await h.stack.reply(second, 180)
    cancel = caller_invite.replace("INVITE sip:", "CANCEL sip:").replace("1 INVITE", "1 CANCEL")
    await h.stack.deliver(cancel, world.PBX)
    [cancel_tx] = h.stack.requests("CANCEL")
    assert cancel_tx.request.top_via.branch == second.request.top_via.branch
    assert cancel_tx.request.cseq.seq == second.request.cseq.seq == 2 and credentials(cancel_tx) == []


async def test_a_bye_to_a_dialog_that_moved_off_the_gateway_gets_no_credentials(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    with_credentials(h, tmp_path)
    await h.stack.deliver(world.invite(call_id="c2"), world.PBX)
    b = h.stack.requests("INVITE")[0]
    await h.stack.reply(b, 200, "Contact: <sip:elsewhere@127.0.0.5:5090>")  # not a gateway's address
    ok = h.stack.responses[-1]
    assert ok.status == 200 and ok.to.tag
    await h.stack.deliver(world.in_dialog("BYE", "c2", ok.to.tag, 2), world.PBX)
    [bye] = h.stack.requests("BYE")
    assert bye.addr == ("127.0.0.5", 5090)
    await h.stack.reply(bye, 401, WWW)
    assert len(h.stack.requests("BYE")) == 1  # not sent again: that address never gets credentials


async def test_a_bye_at_the_gateway_is_answered_once_then_given_up(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    with_credentials(h, tmp_path)
    call = await world.answered_call(h)
    await h.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    first = h.stack.requests("BYE")[0]
    await h.stack.reply(first, 401, WWW)
    again = h.stack.requests("BYE")[1]
    assert again.addr == world.GATEWAYS[0] and again.request.cseq.seq == first.request.cseq.seq + 1
    [value] = credentials(again)
    assert value.startswith("Digest ") and 'username="trunk-acme"' in value and 'nonce="def"' in value
    await h.stack.reply(again, 401, WWW)  # refused: no third BYE
    assert len(h.stack.requests("BYE")) == 2


async def test_an_inbound_calls_bye_toward_its_carrier_is_answered(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    with_credentials(h, tmp_path)
    source = world.GATEWAYS[0]  # the carrier calls from its gateway's address
    inbound = world.invite(to="+14155550100", caller="+442071234567", call_id="c3", source=source)
    await h.stack.deliver(inbound, source)
    pbx = h.stack.requests("INVITE")[0]
    assert pbx.addr == world.ORIGINATION
    await h.stack.reply(pbx, 200, "Contact: <sip:pbx@127.0.0.4:5080>")
    b_tag = pbx.request.from_.tag
    hang_up = world.in_dialog("BYE", pbx.request.call_id, b_tag or "", 5, source=world.ORIGINATION,
                              from_tag="callee")  # fmt: skip
    await h.stack.deliver(hang_up, world.ORIGINATION)
    first = h.stack.requests("BYE")[0]
    assert first.addr == source
    await h.stack.reply(first, 401, WWW)
    assert credentials(h.stack.requests("BYE")[1])


async def test_a_carrier_without_credentials_gets_its_challenge_relayed(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    await h.stack.deliver(world.invite(), world.PBX)
    await h.stack.reply(h.stack.requests("INVITE")[0], 407, CHALLENGE)
    assert len(h.stack.requests("INVITE")) == 1 and h.stack.statuses()[-1] == 407


async def test_an_unreadable_challenge_moves_the_call_to_the_next_gateway(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    with_credentials(h, tmp_path)
    await h.stack.deliver(world.invite(), world.PBX)
    garbage = "Proxy-Authenticate: Digest realm=carrier.example, nonce=" + "\x7f" * 3 + ", algorithm=SHA-1"
    await h.stack.reply(h.stack.requests("INVITE")[0], 407, garbage)
    invites = h.stack.requests("INVITE")
    assert [tx.addr for tx in invites] == world.GATEWAYS and credentials(invites[1]) == []
    await h.stack.reply(invites[1], 200, "Contact: <sip:gw@127.0.0.1:5072>")
    assert h.stack.statuses()[-1] == 200


async def test_a_username_that_would_break_the_header_is_never_sent(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    with_credentials(h, tmp_path, username="trunk\r\nX-Forged: yes")
    await h.stack.deliver(world.invite(), world.PBX)
    await h.stack.reply(h.stack.requests("INVITE")[0], 407, CHALLENGE)
    assert len(h.stack.requests("INVITE")) == 1 and h.stack.statuses()[-1] == 407
