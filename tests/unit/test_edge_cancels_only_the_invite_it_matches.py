"""CANCEL (RFC 3261 9): only a CANCEL that matches a live INVITE server transaction (same branch)
cancels the call; the callee gets our CANCEL once it rang, the caller 487, the CDR says so."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world


def cancel(branch: str, call_id: str) -> str:
    return (
        "CANCEL sip:+442071234567@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch={branch}\n"
        "From: <sip:+14155550100@127.0.0.2>;tag=caller\n"
        "To: <sip:+442071234567@127.0.0.1>\n"
        f"Call-ID: {call_id}\nCSeq: 1 CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n"
    ).replace("\n", "\r\n")


async def test_a_cancel_with_another_branch_is_481_and_the_call_goes_on(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    await h.stack.deliver(world.invite(call_id="c1", branch="z9hG4bKinvite"), world.PBX)
    await h.stack.reply(h.stack.requests("INVITE")[0], 180)
    await h.stack.deliver(cancel("z9hG4bKother", "c1"), world.PBX)
    assert h.stack.responses[-1].status == 481
    assert h.stack.requests("CANCEL") == []
    assert h.edge.active_calls == 1


async def test_the_matching_cancel_cancels_the_ringing_callee_and_ends_the_call(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    await h.stack.deliver(world.invite(call_id="c2", branch="z9hG4bKinvite"), world.PBX)
    b_invite = h.stack.requests("INVITE")[0]
    await h.stack.reply(b_invite, 180)
    await h.stack.deliver(cancel("z9hG4bKinvite", "c2"), world.PBX)
    statuses = [(r.status, r.cseq.method) for r in h.stack.responses]
    assert (200, "CANCEL") in statuses and (487, "INVITE") in statuses
    cancels = h.stack.requests("CANCEL")
    assert len(cancels) == 1 and cancels[0].request.top_via.branch == b_invite.request.top_via.branch
    await h.stack.reply(b_invite, 487)
    record = h.cdr.records[-1]
    assert (record.status, record.hung_up.value) == (487, "caller") and h.edge.active_calls == 0


async def test_a_cancel_before_the_callee_rang_is_sent_when_it_does(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    await h.stack.deliver(world.invite(call_id="c3", branch="z9hG4bKinvite"), world.PBX)
    await h.stack.deliver(cancel("z9hG4bKinvite", "c3"), world.PBX)
    assert h.stack.requests("CANCEL") == []  # RFC 3261 9.1: not before a provisional response
    await h.stack.reply(h.stack.requests("INVITE")[0], 180)
    assert len(h.stack.requests("CANCEL")) == 1
