"""In-dialog requests: a re-INVITE from either side goes to the other leg in that leg's dialog (its
Call-ID, tags and CSeq), the answer comes back, the ACK follows; BYE ends the call both ways."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world


async def test_a_reinvite_from_the_caller_reaches_the_callee_and_its_ack_follows(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h)
    await h.stack.deliver(world.in_dialog("ACK", call.call_id, call.a_tag, 1), world.PBX)
    assert len(h.stack.acks) == 1  # the caller's ACK of the 200 goes on to the callee
    reinvite = world.in_dialog("INVITE", call.call_id, call.a_tag, 2, body=world.SDP,
                               headers=("Content-Type: application/sdp",))  # fmt: skip
    await h.stack.deliver(reinvite, world.PBX)
    out = h.stack.requests("INVITE")[-1]
    b_request = call.b.request
    assert out is not call.b and out.addr == world.GATEWAYS[0]
    assert out.request.call_id == b_request.call_id != call.call_id  # the callee's dialog, not ours
    assert out.request.from_.tag == b_request.from_.tag and out.request.to.tag == "callee"
    assert out.request.cseq.seq > b_request.cseq.seq and out.request.body == world.SDP.encode()
    await h.stack.reply(out, 200, "Contact: <sip:gw@127.0.0.1:5071>", body=b"v=0\r\n")
    relayed = h.stack.responses[-1]
    assert (relayed.status, relayed.call_id, relayed.cseq.seq) == (200, call.call_id, 2)
    await h.stack.deliver(world.in_dialog("ACK", call.call_id, call.a_tag, 2), world.PBX)
    ack = h.stack.acks[-1][0]
    assert ack.call_id == b_request.call_id and ack.cseq.seq == out.request.cseq.seq


async def test_a_reinvite_from_the_callee_reaches_the_caller(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h)
    b_request = call.b.request
    from_callee = world.in_dialog("INVITE", b_request.call_id, b_request.from_.tag or "", 5,
                                  source=world.GATEWAYS[0], from_tag="callee")  # fmt: skip
    await h.stack.deliver(from_callee, world.GATEWAYS[0])
    out = h.stack.requests("INVITE")[-1]
    assert out.addr == world.PBX and out.request.call_id == call.call_id
    assert out.request.from_.tag == call.a_tag and out.request.to.tag == "caller"
    await h.stack.reply(out, 200, "Contact: <sip:caller@127.0.0.2:5060>", to_tag="caller")
    assert (h.stack.responses[-1].status, h.stack.responses[-1].call_id) == (200, b_request.call_id)


async def test_a_request_in_an_unknown_dialog_is_481(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    await h.stack.deliver(world.in_dialog("INFO", "nobody", "nosuchtag", 2), world.PBX)
    assert h.stack.responses[-1].status == 481


async def test_bye_from_the_caller_ends_both_legs(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h)
    await h.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert h.stack.responses[-1].status == 200
    bye = h.stack.requests("BYE")
    assert len(bye) == 1 and bye[0].request.call_id == call.b.request.call_id
    assert h.cdr.records[-1].hung_up.value == "caller" and h.edge.active_calls == 0
