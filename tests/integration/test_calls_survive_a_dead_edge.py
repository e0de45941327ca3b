"""Two `trunkline edge` processes share Redis and one address (SO_REUSEPORT, what a Kubernetes Service
gives pods); one is killed with SIGKILL, and the other carries its calls on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up, manifests
from trunkline.core.state_redis import RedisStore

SERVICE_IP = "127.0.0.10"


class Pair:
    """Edge A, then edge B on the same service address; A is the one that dies."""

    def __init__(self, tmp_path: Path, redis: RedisProcess, carrier_port: int) -> None:
        self.service = f"{SERVICE_IP}:{free_port()}"
        secret = tmp_path / "nonce-secret"
        secret.write_text("the same for every edge")
        self.text = manifests(carrier_port, free_port())
        self.tmp_path, self.redis = tmp_path, redis
        self.flags = [
            "--redis",
            redis.url,
            "--nonce-secret-file",
            str(secret),
            "--service-listen",
            self.service,
        ]
        self.a = Up(tmp_path / "a", self.text, [*self.flags, "--edge-id", "edge-a"], command="edge").start()
        self.b: Up | None = None

    def start_b(self) -> Up:
        self.b = Up(
            self.tmp_path / "b", self.text, [*self.flags, "--edge-id", "edge-b"], command="edge"
        ).start()
        return self.b

    def kill_a(self) -> None:
        assert self.a.proc is not None
        self.a.proc.kill()
        self.a.proc.wait()

    def stop(self) -> None:
        for edge in (self.a, self.b):
            if edge is not None:
                edge.stop()

    def channels_in_use(self) -> int:
        async def count() -> int:
            store = RedisStore.from_url(self.redis.url)
            try:
                return await store.channels_in_use("default/acme")
            finally:
                await store.close()

        return asyncio.run(count())


@pytest.fixture
def pair(tmp_path: Path, redis: RedisProcess, carrier_port: int) -> Iterator[Pair]:
    edges = Pair(tmp_path, redis, carrier_port)
    yield edges
    edges.stop()


def test_established_calls_go_on_through_the_other_edge(
    pair: Pair, tmp_path: Path, carrier_port: int
) -> None:
    # Each call: answered through A; A dies; then a re-INVITE that refreshes the session and an INFO
    # from the PBX, and a BYE from the carrier, all of which only B can take.
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port, scenario="gateway_midcall.xml")
    calls = 3
    try:
        pbx = sipp.Background(lambda: sipp.uac(
            tmp_path / "pbx", pair.service, "127.0.0.2", "+442071234567", "-l", str(calls),
            scenario="pbx_midcall.xml", calls=calls, hold_ms=6000))  # fmt: skip
        pair.a.wait_busy(calls)
        b = pair.start_b()
        pair.kill_a()
        result = pbx.result(timeout=60)
        cdrs = b.wait_cdrs(calls, timeout=10)
    finally:
        gateway_out = sipp.stop(gateway)
    assert result.ok, result.output + gateway_out + b.output()
    assert sipp.received(gateway_out, "INFO") == calls, gateway_out  # relayed by B, after the re-INVITE
    assert len(cdrs) == calls and all(c["hung_up"] == "callee" and c["status"] == 200 for c in cdrs), cdrs
    assert all(c["answer"] and c["attempts"] for c in cdrs)  # complete: A's part of the record is kept
    assert b.output().count("call adopted") == calls
    assert pair.channels_in_use() == 0


def test_a_call_ringing_when_its_edge_dies_gets_a_final_answer(
    pair: Pair, tmp_path: Path, carrier_port: int
) -> None:
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port, scenario="gateway_rings.xml")
    try:
        pbx = sipp.Background(
            lambda: sipp.uac_expect(tmp_path / "pbx", pair.service, "127.0.0.2", "+442071234567", 503)
        )
        pair.a.wait_busy(1)
        b = pair.start_b()
        pair.kill_a()
        result = pbx.result(timeout=60)
        cdrs = b.wait_cdrs(1, timeout=10)
    finally:
        sipp.stop(gateway)
    assert result.ok, result.output + b.output()
    [cdr] = cdrs
    assert cdr["status"] == 503 and cdr["hung_up"] == "edge" and cdr["reason"] == "edge lost while ringing"
    assert pair.channels_in_use() == 0
