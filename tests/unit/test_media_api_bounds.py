"""The relay API's bounds: media address policy, inactivity timeout floor, sessions per caller, and
refusals logged once rather than per request."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from google.protobuf import duration_pb2

from trunkline.core.addresses import MediaAddressPolicy
from trunkline.media import service
from trunkline.media.server import address_policy_of, build_parser
from trunkline.media.service import RefusalLog
from trunkline.media.testing import HOST, Party, leg, relay
from trunkline.media.v1 import media_pb2

Create, Update, Spec = media_pb2.CreateSessionRequest, media_pb2.UpdateSessionRequest, media_pb2.LegSpec


async def refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


@pytest.fixture
def party():
    made = Party()
    yield made
    made.close()


@pytest.mark.parametrize(
    ("address", "why"),
    [("169.254.169.254", "link-local"), ("0.0.0.0", "unspecified"), ("239.1.1.1", "multicast"),
     ("10.1.2.3", "denied network"), ("media.example", "not an IP address")],
)  # fmt: skip
async def test_create_and_update_refuse_what_the_policy_refuses(party, address, why):
    policy = MediaAddressPolicy.build(allow_loopback=True, deny_cidrs=["10.0.0.0/8"])
    async with relay(address_policy=policy) as (server, stub):
        bad = Spec(remote_address=address, remote_rtp_port=4000)
        code, details = await refusal(stub.CreateSession(Create(session_id="s", leg_a=bad)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("leg_a.remote_address:")
        assert why in details and server.pool.active == 0
        await stub.CreateSession(Create(session_id="s", leg_a=leg(party)))
        code, details = await refusal(stub.UpdateSession(Update(session_id="s", leg_b=bad)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "leg_b.remote_address" in details


async def test_loopback_parties_only_for_a_relay_that_allows_them(party):
    async with relay(address_policy=MediaAddressPolicy()) as (_, stub):
        code, details = await refusal(stub.CreateSession(Create(session_id="s", leg_a=leg(party))))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "loopback" in details
    async with relay() as (_, stub):  # listening on loopback: allowed by default
        await stub.CreateSession(Create(session_id="s", leg_a=leg(party)))


async def test_a_signalling_address_must_be_an_ip():
    async with relay() as (_, stub):
        spec = Spec(signalling_address="pbx.example")
        code, details = await refusal(stub.CreateSession(Create(session_id="s", leg_a=spec)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "leg_a.signalling_address" in details
        await stub.CreateSession(Create(session_id="s", leg_a=Spec(signalling_address="2001:db8::1")))


def timeout(seconds: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(seconds))


async def test_the_inactivity_timeout_has_a_floor():
    async with relay(min_timeout=10.0) as (server, stub):
        for asked in (0, 5):  # zero would mean never
            code, details = await refusal(
                stub.CreateSession(Create(session_id="s", inactivity_timeout=timeout(asked)))
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "at least 10 s" in details
        await stub.CreateSession(Create(session_id="ten", inactivity_timeout=timeout(10)))
        await stub.CreateSession(Create(session_id="default"))
        assert server.pool.active == 2


async def test_sessions_per_caller_are_bounded_and_freed_when_they_end():
    async with relay(max_sessions_per_caller=2) as (server, stub):
        await stub.CreateSession(Create(session_id="one"))
        await stub.CreateSession(Create(session_id="two"))
        code, details = await refusal(stub.CreateSession(Create(session_id="three")))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and f"{HOST} holds 2 sessions" in details
        assert server.service.sessions_of(HOST) == 2 and server.pool.active == 2
        await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id="one"))
        await stub.CreateSession(Create(session_id="three"))
        await stub.DeleteSessions(media_pb2.DeleteSessionsRequest(session_ids=["two", "three"]))
        assert server.service.sessions_of(HOST) == 0
        code, _ = await refusal(stub.CreateSession(Create(session_id="bad id")))  # refused: not counted
        assert server.service.sessions_of(HOST) == 0


async def test_one_delete_names_a_bounded_number_of_sessions():
    async with relay() as (server, stub):
        await stub.CreateSession(Create(session_id="kept"))
        too_many = [f"s{i}" for i in range(service.MAX_DELETE_IDS)] + ["kept"]
        code, details = await refusal(
            stub.DeleteSessions(media_pb2.DeleteSessionsRequest(session_ids=too_many))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and f"at most {service.MAX_DELETE_IDS}" in details
        assert server.pool.active == 1  # refused as a whole: nothing deleted
        most = too_many[1:]
        answer = await stub.DeleteSessions(media_pb2.DeleteSessionsRequest(session_ids=most))
        assert list(answer.stats) == ["kept"] and len(answer.not_found) == len(most) - 1
        assert server.pool.active == 0


async def test_a_flood_of_refusals_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="trunkline.media.service")
    async with relay(min_timeout=10.0) as (_, stub):
        for _ in range(20):
            await refusal(stub.CreateSession(Create(session_id="s", inactivity_timeout=timeout(1))))
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0] == (
        f"CreateSession from {HOST} refused: INVALID_ARGUMENT "
        "inactivity_timeout must be at least 10 s on this relay"
    )


def test_refusals_are_logged_again_after_the_interval_with_what_was_not(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="trunkline.media.service")
    clock = [100.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: clock[0])
    refusals = RefusalLog(interval=60.0)
    code = grpc.StatusCode.INVALID_ARGUMENT
    assert refusals.refused("CreateSession", "10.0.0.5", code, "bad")
    assert not any(refusals.refused("CreateSession", "10.0.0.5", code, "bad") for _ in range(5))
    assert refusals.refused("CreateSession", "10.0.0.6", code, "bad")  # another caller: its own
    clock[0] += 61
    assert refusals.refused("CreateSession", "10.0.0.5", code, "bad")
    assert caplog.records[-1].getMessage().endswith("bad (5 more like it not logged)")


def test_command_line_address_policy():
    parse = build_parser().parse_args
    on_loopback = address_policy_of(parse(["--media-listen", "127.0.0.1"]))
    assert on_loopback.allows("127.0.0.1")
    public = address_policy_of(parse(["--media-listen", "0.0.0.0", "--media-deny-cidr", "10.96.0.0/12",
                                      "--media-deny-cidr", "10.244.0.0/16"]))  # fmt: skip
    assert (
        not public.allows("127.0.0.1") and not public.allows("10.96.0.10") and not public.allows("10.244.3.4")
    )
    assert public.allows("10.0.0.1")
    allowed = address_policy_of(parse(["--media-listen", "0.0.0.0", "--allow-loopback-media"]))
    assert allowed.allows("127.0.0.1")
    with pytest.raises(ValueError, match="media deny CIDR"):
        address_policy_of(parse(["--media-deny-cidr", "10.0.0.1/8"]))


async def test_a_session_that_timed_out_stops_counting_against_its_caller(party):
    other = Party()
    try:
        async with relay(max_sessions_per_caller=1) as (server, stub):
            request = Create(session_id="quiet", leg_a=leg(party), leg_b=leg(other))
            request.inactivity_timeout.CopyFrom(timeout(1))
            await stub.CreateSession(request)
            deadline = asyncio.get_running_loop().time() + 15
            while server.service.sessions_of(HOST) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
            assert server.service.sessions_of(HOST) == 0 and server.pool.active == 0
            await stub.CreateSession(Create(session_id="next"))
    finally:
        other.close()
