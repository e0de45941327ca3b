"""The StateStore contract, held by both stores: in memory, and a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisProcess, start_redis
from trunkline.core.state import (
    MAX_MINUTES,
    SPOOLED_END_EPOCH,
    Admission,
    Binding,
    CallEnd,
    MemoryStore,
    StateStore,
    StoreUnavailable,
    aor_of,
    upkeep_key,
)
from trunkline.core.state_redis import RedisStore


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = start_redis(tmp_path_factory.mktemp("redis"))
    yield proc
    proc.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_proc: RedisProcess) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    redis_store = RedisStore.from_url(redis_proc.url, prefix=f"test:{request.node.name}:")
    yield redis_store
    await redis_store.close()


async def test_channels_are_capped_released_and_expire(store: StateStore) -> None:
    assert await store.acquire_channel("acme", "c1", 2, ttl=5)
    assert await store.acquire_channel("acme", "c2", 2, ttl=0.3)
    assert not await store.acquire_channel("acme", "c3", 2, ttl=5)
    assert await store.acquire_channel("acme", "c1", 2, ttl=5)  # the same call is not a second channel
    assert await store.channels_in_use("acme") == 2
    await store.release_channel("acme", "c1")
    assert await store.channels_in_use("acme") == 1
    await asyncio.sleep(0.4)  # c2's owner vanished without releasing: its record lapses
    assert await store.channels_in_use("acme") == 0
    assert await store.acquire_channel("acme", "c4", 1, ttl=0.3)
    await asyncio.sleep(0.2)
    await store.refresh_channel("acme", "c4", ttl=5)
    await asyncio.sleep(0.2)
    assert await store.channels_in_use("acme") == 1  # refreshed past its first TTL
    assert await store.acquire_channel("unlimited", "x", None, ttl=5)


async def test_concurrent_acquires_never_exceed_the_cap(store: StateStore) -> None:
    results = await asyncio.gather(*(store.acquire_channel("busy", f"c{i}", 10, ttl=5) for i in range(50)))
    assert sum(results) == 10
    assert await store.channels_in_use("busy") == 10


async def test_call_rate(store: StateStore) -> None:
    admitted = [await store.take_call_slot("acme", 5) for _ in range(8)]
    assert admitted.count(True) == 5
    await asyncio.sleep(0.45)  # about two more tokens at 5/s
    later = [await store.take_call_slot("acme", 5) for _ in range(4)]
    assert 1 <= later.count(True) <= 3
    assert await store.take_call_slot("acme", None)


async def test_replay_keys_and_auth_failures(store: StateStore) -> None:
    assert await store.first_use("n1:00000001", ttl=0.3)
    assert not await store.first_use("n1:00000001", ttl=0.3)
    assert await store.first_use("n1:00000002", ttl=0.3)
    await asyncio.sleep(0.4)
    assert await store.first_use("n1:00000001", ttl=0.3)
    assert [await store.note_auth_failure("203.0.113.9", 60) for _ in range(3)] == [1, 2, 3]
    assert await store.auth_failures("203.0.113.9", 60) == 3
    assert await store.note_auth_failure("auth-user|alice", 60) == 1
    assert await store.auth_failures_of(["203.0.113.9", "auth-user|alice", "nobody"], 60) == [3, 1, 0]
    assert await store.auth_failures_of([], 60) == []
    await store.clear_auth_failures("203.0.113.9")
    assert await store.auth_failures("203.0.113.9", 60) == 0
    assert await store.auth_failures_of(["203.0.113.9", "auth-user|alice"], 60) == [0, 1]


async def test_bindings_and_dialogs(store: StateStore) -> None:
    now = store.now()
    await store.put_binding(
        "sip:acme@edge", Binding("sip:acme@127.0.0.2:5060", now + 60, "udp:127.0.0.2:5060")
    )
    await store.put_binding("sip:acme@edge", Binding("sip:acme@127.0.0.2:5062", now + 0.3))
    assert [b.contact for b in await store.bindings("sip:acme@edge")] == [
        "sip:acme@127.0.0.2:5060", "sip:acme@127.0.0.2:5062"]  # fmt: skip
    await asyncio.sleep(0.4)
    [left] = await store.bindings("sip:acme@edge")
    assert left.contact == "sip:acme@127.0.0.2:5060" and left.source == "udp:127.0.0.2:5060"
    await store.remove_binding("sip:acme@edge", left.contact)
    assert await store.bindings("sip:acme@edge") == []


async def test_registered_contacts_counts_the_live_bindings_of_one_aor(store: StateStore) -> None:
    aor = aor_of("acme")  # as the registrar stores them and the operator counts them
    assert await store.registered_contacts(aor) == 0
    now = store.now()
    await store.put_binding(aor, Binding("sip:acme@127.0.0.2:5060", now + 60))
    await store.put_binding(aor, Binding("sip:acme@127.0.0.3:5060", now + 0.3))
    await store.put_binding(aor_of("other"), Binding("sip:other@127.0.0.4:5060", now + 60))
    assert await store.registered_contacts(aor) == 2
    await asyncio.sleep(0.4)
    assert await store.registered_contacts(aor) == 1  # lapsed, though Redis keeps the hash until the last
    await store.remove_binding(aor, "sip:acme@127.0.0.2:5060")
    assert await store.registered_contacts(aor) == 0
    assert await store.registered_contacts(aor_of("other")) == 1


async def test_a_call_is_admitted_found_by_its_dialogs_and_ended(store: StateStore) -> None:
    record = {"trunk": "acme", "cseq": 3}
    assert await store.admit("acme", "c1", 1, None, "edge-a", record, ttl=5) is Admission.ADMITTED
    assert await store.admit("acme", "c2", 1, None, "edge-a", record, ttl=5) is Admission.NO_CHANNEL
    assert await store.admit("slow", "c3", None, 1, "edge-a", record, ttl=5) is Admission.ADMITTED
    assert await store.admit("slow", "c4", None, 1, "edge-a", record, ttl=5) is Admission.OVER_RATE
    # The same Call-ID again (from any edge), while the call lives: refused before counting anything.
    assert await store.admit("acme", "c1", None, None, "edge-b", record, ttl=5) is Admission.DUPLICATE
    assert await store.adopt_call("c1|ours|theirs", "edge-b") is None  # no dialog yet: still ringing

    answered = {**record, "answered": True}
    await store.save_call("acme", "c1", "edge-a", answered, ["c1|ours|theirs", "b1|b-ours|b-theirs"], ttl=5)
    assert await store.adopt_call("b1|b-ours|b-theirs", "edge-b") == {**answered, "epoch": 1}  # handed over
    assert await store.channels_in_use("acme") == 1
    await store.end_call("acme", "c1", "edge-b", ["c1|ours|theirs", "b1|b-ours|b-theirs"])
    assert await store.adopt_call("c1|ours|theirs", "edge-b") is None
    assert await store.channels_in_use("acme") == 0


async def test_a_saved_call_and_its_channel_lapse_together(store: StateStore) -> None:
    assert await store.admit("acme", "c1", 5, None, "edge-a", {}, ttl=30) is Admission.ADMITTED
    await store.save_call("acme", "c1", "edge-a", {"n": 1}, ["c1|a|b"], ttl=0.3)  # a short session
    assert await store.channels_in_use("acme") == 1
    await asyncio.sleep(0.4)
    assert await store.channels_in_use("acme") == 0
    assert await store.adopt_call("c1|a|b", "edge-b") is None


async def test_the_calls_of_a_silent_edge_go_to_exactly_one_other(store: StateStore) -> None:
    assert await store.keep_alive("edge-a", ttl=0.3) == []
    assert (
        await store.admit("acme", "ringing", None, None, "edge-a", {"n": "ringing"}, 30) is Admission.ADMITTED
    )
    await store.save_call("acme", "answered", "edge-a", {"n": "answered"}, ["x|y|z"], ttl=30)
    assert await store.keep_alive("edge-b", ttl=5) == []  # edge-a still lives
    await asyncio.sleep(0.4)
    first, second = await asyncio.gather(store.keep_alive("edge-b", ttl=5), store.keep_alive("edge-c", ttl=5))
    assert sorted(r["n"] for r in first + second) == ["answered", "ringing"]
    assert not (first and second)
    assert await store.keep_alive("edge-b", ttl=5) == []  # handed over once


async def test_a_dead_redis_is_a_bounded_error_not_a_hang(tmp_path: Path) -> None:
    proc = start_redis(tmp_path)
    store = RedisStore.from_url(proc.url, timeout=0.2)
    assert await store.acquire_channel("acme", "c1", 1, ttl=5)
    proc.stop(kill=True)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(StoreUnavailable):
        await store.acquire_channel("acme", "c2", 1, ttl=5)
    assert loop.time() - began < 1.0
    with pytest.raises(StoreUnavailable):  # what the operator reads, too
        await store.registered_contacts(aor_of("acme"))
    assert not await store.ping()
    await store.close()


async def test_a_stalled_redis_times_out(tmp_path: Path) -> None:
    proc = start_redis(tmp_path)
    store = RedisStore.from_url(proc.url, timeout=0.2)
    assert await store.ping()
    assert proc.proc is not None
    proc.proc.send_signal(19)  # SIGSTOP: the socket stays open, nothing answers
    try:
        began = asyncio.get_running_loop().time()
        with pytest.raises(StoreUnavailable):
            await store.take_call_slot("acme", 10)
        assert asyncio.get_running_loop().time() - began < 1.0
    finally:
        proc.proc.send_signal(18)  # SIGCONT
    assert await store.take_call_slot("acme", 10)  # recovers once Redis answers again
    await store.close()
    proc.stop()


async def _cdrs(store: StateStore) -> list[str]:
    if isinstance(store, MemoryStore):
        return list(store.cdr_stream)
    assert isinstance(store, RedisStore)
    entries = await store.redis.xrange(store.cdr_stream)
    return [fields[b"cdr"].decode() for _, fields in entries]


async def test_twenty_concurrent_enders_write_one_cdr(store: StateStore) -> None:
    assert await store.admit("acme", "c1", 5, None, "edge-a", {"n": 1}, ttl=30) is Admission.ADMITTED
    await store.save_call("acme", "c1", "edge-a", {"n": 1}, ["d1"], ttl=30)
    assert await store.channels_in_use("acme") == 1
    verdicts = await asyncio.gather(
        *(
            store.end_call_with_cdr("c1", 0, f'{{"ender":{i}}}', trunk="acme", dialogs=["d1"])
            for i in range(20)
        )
    )
    assert verdicts.count(CallEnd.ENDED) == 1
    assert verdicts.count(CallEnd.ALREADY_ENDED) == 19
    winner = verdicts.index(CallEnd.ENDED)
    assert await _cdrs(store) == [f'{{"ender":{winner}}}']
    assert await store.channels_in_use("acme") == 0  # the end freed the channel in the same step
    assert await store.adopt_call("d1", "edge-b") is None  # and forgot the call and its dialogs
    assert await store.call_epoch("c1") is None
    # A later end (a retried BYE, another edge) is refused: still one record.
    assert await store.end_call_with_cdr("c1", 5, '{"late":1}', trunk="acme") is CallEnd.ALREADY_ENDED
    assert len(await _cdrs(store)) == 1


async def test_a_stale_epoch_stands_down(store: StateStore) -> None:
    assert await store.call_epoch("c2") is None
    assert await store.bump_epoch("c2") is None  # no record: nothing to fence
    assert await store.admit("acme", "c2", None, None, "edge-a", {"n": 2}, ttl=30) is Admission.ADMITTED
    assert await store.call_epoch("c2") == 0
    assert await store.bump_epoch("c2") == 1  # edge B takes the call over
    await store.save_call("acme", "c2", "edge-b", {"n": 2}, ["d2"], ttl=30)
    assert await store.call_epoch("c2") == 1  # a save keeps the epoch
    assert await store.end_call_with_cdr("c2", 0, '{"by":"a"}', trunk="acme") is CallEnd.LOST
    assert await _cdrs(store) == []
    assert await store.channels_in_use("acme") == 1  # the loser touched nothing
    assert await store.end_call_with_cdr("c2", 1, '{"by":"b"}', trunk="acme") is CallEnd.ENDED
    assert await _cdrs(store) == ['{"by":"b"}']
    assert await store.channels_in_use("acme") == 0


async def test_a_call_whose_record_expired_still_gets_its_one_cdr(store: StateStore) -> None:
    assert await store.admit("acme", "c3", None, None, "edge-a", {}, ttl=1.0) is Admission.ADMITTED
    assert await store.call_epoch("c3") == 0
    deadline = asyncio.get_running_loop().time() + 30
    while await store.call_epoch("c3") is not None:  # its owner never refreshed it: it lapses
        assert asyncio.get_running_loop().time() < deadline, "the call's record never expired"
        await asyncio.sleep(0.2)
    assert await store.end_call_with_cdr("c3", 0, '{"n":3}') is CallEnd.ENDED
    assert await store.end_call_with_cdr("c3", 0, '{"n":3}') is CallEnd.ALREADY_ENDED
    assert await _cdrs(store) == ['{"n":3}']


async def test_a_save_is_fenced_by_the_epoch_and_the_end(store: StateStore) -> None:
    assert await store.admit("acme", "c4", None, None, "edge-a", {"n": 4}, ttl=30) is Admission.ADMITTED
    assert await store.save_call("acme", "c4", "edge-a", {"n": 4}, ["d4"], ttl=30, epoch=0)
    handed = await store.adopt_call("d4", "edge-b")  # edge B gets a request of the call: handover
    assert handed == {"n": 4, "epoch": 1}
    assert not await store.save_call("acme", "c4", "edge-a", {"n": "stale"}, ["d4"], ttl=30, epoch=0)
    assert await store.save_call("acme", "c4", "edge-b", {"n": "new"}, ["d4"], ttl=30, epoch=1)
    assert await store.adopt_call("d4", "edge-a") == {"n": "new", "epoch": 2}  # and back again
    assert await store.end_call_with_cdr("c4", 2, '{"by":"a"}', trunk="acme", dialogs=["d4"]) is CallEnd.ENDED
    # A holder that did not hear of the end writes nothing back: the call stays ended.
    assert not await store.save_call("acme", "c4", "edge-b", {"n": "late"}, ["d4"], ttl=30, epoch=5)
    assert await store.adopt_call("d4", "edge-b") is None and await store.channels_in_use("acme") == 0


async def test_the_calls_of_an_edge_go_on_with_a_new_epoch(store: StateStore) -> None:
    assert await store.keep_alive("edge-a", ttl=0.5) == []
    await store.save_call("acme", "c5", "edge-a", {"n": 5}, ["d5"], ttl=30)
    deadline = asyncio.get_running_loop().time() + 10
    adopted: list[dict[str, object]] = []
    while not adopted and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)  # edge-b keeps alive more often than half edge-a's TTL
        adopted = await store.keep_alive("edge-b", ttl=0.5)
    assert adopted == [{"n": 5, "epoch": 1}]
    assert await store.call_epoch("c5") == 1


async def test_a_restarted_process_takes_its_predecessors_calls_at_once(store: StateStore) -> None:
    """A container restart keeps the pod's name: the new process (`pod-a/2`) names its predecessors
    (`pod-a/`) at its keep-alive and gets their calls at once, though their keep-alive has not lapsed;
    another pod's calls (`pod-ab/1`, a name that merely starts alike) stay where they are."""
    for owner in ("pod-a/1", "pod-ab/1", "pod-b/1"):
        assert await store.keep_alive(owner, ttl=60) == []
    await store.save_call("acme", "c7", "pod-a/1", {"n": 7}, ["d7"], ttl=60)
    await store.save_call("acme", "c8", "pod-ab/1", {"n": 8}, ["d8"], ttl=60)
    assert await store.keep_alive("pod-a/2", ttl=60, predecessors="pod-a/") == [{"n": 7, "epoch": 1}]
    assert await store.keep_alive("pod-a/2", ttl=60, predecessors="pod-a/") == []  # its own not claimed
    assert await store.keep_alive("pod-b/1", ttl=60) == []  # nothing else lapsed
    assert await store.call_epoch("c8") == 0
    assert await store.adopt_call("d7", "pod-a/2") == {"n": 7, "epoch": 2}  # held by the new process


