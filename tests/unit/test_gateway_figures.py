"""Per-gateway answer-seizure ratio and post-dial delay from per-minute buckets, the edge's bounded
writes of them, and `routing: quality` (pure logic; the in-memory store on a fake clock)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine

from prometheus_client import CollectorRegistry

from trunkline.core.gateway_figures import (
    FIGURES_TTL,
    LONG_WINDOW,
    MAX_PDD_MS,
    PDD_BOUNDS_MS,
    SHORT_WINDOW,
    GatewayFigures,
    attempt_counts,
    window,
)
from trunkline.core.models import Carrier, CarrierRouting, Target
from trunkline.core.state import MemoryStore, StoreUnavailable, upkeep_key
from trunkline.edge.gateway_figures import FigureRecorder
from trunkline.edge.metrics import EdgeMetrics
from trunkline.edge.routing import by_quality, outbound_targets
from trunkline.sip.message import Response

A, B, C = "sip:a.example.net", "sip:b.example.net", "sip:c.example.net"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_one_attempt_counts_attempt_seizure_and_delay() -> None:
    assert attempt_counts(A, True, 0.25) == {
        f"{A} a": 1,
        f"{A} s": 1,
        f"{A} p": 1,
        f"{A} d": 250,
        f"{A} h0": 1,
    }
    assert attempt_counts(A, False, None) == {f"{A} a": 1}
    outlier = attempt_counts(A, False, 1e9)
    assert outlier[f"{A} d"] == MAX_PDD_MS and outlier[f"{A} h{len(PDD_BOUNDS_MS)}"] == 1  # a sum stays sane
    assert f"{A} h2" in attempt_counts(A, False, 0.7)  # 500 ms < 700 ms <= 1000 ms


def test_the_90th_percentile_is_the_bound_of_its_histogram_bucket() -> None:
    buckets = [attempt_counts(A, True, 0.1) for _ in range(9)] + [attempt_counts(A, True, 3.0)]
    assert window(buckets, 10, {A})[A].pdd_p90 == 0.25  # 9 of 10 within 250 ms
    slower = [*buckets, attempt_counts(A, True, 3.0)]
    assert window(slower, 11, {A})[A].pdd_p90 == 4.0  # 9 of 11 is under 90 %: the 3 s bucket's bound
    assert window([attempt_counts(A, True, 1e9)], 1, {A})[A].pdd_p90 == MAX_PDD_MS / 1000
    assert GatewayFigures(5, 0).pdd_p90 is None


def test_figures_over_a_window_ignore_other_gateways_and_junk() -> None:
    buckets = [
        {f"{A} a": 4, f"{A} s": 3, f"{A} p": 4, f"{A} d": 2000, f"{C} a": 9, "junk": 5, f"{A} z": 1},
        {},
        {f"{A} a": 6, f"{A} s": 1, f"{A} p": 2, f"{A} d": 3000, f"{B} s": -4},
    ]
    short = window(buckets, 2, {A, B})
    assert short == {A: GatewayFigures(4, 3, 4, 2000)}  # B has no attempts: absent; C is not asked for
    assert short[A].asr == 0.75 and short[A].pdd == 0.5
    long = window(buckets, 60, {A, B})
    assert long[A] == GatewayFigures(10, 4, 6, 5000) and long[A].asr == 0.4
    assert long[A].pdd is not None and abs(long[A].pdd - 5000 / 6 / 1000) < 1e-9
    assert GatewayFigures().asr is None and GatewayFigures(3, 0).pdd is None
    assert GatewayFigures(1, 5).asr == 1.0  # a hostile store's counts stay a ratio


async def test_five_and_sixty_minute_windows_on_a_fake_clock() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    name = upkeep_key("figures", "ns", "pstn")
    for minute in range(70):  # one failed attempt a minute to A, 70 minutes long; the last 3 answered
        seized = minute >= 67
        await store.count_per_minute(name, attempt_counts(A, seized, 1.0 if seized else None), FIGURES_TTL)
        clock.now += 60
    clock.now -= 60  # still within the last minute written
    buckets = await store.counts_per_minute(name, LONG_WINDOW)
    short, long = window(buckets, SHORT_WINDOW, {A})[A], window(buckets, LONG_WINDOW, {A})[A]
    assert (short.attempts, short.seizures, short.pdd) == (5, 3, 1.0)
    assert (long.attempts, long.seizures) == (60, 3)  # older minutes are outside the window
    clock.now += FIGURES_TTL + 60
    assert window(await store.counts_per_minute(name, LONG_WINDOW), LONG_WINDOW, {A}) == {}  # expired


def test_quality_ranks_within_a_priority_and_keeps_places_of_gateways_with_few_attempts() -> None:
    gateways = [Target(uri=A, priority=10), Target(uri=B, priority=10), Target(uri=C, priority=10)]
    figures = {A: GatewayFigures(20, 2), B: GatewayFigures(3, 3), C: GatewayFigures(20, 18)}
    ranked = by_quality(gateways, lambda t: t.uri, figures, minimum=10)
    assert [t.uri for t in ranked] == [C, B, A]  # B (too few attempts) keeps its place
    tied = {A: GatewayFigures(10, 5), C: GatewayFigures(40, 20)}
    assert [t.uri for t in by_quality(gateways, lambda t: t.uri, tied, 10)] == [A, B, C]  # ties: as given
    split = [Target(uri=A, priority=10), Target(uri=B, priority=20), Target(uri=C, priority=20)]
    best_b = {A: GatewayFigures(10, 0), B: GatewayFigures(10, 1), C: GatewayFigures(10, 9)}
    assert [t.uri for t in by_quality(split, lambda t: t.uri, best_b, 10)] == [A, C, B]  # never across


def carrier(routing: CarrierRouting, *uris: str) -> Carrier:
    gateways = [{"uri": uri, "priority": 10, "weight": 0} for uri in uris]
    spec = {"gateways": gateways, "routing": routing.value}
    return Carrier.model_validate({"metadata": {"name": "pstn", "namespace": "ns"}, "spec": spec})


def test_outbound_targets_follow_quality_only_when_the_carrier_asks_for_it() -> None:
    figures = {("ns", "pstn"): {A: GatewayFigures(30, 0), B: GatewayFigures(30, 29)}}
    rng = random.Random(1)
    quality = carrier(CarrierRouting.QUALITY, A, B)
    assert [t.uri for t in outbound_targets("+1415", [quality], rng, quality=figures)] == [B, A]
    assert [t.uri for t in outbound_targets("+1415", [quality], rng)] == [A, B]  # nothing known yet
    priority = carrier(CarrierRouting.PRIORITY, A, B)
    assert priority.spec.routing is CarrierRouting.PRIORITY
    assert (
        Carrier.model_validate({"metadata": {"name": "x"}, "spec": {"gateways": [{"uri": A}]}}).spec.routing
        == "priority"
    )
    assert [t.uri for t in outbound_targets("+1415", [priority], rng, quality=figures)] == [A, B]
    down = {("ns", "pstn"): frozenset({B})}  # down gateways are still skipped
    assert [t.uri for t in outbound_targets("+1415", [quality], rng, down=down, quality=figures)] == [A]


class FailingStore(MemoryStore):
    async def count_per_minute(self, name: str, counts: object, ttl: float) -> None:  # type: ignore[override]
        raise StoreUnavailable("down")


async def test_the_recorder_never_waits_drops_when_too_much_is_pending_and_counts_drops() -> None:
    store = MemoryStore()
    held: list[Coroutine[object, object, None]] = []
    dropped: list[int] = []
    recorder = FigureRecorder(store, held.append, lambda: dropped.append(1), max_pending=2)
    pstn = carrier(CarrierRouting.QUALITY, A, B)
    ok = Response(200, "OK")
    for _ in range(3):
        recorder.attempt_ended(pstn, A, ok, 0.1)
    assert len(held) == 2 and len(dropped) == 1  # the third waited for nobody: dropped, counted
    recorder.attempt_ended(pstn, "sip:not-a-gateway", ok, 0.1)  # bounded: only configured gateways
    recorder.attempt_ended(pstn, A, Response(407, "Proxy Authentication Required"), None)  # a challenge
    assert len(held) == 2
    await asyncio.gather(*held)
    assert recorder.pending == 0
    found = window(await store.counts_per_minute(upkeep_key("figures", "ns", "pstn"), 1), 1, {A, B})
    assert found == {A: GatewayFigures(2, 2, 2, 200, (2, 0, 0, 0, 0, 0, 0, 0, 0))}

    failing = FigureRecorder(FailingStore(), lambda work: held.append(work), lambda: dropped.append(1))
    held.clear()
    failing.attempt_ended(pstn, B, None, None)
    await asyncio.gather(*held)
    assert len(dropped) == 2 and failing.pending == 0  # the store's failure is a dropped figure


async def test_busy_and_unknown_numbers_leave_a_gateway_s_figures_alone() -> None:
    """A tenant calling busy, declining or unknown numbers must not lower the gateway's ratio (and
    so reorder `routing: quality` for everyone): those answers are the callee's, not the gateway's."""
    store = MemoryStore()
    held: list[Coroutine[object, object, None]] = []
    recorder = FigureRecorder(store, held.append, lambda: None)
    pstn = carrier(CarrierRouting.QUALITY, A, B)
    callee_caused = ((486, "Busy Here"), (404, "Not Found"), (603, "Decline"), (484, "Address Incomplete"))
    for status, reason in callee_caused:
        recorder.attempt_ended(pstn, A, Response(status, reason), 0.2)
    assert held == []
    recorder.attempt_ended(pstn, A, Response(503, "Service Unavailable"), None)  # the gateway's failure
    recorder.attempt_ended(pstn, A, Response(200, "OK"), 0.2)
    await asyncio.gather(*held)
    found = window(await store.counts_per_minute(upkeep_key("figures", "ns", "pstn"), 1), 1, {A, B})
    assert found[A].attempts == 2 and found[A].seizures == 1


def test_dropped_figures_show_on_the_edges_metrics() -> None:
    registry = CollectorRegistry()
    metrics = EdgeMetrics(registry)
    recorder = FigureRecorder(
        FailingStore(), lambda work: work.close(), metrics.figure_dropped, max_pending=0
    )
    recorder.attempt_ended(carrier(CarrierRouting.PRIORITY, A), A, None, None)
    assert registry.get_sample_value("trunkline_gateway_figures_dropped_total") == 1.0
