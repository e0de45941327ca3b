"""A Trunk's status shows the calls and registrations the edges keep in Redis (issue 7: "active calls
and registered contacts", in `kubectl get trunks` too).

A real redis-server holds what edges write there (through `RedisStore`, as edge/b2bua.py and
edge/registrar.py do: channels under the trunk's name, bindings under `sip:<digest username>`); the
chart is installed with `redis.url` pointing at it, and the operator runs with the arguments the chart
gives it (`--redis`, `--counts-interval`). Tests run in file order and build on each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.redis_server import RedisProcess
from tests.support.wait import wait_for
from trunkline.core.state import Binding, aor_of, trunk_key
from trunkline.core.state_redis import RedisStore

from .cluster import ControlPlane
from .test_operator_lifecycle import EXAMPLES, RELEASE, Cluster, assert_clean_log, install, run_operator

T = TypeVar("T")
INTERVAL = 1  # operator.liveCounts.intervalSeconds: seconds between two reads of a trunk's counts


def in_redis(redis: RedisProcess, work: Callable[[RedisStore], Awaitable[T]]) -> T:
    """Do what an edge does, with the store the edges use (default key prefix included)."""

    async def run() -> T:
        store = RedisStore.from_url(redis.url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


async def take_channels(store: RedisStore, trunk: str, *calls: str) -> None:
    for call in calls:
        assert await store.acquire_channel(trunk, call, 10, ttl=600)


async def register(store: RedisStore) -> None:
    await store.put_binding(aor_of("acme"), Binding("sip:acme@127.0.0.2:5060", store.now() + 600))


def columns(k: Cluster, name: str) -> dict[str, str]:
    """`kubectl get trunk NAME` as the user reads it: printer column -> value."""
    header, row = k.cp.kubectl("get", "trunk", name, "-n", k.ns).stdout.splitlines()
    return dict(zip(header.split(), row.split(), strict=True))


def counts(k: Cluster, name: str = "acme") -> tuple[int, int] | None:
    status = (k.get("trunk", name) or {}).get("status", {})
    if "activeCalls" not in status:
        return None
    return (status["activeCalls"], status["registeredContacts"])


def wait_counts(k: Cluster, expected: tuple[int, int], timeout: float = 15) -> None:
    wait_for(lambda: counts(k) == expected, f"trunk acme counts {expected}", timeout=timeout)


@pytest.fixture(scope="module")
def operator_log(
    control_plane: ControlPlane, redis: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Path]]:
    cluster = install(
        control_plane, "operator.scope=namespace", f"operator.liveCounts.intervalSeconds={INTERVAL}",
        "operator.drainGracePeriodSeconds=300", f"redis.url={redis.url}",
    )  # fmt: skip
    with run_operator(cluster, tmp_path_factory.mktemp("operator")) as log:
        yield cluster, log


@pytest.fixture(scope="module")
def k(operator_log: tuple[Cluster, Path]) -> Cluster:
    return operator_log[0]


def test_trunk_shows_the_calls_and_contacts_in_redis(k: Cluster, redis: RedisProcess) -> None:
    notes = k.cp.helm("get", "notes", RELEASE, "-n", k.ns).stdout
    assert f"read from Redis every {INTERVAL} s" in notes
    in_redis(redis, lambda store: take_channels(store, trunk_key(k.ns, "acme"), "call-1", "call-2"))
    in_redis(redis, register)
    k.cp.kubectl("apply", "-n", k.ns, "-f", str(EXAMPLES))
    wait_counts(k, (2, 1))
    k.wait_condition("trunk", "acme", ("True", "Reconciled"))  # conditions and counts live side by side
    shown = columns(k, "acme")
    assert (shown["ACTIVE"], shown["REGISTERED"], shown["READY"]) == ("2", "1", "True")


def test_counts_follow_the_store(k: Cluster, redis: RedisProcess) -> None:
    in_redis(redis, lambda store: store.release_channel(trunk_key(k.ns, "acme"), "call-1"))
    wait_counts(k, (1, 1))
    assert columns(k, "acme")["ACTIVE"] == "1"


def test_redis_down_keeps_the_last_counts_and_the_operator_going(
    k: Cluster, redis: RedisProcess, operator_log: tuple[Cluster, Path]
) -> None:
    log = operator_log[1]
    redis.stop()
    wait_for(lambda: "live counts unavailable" in log.read_text(), "the operator to log the outage")
    time.sleep(3 * INTERVAL)  # rounds that find no Redis
    assert counts(k) == (1, 1)  # the last counts read, not zeros
    redis.start()  # same port, empty: no calls, no registrations
    wait_counts(k, (0, 0))
    assert "live counts available again" in log.read_text()


def test_a_deleted_trunk_drains_until_its_last_call_ends(k: Cluster, redis: RedisProcess) -> None:
    in_redis(redis, lambda store: take_channels(store, trunk_key(k.ns, "acme"), "call-3"))
    wait_counts(k, (1, 0))
    k.cp.kubectl("delete", "trunk", "acme", "-n", k.ns, "--wait=false")
    k.wait_condition("trunk", "acme", ("False", "Draining"))
    time.sleep(3 * INTERVAL)  # drain rounds (one per interval) that find the call still up
    trunk = k.get("trunk", "acme")
    assert trunk and "trunkline.io/drain" in trunk["metadata"]["finalizers"]
    in_redis(redis, lambda store: store.release_channel(trunk_key(k.ns, "acme"), "call-3"))
    wait_for(lambda: k.get("trunk", "acme") is None, "trunk acme to be gone once its call ended")


def test_operator_never_crashed(operator_log: tuple[Cluster, Path]) -> None:
    assert_clean_log(operator_log[1])
