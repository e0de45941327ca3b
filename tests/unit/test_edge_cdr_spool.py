"""The CDR spool (edge/spool.py): call ends the store did not take are on disk before the caller is
answered, marked done once the store takes them, replayed by the next process on the same directory,
and bounded (the oldest dropped and counted)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.support import edge_harness as world
from tests.unit.test_edge_refused_calls_get_their_cdr import StallingStore
from trunkline.core.net import ConfigError
from trunkline.core.state import MemoryStore
from trunkline.edge.adoption import incarnation, predecessors_of
from trunkline.edge.ending import replay_spool
from trunkline.edge.metrics import EdgeMetrics
from trunkline.edge.server import build_parser, open_spool
from trunkline.edge.spool import SPOOL_FILE, CdrSpool, SpooledEnd
from trunkline.sip.message import Response


def end(n: int, size: int = 10) -> SpooledEnd:
    return SpooledEnd(f"call-{n}", "default/acme", (f"d{n}",), json.dumps({"id": n, "pad": "x" * size}))


async def test_ends_survive_the_process_until_the_store_takes_them(tmp_path: Path) -> None:
    spool = CdrSpool(tmp_path)
    assert spool.load() == []
    for n in range(3):
        await spool.add(end(n))
    await spool.done("call-1")
    spool.close()  # the process dies: only the file is left
    again = CdrSpool(tmp_path)
    assert again.load() == [end(0), end(2)]
    assert again.loaded() == [end(0), end(2)]
    await again.done("call-0")
    assert again.loaded() == [end(2)]
    await again.done("call-2")
    assert (tmp_path / SPOOL_FILE).stat().st_size == 0  # nothing pending: an empty file
    again.close()
    with pytest.raises(OSError, match="closed"):  # the edge stopping: told, never a crash
        await again.add(end(3))
    await again.done("call-3")
    assert CdrSpool(tmp_path).load() == []


async def test_a_torn_or_foreign_line_is_skipped(tmp_path: Path) -> None:
    spool = CdrSpool(tmp_path)
    spool.load()
    await spool.add(end(1))
    spool.close()
    with (tmp_path / SPOOL_FILE).open("ab") as file:  # a kill in mid-write, and lines not ours
        file.write(b'[1, 2]\n{"call": 5}\n\xff\xfe\n{"call": "c", "trunk": "t", "dialogs": [1], "cdr": ""}\n')
        file.write(end(2).line()[:20])
    assert CdrSpool(tmp_path).load() == [end(1)]


async def test_the_spool_is_bounded_dropping_the_oldest_and_counting_them(tmp_path: Path) -> None:
    spool = CdrSpool(tmp_path, max_bytes=64 * 1024)
    spool.load()
    line = len(end(0, 1000).line())
    for n in range(200):  # about three times what fits
        await spool.add(end(n, 1000))
    assert spool.dropped > 0 and spool.pending + spool.dropped == 200
    assert spool.pending >= (64 * 1024) // line - 1
    assert (tmp_path / SPOOL_FILE).stat().st_size <= 64 * 1024
    spool.close()
    kept = CdrSpool(tmp_path, max_bytes=64 * 1024).load()
    assert [e.call for e in kept] == [f"call-{n}" for n in range(200 - len(kept), 200)]  # the newest


def test_a_restarted_process_is_a_new_owner_that_names_its_predecessors() -> None:
    first, second = incarnation("edge-7f9c"), incarnation("edge-7f9c")
    assert first != second and first.startswith("edge-7f9c/") and second.startswith("edge-7f9c/")
    assert predecessors_of(second) == "edge-7f9c/"
    assert predecessors_of("host-1234") == ""  # not an incarnation (no --edge-id): nobody to claim


async def answers(h: world.Harness, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while len(h.stack.responses) < count:  # the spool's fsync runs on its thread, in real time
        assert asyncio.get_running_loop().time() < deadline, h.stack.responses
        await asyncio.sleep(0.01)


async def test_a_refused_call_is_spooled_before_its_503_and_replayed_by_the_next_process(
    tmp_path: Path,
) -> None:
    store = StallingStore()
    h = world.build(tmp_path, store=store)
    store.clock = h.stack.clock
    h.edge.ctx.spool = CdrSpool(tmp_path / "spool")
    h.edge.ctx.spool.load()
    on_disk_at_answer: list[int] = []
    respond = h.stack.respond

    def noting(response: Response) -> None:
        on_disk_at_answer.append((tmp_path / "spool" / SPOOL_FILE).stat().st_size)
        respond(response)

    h.stack.respond = noting  # type: ignore[method-assign]
    await h.stack.deliver(world.invite(call_id="refused"), world.PBX)
    await answers(h, 1)
    assert h.stack.responses[-1].status == 503
    assert on_disk_at_answer[-1] > 0  # the end was on disk when the 503 went out
    h.edge.ctx.spool.close()  # the edge is killed while the store still fails

    # The next process of the pod, on the same directory, with the store answering again.
    fresh = world.build(tmp_path, store=store, owner="edge-2")
    fresh.edge.ctx.spool = CdrSpool(tmp_path / "spool")
    assert [e.call for e in fresh.edge.ctx.spool.load()] == ["refused"]
    store.failing = False
    await replay_spool(fresh.edge.ctx)
    ((line,),) = [list(store.cdr_stream)]
    cdr = json.loads(line)
    assert (cdr["call_id"], cdr["final_status"], cdr["hangup_reason"]) == (
        "refused", 503, "store unavailable at admission",
    )  # fmt: skip
    assert await store.channels_in_use("default/acme") == 0  # the lost admission's channel freed
    assert fresh.edge.ctx.spool.pending == 0
    await replay_spool(fresh.edge.ctx)  # nothing left to offer: no second CDR
    assert len(store.cdr_stream) == 1
    fresh.edge.ctx.spool.close()


async def test_a_replay_the_store_does_not_take_stays_in_the_spool(tmp_path: Path) -> None:
    spool = CdrSpool(tmp_path)
    spool.load()
    await spool.add(end(1))
    spool.close()
    store = StallingStore()
    h = world.build(tmp_path, store=store)
    h.edge.ctx.spool = CdrSpool(tmp_path)
    h.edge.ctx.spool.load()
    with pytest.raises(Exception, match="TimeoutError"):
        await replay_spool(h.edge.ctx)
    assert h.edge.ctx.spool.pending == 1
    store.failing = False
    await replay_spool(h.edge.ctx)
    assert h.edge.ctx.spool.pending == 0 and len(store.cdr_stream) == 1
    h.edge.ctx.spool.close()
    assert isinstance(store, MemoryStore)


async def test_the_flags_size_the_spool_and_its_figures_reach_metrics(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--cdr-spool", str(tmp_path / "s"), "--cdr-spool-max-bytes", "70000"])
    spool = open_spool(args.cdr_spool, args.cdr_spool_max_bytes)
    assert spool.max_bytes == 70000 and (tmp_path / "s" / SPOOL_FILE).exists()
    metrics = EdgeMetrics(CollectorRegistry())
    metrics.count_spool(lambda: spool.pending, lambda: spool.dropped)
    for n in range(80):  # about 1.2 KB each: past 70,000 bytes the oldest go
        await spool.add(end(n, 1100))
    text = generate_latest(metrics.registry).decode()
    assert f"trunkline_cdr_spool_pending {float(spool.pending)}" in text
    assert f"trunkline_cdr_spool_dropped_total {float(spool.dropped)}" in text and spool.dropped > 0
    spool.close()
    with pytest.raises(ConfigError, match="--cdr-spool-max-bytes"):
        open_spool(str(tmp_path / "s"), 1000)