async def test_a_spooled_end_ends_a_call_another_edge_took_over(store: StateStore) -> None:
    """An end replayed from a spool (the call ended on the SIP side) wins over the holder that took
    the record over since; a second replay of it writes no second CDR."""
    await store.save_call("acme", "c9", "edge-a", {"n": 9}, ["d9"], ttl=60)
    assert await store.adopt_call("d9", "edge-b") is not None  # epoch 1: edge-a's end would be LOST
    assert await store.end_call_with_cdr("c9", 0, '{"id": 9}', trunk="acme") is CallEnd.LOST
    replayed = await store.end_call_with_cdr(
        "c9", SPOOLED_END_EPOCH, '{"id": 9}', trunk="acme", dialogs=["d9"]
    )
    assert replayed is CallEnd.ENDED
    again = await store.end_call_with_cdr("c9", SPOOLED_END_EPOCH, '{"id": 9}', trunk="acme")
    assert again is CallEnd.ALREADY_ENDED
    assert await store.call_epoch("c9") is None  # edge-b's next fenced step finds it ended


async def test_no_owner_lapses_while_no_keep_alive_got_through(redis_proc: RedisProcess) -> None:
    """Nobody reached the store for longer than the owners' TTL (a Redis stall, a network cut): that
    is not every edge dying, so the first edge back adopts nothing; a real lapse afterwards still counts."""
    store = RedisStore.from_url(redis_proc.url, prefix="test:stall:")
    try:
        assert await store.keep_alive("edge-a", ttl=1.0) == []
        assert await store.keep_alive("edge-b", ttl=1.0) == []
        await store.save_call("acme", "c6", "edge-a", {"n": 6}, ["d6"], ttl=60)
        await asyncio.sleep(1.5)  # no keep-alive at all for 1.5 TTL
        assert await store.keep_alive("edge-b", ttl=1.0) == []
        deadline = asyncio.get_running_loop().time() + 10
        adopted: list[dict[str, object]] = []
        while not adopted and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)  # edge-b goes on, edge-a stays silent: now it lapses
            adopted = await store.keep_alive("edge-b", ttl=1.0)
        assert adopted == [{"n": 6, "epoch": 1}]
    finally:
        await store.close()


