"""One holder per call, fenced by its epoch: an in-dialog request that reaches another edge hands the
call over explicitly (the store raises its epoch); the previous holder's next timer, write or end
finds the epoch changed and stands down without sending anything. The end of a call writes one CDR
into the store's stream, and the JSON lines file only on the edge whose end counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import edge_harness as world
from tests.support.fake_stack import FakeStack
from trunkline.core.cdr import CdrSettings
from trunkline.core.state import CallEnd, MemoryStore
from trunkline.edge.context import EdgeOptions

REFRESHED = "Session-Expires: 90;refresher=uac"


def pair(tmp_path: Path) -> tuple[world.Harness, world.Harness]:
    one = world.build(tmp_path, EdgeOptions(), owner="edge-1")
    two = world.build(tmp_path, EdgeOptions(), store=one.store, owner="edge-2")
    return one, two


def cdrs(h: world.Harness) -> list[dict[str, object]]:
    assert isinstance(h.store, MemoryStore)
    return [json.loads(line) for line in h.store.cdr_stream]


async def test_a_refresh_through_another_edge_hands_the_call_over_and_ends_nothing_early(
    tmp_path: Path,
) -> None:
    one, two = pair(tmp_path)
    call = await world.answered_call(one, REFRESHED)
    await one.stack.advance(60.0)
    await two.stack.deliver(world.in_dialog("INVITE", call.call_id, call.a_tag, 2), world.PBX)
    reinvite = two.stack.requests("INVITE")[-1]
    assert reinvite.addr == world.GATEWAYS[0] and reinvite.request.cseq.seq == 2
    await two.stack.reply(reinvite, 200, "Contact: <sip:gw@127.0.0.1:5071>", REFRESHED)
    assert two.stack.responses[-1].status == 200 and two.edge.active_calls == 1
    assert await one.store.call_epoch(call.call_id) == 1  # the handover raised the epoch

    await one.stack.advance(40.0)  # past the old session end on edge-1: it stands down silently
    assert one.stack.requests("BYE") == [] and one.edge.active_calls == 0
    assert cdrs(one) == [] and one.cdr.records == []
    assert await one.store.channels_in_use("default/acme") == 1  # the call goes on at edge-2

    await two.stack.advance(80.0)  # edge-2 carries it: still refreshed 80 s ago
    assert two.stack.requests("BYE") == []
    await two.stack.advance(11.0)  # and ends it at its own session end: one BYE per leg, one CDR
    assert sorted(tx.addr for tx in two.stack.requests("BYE")) == sorted([world.PBX, world.GATEWAYS[0]])
    ((cdr,),) = [cdrs(two)]
    assert (cdr["call_id"], cdr["hangup_side"], cdr["hangup_reason"]) == (
        call.call_id, "edge", "session timer expired")  # fmt: skip
    assert len(two.cdr.records) == 1 and await two.store.channels_in_use("default/acme") == 0


async def test_a_bye_through_another_edge_ends_the_call_once(tmp_path: Path) -> None:
    one, two = pair(tmp_path)
    call = await world.answered_call(one, REFRESHED)
    await two.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert two.stack.responses[-1].status == 200
    assert [tx.addr for tx in two.stack.requests("BYE")] == [world.GATEWAYS[0]]
    await one.stack.advance(4 * 3600.0 + 10)  # every timer of edge-1 fires: it finds the call ended
    assert one.stack.requests("BYE") == [] and one.edge.active_calls == 0
    assert len(cdrs(one)) == 1 and cdrs(one)[0]["hangup_side"] == "caller"
    assert one.cdr.records == [] and len(two.cdr.records) == 1


async def test_a_request_back_at_the_first_edge_takes_the_call_back(tmp_path: Path) -> None:
    one, two = pair(tmp_path)
    call = await world.answered_call(one, REFRESHED)
    await two.stack.deliver(world.in_dialog("INFO", call.call_id, call.a_tag, 2), world.PBX)
    await two.stack.reply(two.stack.requests("INFO")[-1], 200)
    # The next request reaches edge-1 again: it sees it lost the call, takes it back with a new epoch
    # and relays with the dialog as edge-2 left it (CSeq 3 towards the callee, not a stale 2).
    await one.stack.deliver(world.in_dialog("INFO", call.call_id, call.a_tag, 3), world.PBX)
    info = one.stack.requests("INFO")[-1]
    assert info.request.cseq.seq == call.b.request.cseq.seq + 2
    await one.stack.reply(info, 200)
    assert one.stack.responses[-1].status == 200
    assert await one.store.call_epoch(call.call_id) == 2
    await two.stack.advance(91.0)  # edge-2's session timer: lost, silent
    assert two.stack.requests("BYE") == [] and two.edge.active_calls == 0
    await one.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 4), world.PBX)
    assert len(one.stack.requests("BYE")) == 1 and len(cdrs(one)) == 1


async def test_a_stale_holders_write_stands_it_down(tmp_path: Path) -> None:
    one, _ = pair(tmp_path)
    call = await world.answered_call(one, REFRESHED)
    assert await one.store.bump_epoch(call.call_id) == 1  # another edge took the call over
    held = one.edge.ctx.calls.get(call.call_id)
    assert held is not None
    assert not await one.edge.ctx.save(held)  # fenced: nothing written
    assert one.edge.active_calls == 1  # the room that saved decides; ctx.save only reports


async def test_the_cdr_says_where_the_edge_runs_and_where_the_call_came_from(tmp_path: Path) -> None:
    one, _ = pair(tmp_path)
    one.cdr.settings = CdrSettings(installation="trunkline", namespace="voice")  # as from_env gives it
    call = await world.answered_call(one)
    await one.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    ((cdr,),) = [cdrs(one)]
    assert cdr["source_address"] == f"{world.PBX[0]}:{world.PBX[1]}" and cdr["source_transport"] == "udp"
    assert cdr["trunk"] == "default/acme" and cdr["billable_seconds"] == 0
    assert (cdr["installation"], cdr["namespace"]) == ("trunkline", "voice")


class HeldEnd(MemoryStore):
    """A store whose end of a call waits until `release` is set: an edge killed meanwhile has not
    ended the call."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.release = asyncio.Event()

    async def end_call_with_cdr(self, *args: Any, **kwargs: Any) -> CallEnd:
        await self.release.wait()
        return await super().end_call_with_cdr(*args, **kwargs)


async def test_a_bye_is_answered_only_once_the_end_is_stored(tmp_path: Path) -> None:
    """So that an edge dying before its CDR write leaves the BYE to be sent again to another edge."""
    h = world.build(tmp_path, EdgeOptions(), store=HeldEnd(FakeStack().clock))
    assert isinstance(h.store, HeldEnd)
    call = await world.answered_call(h, REFRESHED)
    answered = len(h.stack.responses)
    await h.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
    assert [tx.addr for tx in h.stack.requests("BYE")] == [world.GATEWAYS[0]]  # the callee's BYE left
    assert len(h.stack.responses) == answered and cdrs(h) == []  # the caller's BYE not answered yet
    h.store.release.set()
    await h.stack.settle()
    assert h.stack.responses[-1].status == 200 and len(cdrs(h)) == 1
