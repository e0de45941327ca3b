"""The edge's upkeep driver over the in-memory stack: OPTIONS probes and REGISTER only while this
edge holds the lease, state written to the store, routing and /metrics following it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.support import edge_harness as world
from trunkline.core.state import StoreUnavailable, upkeep_key
from trunkline.edge.upkeep import Upkeep

HEALTH = {"health": {"interval": 1, "timeout": 0.5, "failuresToDown": 2, "successesToUp": 1}}


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Future[None]]]:
    tasks: list[asyncio.Future[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def metrics(h: world.Harness) -> str:
    return generate_latest(h.edge.metrics.registry).decode()


async def test_a_gateway_that_does_not_answer_probes_is_skipped_by_calls(
    tmp_path: Path, running: list[asyncio.Future[None]]
) -> None:
    h = world.build(tmp_path, carrier=HEALTH)
    lease = upkeep_key("health", "default", "pstn")
    assert await h.store.hold_lease(lease, "edge-2", ttl=2.5)  # another edge probes for now
    running.append(asyncio.ensure_future(Upkeep(h.edge.ctx, lease_ttl=3, observe_every=1).run()))
    await h.stack.advance(2)
    assert h.stack.requests("OPTIONS") == []
    await h.stack.advance(1)  # its lease lapsed (t=2.5): this edge takes it at its next try (t=3)
    for _ in range(3):  # the first gateway stays silent past the timeout each round
        probes = h.stack.requests("OPTIONS")[-2:]
        assert [tx.addr for tx in probes] == world.GATEWAYS
        await h.stack.reply(probes[1], 200)
        await h.stack.advance(1)  # the next round is due; every edge has read the store again
    health = await h.store.upkeep(lease)
    assert health is not None and health["holder"] == "edge-1"
    assert health["gateways"]["sip:127.0.0.1:5071"]["up"] is False
    assert h.edge.ctx.gateways_down[("default", "pstn")] == {"sip:127.0.0.1:5071"}
    shown = metrics(h)
    assert 'trunkline_gateway_up{carrier="pstn",gateway="sip:127.0.0.1:5071"} 0.0' in shown
    assert 'trunkline_gateway_up{carrier="pstn",gateway="sip:127.0.0.1:5072"} 1.0' in shown
    await h.stack.deliver(world.invite(), world.PBX)
    assert [tx.addr for tx in h.stack.requests("INVITE")] == [world.GATEWAYS[1]]


async def test_the_registration_is_kept_and_its_progress_stored(
    tmp_path: Path, running: list[asyncio.Future[None]]
) -> None:
    h = world.build(tmp_path, carrier={"registration": {"enabled": True, "user": "trunk-7", "expires": 60}})
    running.append(asyncio.ensure_future(Upkeep(h.edge.ctx, lease_ttl=3, observe_every=1).run()))
    await h.stack.settle()
    (first,) = h.stack.requests("REGISTER")
    assert first.addr == world.GATEWAYS[0] and first.request.get("Expires") == "60"
    assert str(first.request.contact[0].uri) == "sip:trunk-7@127.0.0.1:5060"  # the edge's Contact address
    await h.stack.reply(first, 200, "Expires: 40")
    state = await h.store.upkeep(upkeep_key("registration", "default", "pstn"))
    assert state is not None and state["cseq"] == 1 and state["holder"] == "edge-1"
    await h.stack.advance(1)
    assert 'trunkline_carrier_registered{carrier="pstn"} 1.0' in metrics(h)
    await h.stack.advance(19)  # refreshed halfway through what the registrar granted
    refresh = h.stack.requests("REGISTER")[-1]
    assert refresh is not first and refresh.request.call_id == first.request.call_id
    assert refresh.request.cseq.seq == 2
    await h.stack.reply(refresh, 403)  # refused: it backs off and tries the next registrar
    await h.stack.advance(2)
    retry = h.stack.requests("REGISTER")[-1]
    assert retry.addr == world.GATEWAYS[1] and retry.request.cseq.seq == 3
    state = await h.store.upkeep(upkeep_key("registration", "default", "pstn"))
    assert state is not None and state["failures"] == 1 and state["status"] == 403


async def test_calls_failed_in_a_row_take_a_probed_gateway_down(
    tmp_path: Path, running: list[asyncio.Future[None]]
) -> None:
    health = {"health": {"interval": 1, "timeout": 0.5, "failuresToDown": 2, "successesToUp": 3}}
    h = world.build(tmp_path, carrier=health)
    running.append(asyncio.ensure_future(Upkeep(h.edge.ctx, lease_ttl=3, observe_every=1).run()))

    async def answer_probes() -> None:
        for tx in h.stack.requests("OPTIONS")[-2:]:
            await h.stack.reply(tx, 200)

    await h.stack.settle()
    await answer_probes()
    for _ in range(2):  # the first gateway fails each call with 503; the second answers
        await h.stack.deliver(world.invite(), world.PBX)
        await h.stack.reply(h.stack.requests("INVITE")[-1], 503)
        await h.stack.reply(h.stack.requests("INVITE")[-1], 200, "Contact: <sip:gw@127.0.0.1:5072>")
    counted = await h.store.call_failures(upkeep_key("calls", "default", "pstn"))
    assert counted == {"sip:127.0.0.1:5071": 2}
    await h.stack.advance(1)  # the next probe round (answered) finds the calls' count
    await answer_probes()
    await h.stack.advance(1)
    await answer_probes()
    assert h.edge.ctx.gateways_down[("default", "pstn")] == {"sip:127.0.0.1:5071"}
    assert await h.store.call_failures(upkeep_key("calls", "default", "pstn")) == {}  # counted once
    before = len(h.stack.requests("INVITE"))
    await h.stack.deliver(world.invite(), world.PBX)
    assert [tx.addr for tx in h.stack.requests("INVITE")[before:]] == [world.GATEWAYS[1]]


async def test_a_store_hiccup_costs_no_extra_register(
    tmp_path: Path, running: list[asyncio.Future[None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = world.build(tmp_path, carrier={"registration": {"enabled": True, "user": "trunk-7", "expires": 600}})
    running.append(asyncio.ensure_future(Upkeep(h.edge.ctx, lease_ttl=3, observe_every=1).run()))
    await h.stack.settle()
    await h.stack.reply(h.stack.requests("REGISTER")[0], 200)
    hold = h.store.hold_lease

    async def unavailable(name: str, owner: str, ttl: float) -> bool:
        raise StoreUnavailable("redis: TimeoutError")

    monkeypatch.setattr(h.store, "hold_lease", unavailable)
    await h.stack.advance(5)
    monkeypatch.setattr(h.store, "hold_lease", hold)
    await h.stack.advance(5)
    assert len(h.stack.requests("REGISTER")) == 1  # the binding is good for 600 s: nothing to send


async def test_a_registrar_named_in_the_spec_is_used_instead_of_the_gateways(
    tmp_path: Path, running: list[asyncio.Future[None]]
) -> None:
    spec = {"registration": {"enabled": True, "user": "trunk-7", "registrar": "sip:127.0.0.9:5999"}}
    h = world.build(tmp_path, carrier=spec)
    running.append(asyncio.ensure_future(Upkeep(h.edge.ctx, lease_ttl=3, observe_every=1).run()))
    await h.stack.settle()
    (register,) = h.stack.requests("REGISTER")
    assert register.addr == ("127.0.0.9", 5999) and str(register.request.uri) == "sip:127.0.0.9:5999"
    assert str(register.request.to.uri) == "sip:trunk-7@127.0.0.9"
    assert register.request.get("Expires") == "600"  # the default


async def test_turning_registration_off_unregisters_and_gives_the_lease_up(
    tmp_path: Path, running: list[asyncio.Future[None]]
) -> None:
    h = world.build(tmp_path, carrier={"registration": {"enabled": True, "user": "trunk-7"}})
    running.append(asyncio.ensure_future(Upkeep(h.edge.ctx, lease_ttl=3, observe_every=1).run()))
    await h.stack.settle()
    await h.stack.reply(h.stack.requests("REGISTER")[0], 200)
    h.edge.directory = world.build(tmp_path, owner="edge-off").edge.directory  # registration: off
    await h.stack.advance(1)
    last = h.stack.requests("REGISTER")[-1]
    assert len(h.stack.requests("REGISTER")) == 2 and last.request.get("Expires") == "0"
    await h.stack.reply(last, 200)
    await h.stack.advance(2)
    lease = upkeep_key("registration", "default", "pstn")
    assert await h.store.hold_lease(lease, "edge-2", ttl=5)  # given up: another edge may take it
    assert 'trunkline_carrier_registered{carrier="pstn"}' not in metrics(h)