async def test_a_lease_has_one_holder_until_it_lapses_or_is_released(store: StateStore) -> None:
    name = upkeep_key("registration", "default", "pstn")
    assert await store.hold_lease(name, "edge-a", ttl=0.5)
    assert not await store.hold_lease(name, "edge-b", ttl=5)
    assert await store.hold_lease(name, "edge-a", ttl=0.5)  # renewed by its holder
    await store.release_lease(name, "edge-b")  # not b's to release
    assert not await store.hold_lease(name, "edge-b", ttl=5)
    await asyncio.sleep(0.7)  # a's holder vanished: the lease lapses
    assert await store.hold_lease(name, "edge-b", ttl=5)
    assert not await store.hold_lease(name, "edge-a", ttl=5)
    await store.release_lease(name, "edge-b")
    assert await store.hold_lease(name, "edge-a", ttl=5)
    holders = await asyncio.gather(*(store.hold_lease("contended", f"e{i}", ttl=5) for i in range(20)))
    assert holders.count(True) == 1


async def test_upkeep_state_is_shared_and_lapses(store: StateStore) -> None:
    name = upkeep_key("health", "default", "pstn")
    assert await store.upkeep(name) is None
    await store.put_upkeep(name, {"registered": True, "cseq": 7}, ttl=0.5)
    assert await store.upkeep(name) == {"registered": True, "cseq": 7}
    await asyncio.sleep(0.7)
    assert await store.upkeep(name) is None


