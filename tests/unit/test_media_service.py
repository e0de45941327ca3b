"""The MediaRelay gRPC service on port 0: errors, update, drain, health."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trunkline.media import rtp
from trunkline.media.testing import HOST, Party, leg, relay
from trunkline.media.v1 import media_pb2


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def test_create_update_delete_and_errors():
    a, b = Party(), Party()
    async with relay() as (_, stub):
        created = await stub.CreateSession(
            media_pb2.CreateSessionRequest(session_id="s1", leg_a=leg(a), leg_b=leg(None))
        )
        duplicate = stub.CreateSession(
            media_pb2.CreateSessionRequest(session_id="s1", leg_a=leg(a), leg_b=leg(b))
        )
        assert await code_of(duplicate) == grpc.StatusCode.ALREADY_EXISTS
        # The answer arrives: B's address is known now, and B becomes SRTP; ports stay.
        crypto = media_pb2.Crypto(suite=rtp.SRTP_SUITE, key=rtp.encode_key(rtp.new_key()))
        updated = await stub.UpdateSession(
            media_pb2.UpdateSessionRequest(session_id="s1", leg_b=leg(b, crypto=crypto))
        )
        assert (
            updated.leg_a.rtp_port == created.leg_a.rtp_port
            and updated.leg_b.rtp_port == created.leg_b.rtp_port
        )
        assert updated.leg_b.crypto.suite == rtp.SRTP_SUITE and not updated.leg_a.HasField("crypto")
        again = await stub.UpdateSession(
            media_pb2.UpdateSessionRequest(session_id="s1", leg_b=leg(b, crypto=crypto))
        )
        assert again.leg_b.crypto.key == updated.leg_b.crypto.key  # the relay's key stays for the session
        await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id="s1"))
        for call in (
            stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id="s1")),
            stub.UpdateSession(media_pb2.UpdateSessionRequest(session_id="s1")),
            stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="nope")),
        ):
            assert await code_of(call) == grpc.StatusCode.NOT_FOUND
    a.close()
    b.close()


Create, Spec, Crypto = media_pb2.CreateSessionRequest, media_pb2.LegSpec, media_pb2.Crypto


@pytest.mark.parametrize(
    "request_",
    [
        Create(session_id=""),
        Create(session_id="bad id with spaces"),
        Create(session_id="x", leg_a=Spec(remote_address="pbx.example", remote_rtp_port=4000)),
        Create(session_id="x", leg_a=Spec(remote_address="::1", remote_rtp_port=4000)),
        Create(session_id="x", leg_a=Spec(remote_address=HOST, remote_rtp_port=70000)),
        Create(session_id="x", leg_a=Spec(crypto=Crypto(suite="AES_256_CM_HMAC_SHA1_80", key=""))),
        Create(session_id="x", leg_b=Spec(crypto=Crypto(suite=rtp.SRTP_SUITE, key="c2hvcnQ="))),
    ],
)
async def test_bad_requests_are_invalid_argument_and_leak_no_ports(request_):
    async with relay() as (server, stub):
        free = server.pool.capacity
        assert await code_of(stub.CreateSession(request_)) == grpc.StatusCode.INVALID_ARGUMENT
        ok = await stub.CreateSession(media_pb2.CreateSessionRequest(session_id="x"))
        assert ok.leg_a.rtp_port and server.pool.active == 1 and server.pool.capacity == free


async def test_health_and_drain():
    async with relay() as (server, stub):
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        health = health_pb2_grpc.HealthStub(channel)
        name = "trunkline.media.v1.MediaRelay"
        assert (
            await health.Check(health_pb2.HealthCheckRequest(service=name))
        ).status == health_pb2.HealthCheckResponse.SERVING
        events = stub.WatchEvents(media_pb2.WatchEventsRequest())
        await stub.CreateSession(media_pb2.CreateSessionRequest(session_id="live"))
        drained = await stub.Drain(media_pb2.DrainRequest())
        assert drained.active_sessions == 1
        assert (
            await health.Check(health_pb2.HealthCheckRequest(service=name))
        ).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (
            await code_of(stub.CreateSession(media_pb2.CreateSessionRequest(session_id="new")))
            == grpc.StatusCode.UNAVAILABLE
        )
        await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id="live"))
        event = await asyncio.wait_for(events.read(), 5)
        assert event.kind == media_pb2.SessionEvent.DRAINED
        events.cancel()
        await channel.close()
