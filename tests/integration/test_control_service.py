"""The Control service over gRPC (port 0): relay directory, config watch, health; the relay's
registration loop and the config mirror against it."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trunkline.control.client import ConfigMirror
from trunkline.control.server import ControlServer
from trunkline.control.v1 import control_pb2, control_pb2_grpc
from trunkline.core.models import DID, Trunk
from trunkline.media.server import MediaServer
from trunkline.media.v1 import media_pb2, media_pb2_grpc

pytestmark = pytest.mark.integration


def trunk(name: str, channels: int | None = None) -> Trunk:
    return Trunk.model_validate({"metadata": {"name": name}, "spec": {"channels": channels}})


def did(name: str, number: str, trunk_name: str) -> DID:
    return DID.model_validate(
        {"metadata": {"name": name}, "spec": {"number": number, "trunkRef": trunk_name}}
    )


@pytest.fixture
async def control():
    server = ControlServer("127.0.0.1:0", heartbeat_interval=0.1, heartbeat_timeout=0.5)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield server, control_pb2_grpc.ControlStub(channel), channel
    await server.stop(0)


def load(capacity: int, active: int, draining: bool = False) -> control_pb2.RelayLoad:
    return control_pb2.RelayLoad(capacity=capacity, active_sessions=active, draining=draining)


async def register(stub, relay_id: str, capacity: int, active: int, draining: bool = False) -> None:
    relay_load = load(capacity, active, draining)
    await stub.Register(
        control_pb2.RegisterRequest(
            relay_id=relay_id, grpc_address=f"{relay_id}:7100", media_address="10.0.0.1", load=relay_load
        )
    )


async def test_health_reports_serving(control):
    _, _, channel = control
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "trunkline.control.v1.Control"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_pick_relay_least_loaded_and_skips_unhealthy(control):
    _server, stub, _ = control
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PickRelay(control_pb2.PickRelayRequest())
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    await register(stub, "busy", 100, 90)
    await register(stub, "idle-but-silent", 100, 0)
    await register(stub, "draining", 100, 0, draining=True)
    await register(stub, "full", 10, 10)
    await asyncio.sleep(0.3)
    await register(stub, "light", 1000, 100)  # 10% used: the least loaded share
    await stub.Heartbeat(control_pb2.HeartbeatRequest(relay_id="busy", load=load(100, 90)))
    await asyncio.sleep(0.3)  # idle-but-silent: 0.6 s without heartbeat > timeout 0.5 s
    picked = await stub.PickRelay(control_pb2.PickRelayRequest())
    assert (
        picked.relay_id == "light"
        and picked.grpc_address == "light:7100"
        and picked.media_address == "10.0.0.1"
    )
    picked = await stub.PickRelay(control_pb2.PickRelayRequest(exclude_relay_ids=["light"]))
    assert picked.relay_id == "busy"
    # A heartbeat brings the silent one back, and it is the least loaded.
    answer = await stub.Heartbeat(control_pb2.HeartbeatRequest(relay_id="idle-but-silent", load=load(100, 0)))
    assert answer.known
    assert (await stub.PickRelay(control_pb2.PickRelayRequest())).relay_id == "idle-but-silent"


async def test_heartbeat_from_unknown_relay_asks_to_register(control):
    _, stub, _ = control
    answer = await stub.Heartbeat(control_pb2.HeartbeatRequest(relay_id="stranger", load=load(1, 0)))
    assert not answer.known
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Register(control_pb2.RegisterRequest(relay_id=""))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_watch_config_snapshot_then_changes(control):
    server, stub, _ = control
    server.store.upsert(trunk("acme"))
    server.store.upsert(did("main", "+14155550100", "acme"))
    stream = stub.WatchConfig(control_pb2.WatchConfigRequest())
    first = await stream.read()
    assert first.HasField("snapshot") and first.revision == 2
    names = {(r.kind, r.name): r for r in first.snapshot.resources}
    assert set(names) == {("Trunk", "acme"), ("DID", "main")}
    assert Trunk.model_validate_json(names[("Trunk", "acme")].json) == trunk("acme")
    assert names[("Trunk", "acme")].generation == 1

    server.store.upsert(trunk("acme", channels=5))
    server.store.upsert(trunk("acme", channels=5))  # unchanged: no event
    server.store.delete("DID", "default", "main")
    change = await stream.read()
    assert change.revision == 3 and change.change.type == control_pb2.Change.UPSERT
    assert json.loads(change.change.resource.json)["spec"]["channels"] == 5
    assert change.change.resource.generation == 2
    change = await stream.read()
    assert change.revision == 4 and change.change.type == control_pb2.Change.DELETE
    assert (change.change.resource.kind, change.change.resource.name) == ("DID", "main")
    stream.cancel()


async def test_watch_config_rejects_unknown_kind(control):
    _, stub, _ = control
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.WatchConfig(control_pb2.WatchConfigRequest(kinds=["Pod"])).read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_config_mirror_applies_changes_without_restart(control):
    server, _, _ = control
    server.store.upsert(trunk("acme"))
    seen: list[int] = []
    mirror = ConfigMirror(f"127.0.0.1:{server.port}", on_change=lambda items: seen.append(len(items)))
    task = asyncio.create_task(mirror.run())
    try:
        await asyncio.wait_for(mirror.ready.wait(), 5)
        assert list(mirror.config_set().trunks) == [("default", "acme")]
        server.store.upsert(did("main", "+14155550100", "acme"))
        server.store.upsert(trunk("beta"))
        server.store.delete("Trunk", "default", "acme")
        for _ in range(50):
            if mirror.revision == server.store.revision:
                break
            await asyncio.sleep(0.02)
        config = mirror.config_set()
        assert list(config.trunks) == [("default", "beta")] and list(config.dids) == [("default", "main")]
        assert seen == [1, 2, 3, 2]
    finally:
        task.cancel()


async def test_relay_registers_heartbeats_and_reports_drain(control):
    server, stub, _ = control
    relay = MediaServer(
        "127.0.0.1:0",
        "127.0.0.1",
        (42000, 42099),
        workers=0,
        control=f"127.0.0.1:{server.port}",
        relay_id="r1",
    )
    await relay.start()
    try:
        assert relay.registration is not None
        await asyncio.wait_for(relay.registration.registered.wait(), 5)
        picked = await stub.PickRelay(control_pb2.PickRelayRequest())
        assert picked.relay_id == "r1" and picked.grpc_address == f"127.0.0.1:{relay.port}"
        assert picked.load.capacity == 25
        async with grpc.aio.insecure_channel(picked.grpc_address) as channel:
            await media_pb2_grpc.MediaRelayStub(channel).Drain(media_pb2.DrainRequest())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.PickRelay(control_pb2.PickRelayRequest())  # draining: not picked any more
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await relay.stop(0)