async def test_calls_failed_in_a_row_are_counted_per_gateway_and_reset(store: StateStore) -> None:
    name = upkeep_key("calls", "default", "pstn")
    assert await store.call_failures(name) == {}
    assert await store.count_call_failure(name, "sip:a", True, ttl=0.5) == 1
    assert await store.count_call_failure(name, "sip:a", True, ttl=0.5) == 2
    assert await store.count_call_failure(name, "sip:b", True, ttl=0.5) == 1
    assert await store.call_failures(name) == {"sip:a": 2, "sip:b": 1}
    assert await store.count_call_failure(name, "sip:a", False, ttl=0.5) == 0
    assert await store.call_failures(name) == {"sip:b": 1}
    await asyncio.sleep(0.7)
    assert await store.call_failures(name) == {}


def _summed(buckets: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for bucket in buckets:
        for key, count in bucket.items():
            total[key] = total.get(key, 0) + count
    return total


async def test_counts_per_minute_add_up_in_the_current_minute_and_expire(store: StateStore) -> None:
    name = upkeep_key("figures", "default", "pstn")
    assert await store.counts_per_minute(name, 5) == [{}] * 5
    await store.count_per_minute(name, {"sip:a a": 1, "sip:a s": 1, "sip:a d": 180}, ttl=1)
    await store.count_per_minute(name, {"sip:a a": 1, "sip:b a": 1}, ttl=1)
    found = await store.counts_per_minute(name, 5)
    assert len(found) == 5
    assert sum(1 for bucket in found if bucket) <= 2  # a minute may have turned between the writes
    assert _summed(found) == {"sip:a a": 2, "sip:a s": 1, "sip:a d": 180, "sip:b a": 1}
    assert len(await store.counts_per_minute(name, 10_000)) == MAX_MINUTES  # bounded reads
    assert await store.counts_per_minute(name, 0) == []
    await asyncio.sleep(1.6)
    assert _summed(await store.counts_per_minute(name, 5)) == {}
