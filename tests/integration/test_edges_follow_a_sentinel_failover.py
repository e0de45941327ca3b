"""Redis under Sentinel: the primary dies mid-call, Sentinel promotes the replica, and the edge follows
it: the established call still ends cleanly (its channel is freed on the new primary) and new calls
are admitted there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import asyncio as aioredis

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess, start_redis
from tests.support.trunkline_up import Up, manifests
from trunkline.core.state_redis import RedisStore


class Cluster:
    """A primary, a replica and one Sentinel (quorum 1) on loopback ports."""

    def __init__(self, workdir: Path) -> None:
        self.primary = start_redis(workdir / "primary")
        self.replica = start_redis(workdir / "replica", f"replicaof 127.0.0.1 {self.primary.port}")
        self.sentinel = RedisProcess(free_port(), workdir / "sentinel", sentinel=True, extra=[
            f"sentinel monitor main 127.0.0.1 {self.primary.port} 1",
            "sentinel down-after-milliseconds main 1000",
            "sentinel failover-timeout main 5000",
        ]).start()  # fmt: skip

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.sentinel.port}/main"

    def primary_port(self) -> int:
        async def ask() -> int:
            client = aioredis.Redis(port=self.sentinel.port)
            try:
                _, port = await client.execute_command("SENTINEL", "get-master-addr-by-name", "main")
                return int(port)
            finally:
                await client.aclose()

        return asyncio.run(ask())

    def channels_in_use(self, port: int) -> int:
        async def count() -> int:
            store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
            try:
                return await store.channels_in_use("default/acme")
            finally:
                await store.close()

        return asyncio.run(count())

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica, self.primary):
            proc.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    redis = Cluster(tmp_path / "redis")
    yield redis
    redis.stop()


def test_an_established_call_ends_cleanly_after_sentinel_promotes_the_replica(
    cluster: Cluster, tmp_path: Path
) -> None:
    carrier_port = free_port()
    edge = Up(
        tmp_path / "edge", manifests(carrier_port, free_port()), ["--redis", cluster.url], command="edge"
    )
    edge.start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    try:
        held = sipp.Background(
            lambda: sipp.uac(tmp_path / "held", edge.sip, "127.0.0.2", "+442071234567", hold_ms=12000)
        )
        edge.wait_busy(1)
        deadline = time.monotonic() + 5
        while cluster.channels_in_use(cluster.replica.port) != 1:  # replicated before the primary dies
            assert time.monotonic() < deadline, "the replica never got the call's channel"
            time.sleep(0.1)
        cluster.primary.stop(kill=True)
        deadline = time.monotonic() + 20
        while cluster.primary_port() != cluster.replica.port:
            assert time.monotonic() < deadline, "Sentinel never promoted the replica"
            time.sleep(0.2)
        outcome = held.result(timeout=30)
        after = sipp.uac(tmp_path / "after", edge.sip, "127.0.0.2", "+442071234567")
        cdrs = edge.wait_cdrs(2)
    finally:
        sipp.stop(gateway)
        edge.stop()
    assert outcome.ok, outcome.output + edge.output()
    assert after.ok, after.output + edge.output()
    assert [(c["status"], c["hung_up"]) for c in cdrs] == [(200, "caller")] * 2, cdrs
    assert cluster.channels_in_use(cluster.replica.port) == 0  # both calls' channels freed on the new primary
    assert "could not release channel" not in edge.output()
