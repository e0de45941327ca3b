"""Session timers (RFC 4028) and the longest call, on the stack's clock: a session not refreshed
within its interval ends with BYE both ways; a refresh moves the end; `max_duration` ends any call."""

from __future__ import annotations

from pathlib import Path

from tests.support import edge_harness as world
from trunkline.edge.context import EdgeOptions


async def test_an_unrefreshed_session_ends_at_its_interval(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h, "Session-Expires: 90;refresher=uac")
    await h.stack.advance(89.0)
    assert h.stack.requests("BYE") == [] and h.edge.active_calls == 1
    await h.stack.advance(2.0)
    byes = h.stack.requests("BYE")
    assert sorted(tx.addr for tx in byes) == sorted([world.PBX, world.GATEWAYS[0]])
    record = h.cdr.records[-1]
    assert (record.hung_up.value, record.reason, record.call_id) == (
        "edge",
        "session timer expired",
        call.call_id,
    )


async def test_a_refresh_moves_the_end_of_the_session(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    call = await world.answered_call(h, "Session-Expires: 90;refresher=uac")
    await h.stack.advance(60.0)
    await h.stack.deliver(world.in_dialog("INVITE", call.call_id, call.a_tag, 2), world.PBX)
    await h.stack.reply(h.stack.requests("INVITE")[-1], 200, "Contact: <sip:gw@127.0.0.1:5071>",
                        "Session-Expires: 90;refresher=uac")  # fmt: skip
    await h.stack.advance(60.0)  # 120 s after the answer, 60 s after the refresh
    assert h.stack.requests("BYE") == [] and h.edge.active_calls == 1
    await h.stack.advance(31.0)
    assert len(h.stack.requests("BYE")) == 2 and h.edge.active_calls == 0


async def test_the_longest_call_is_ended_by_the_edge(tmp_path: Path) -> None:
    h = world.build(tmp_path, EdgeOptions(max_duration=600.0))
    await world.answered_call(h)
    await h.stack.advance(599.0)
    assert h.edge.active_calls == 1
    await h.stack.advance(2.0)
    assert h.edge.active_calls == 0 and h.cdr.records[-1].reason == "maximum call duration"


async def test_an_unanswered_bye_is_given_up_on_the_stacks_clock(tmp_path: Path) -> None:
    h = world.build(tmp_path, EdgeOptions(max_duration=10.0))
    await world.answered_call(h)
    await h.stack.advance(11.0)
    byes = h.stack.requests("BYE")
    assert len(byes) == 2 and not any(tx.future.done() for tx in byes)
    await h.stack.advance(40.0)  # nobody answers: the edge's BYE waits end, nothing is left running
    assert h.edge.ctx.running == 0
