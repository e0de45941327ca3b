"""Ports never leak: a ringing call's record names its relay session from the moment the session
exists, so when its edge is SIGKILLed the edge that adopts the call answers the caller 503 and
deletes the session on the relay (read back from the relay itself)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest

from tests.support import sipp
from tests.support.cdr_cluster import Cluster
from tests.support.media_relay import RelayProcess
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.wait import wait_for
from trunkline.media.v1 import media_pb2, media_pb2_grpc


def relay_has(relay: RelayProcess, session_id: str) -> bool:
    with grpc.insecure_channel(relay.target) as channel:
        stub = media_pb2_grpc.MediaRelayStub(channel)
        try:
            stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id=session_id), timeout=5)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True


def test_an_edge_killed_while_its_call_rings_leaves_no_relay_session(
    tmp_path: Path, redis: RedisProcess, carrier_port: int
) -> None:
    relay = RelayProcess(tmp_path / "relay").start()
    cluster = Cluster(tmp_path, redis, carrier_port, service=f"127.0.0.10:{free_port()}",
                      extra=["--media-relay", relay.target, "--insecure-grpc"])  # fmt: skip
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port, scenario="gateway_rings.xml")
    try:
        a = cluster.start("a")
        pbx = sipp.Background(lambda: sipp.uac_expect(tmp_path / "pbx", cluster.service or "", "127.0.0.2",
                                                      "+442071234567", 503))  # fmt: skip
        a.wait_busy(1, timeout=30)
        with cluster.redis_client() as client:
            (key,) = wait_for(lambda: client.keys("trunkline:call:*"), what="the ringing call's record")
            call_id = key.decode().removeprefix("trunkline:call:")
            # Admitted first, then written again once the relay took the offer: named while it rings.
            wait_for(lambda: b'"relay_session"' in (client.hget(key, "data") or b""),
                     what="the relay session in the ringing call's record")  # fmt: skip
        assert relay_has(relay, call_id)
        cluster.start("b")
        cluster.signal("a", signal.SIGKILL)
        result = pbx.result(timeout=60)
        assert result.ok, result.output + cluster.edges["b"].output()
        deadline = time.monotonic() + 30
        while relay_has(relay, call_id):
            if time.monotonic() > deadline:
                pytest.fail("the dead edge's relay session was never deleted:\n" + relay.output())
            time.sleep(0.2)
        wait_for(lambda: cluster.channels_in_use() == 0, what="the call's channel freed")
    finally:
        sipp.stop(gateway)
        cluster.stop()
        relay.stop()
