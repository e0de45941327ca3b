"""The Sessions stream between an edge and a relay (both real, in this process): commands answered by
id, each with its own status; a bounded number of one stream's commands at work, and of one caller's
streams; an edge sends all its calls' session work on one stream, commands queued together in one
message, falls back to the unary RPCs on a relay that has no stream (an older relay during an
upgrade), and opens a new stream after one broke."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from tests.integration.test_edge_relay_media_handover import LOOPBACK, outbound_call, sdp_for
from trunkline.edge import media as edge_media
from trunkline.edge import relay_stream
from trunkline.edge.media import RelayMedia
from trunkline.edge.relay_stream import STATUS_BY_CODE, RelayCalls, RelayError
from trunkline.media import command_stream, service
from trunkline.media.server import MediaServer
from trunkline.media.service import MediaRelayService
from trunkline.media.testing import HOST, Party
from trunkline.media.v1 import media_pb2, media_pb2_grpc


@asynccontextmanager
async def running_relay(listen: str = "127.0.0.1:0") -> AsyncIterator[MediaServer]:
    """A relay in this process; its gRPC handlers are bound at start (patch the service before)."""
    low = 62000 + (os.getpid() % 20) * 100
    server = MediaServer(listen, HOST, (low, low + 99), workers=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.fixture
async def relay() -> AsyncIterator[MediaServer]:
    async with running_relay() as server:
        yield server


def leg(port: int, address: str = HOST) -> media_pb2.LegSpec:
    return media_pb2.LegSpec(remote_address=address, remote_rtp_port=port)


def create(command_id: int, session_id: str, address: str = HOST) -> media_pb2.SessionCommand:
    request = media_pb2.CreateSessionRequest(session_id=session_id, leg_a=leg(4000, address), leg_b=leg(4002))
    return media_pb2.SessionCommand(id=command_id, create=request)


async def replies(stream: Any, count: int) -> dict[int, media_pb2.SessionReply]:
    """The next `count` replies on a Sessions stream (several may share a message), by command id."""
    found: dict[int, media_pb2.SessionReply] = {}
    while len(found) < count:
        message = await stream.read()
        assert message is not grpc.aio.EOF, found
        found.update((reply.id, reply) for reply in message.replies)
    assert len(found) == count
    return found


async def test_commands_on_one_stream_are_answered_by_id_each_with_its_own_status(relay: MediaServer) -> None:
    commands = [
        create(7, "good"),
        create(8, "metadata", address="169.254.169.254"),  # the media address policy refuses it
        create(9, "good"),  # exists already (7 started first)
        media_pb2.SessionCommand(id=10, update=media_pb2.UpdateSessionRequest(session_id="nobody")),
        media_pb2.SessionCommand(id=11),  # no command at all
    ]
    delete = media_pb2.DeleteSessionsRequest(session_ids=["good", "gone"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        stream = media_pb2_grpc.MediaRelayStub(channel).Sessions()
        await stream.write(media_pb2.SessionCommands(commands=commands))
        answered = await replies(stream, 5)
        await stream.write(
            media_pb2.SessionCommands(commands=[media_pb2.SessionCommand(id=12, delete=delete)])
        )
        answered.update(await replies(stream, 1))
        await stream.done_writing()
        assert await stream.read() is grpc.aio.EOF  # the relay ends the stream once all are answered
        assert await stream.code() is grpc.StatusCode.OK
    codes = {command_id: STATUS_BY_CODE[reply.code] for command_id, reply in answered.items()}
    assert codes == {
        7: grpc.StatusCode.OK,
        8: grpc.StatusCode.INVALID_ARGUMENT,
        9: grpc.StatusCode.ALREADY_EXISTS,
        10: grpc.StatusCode.NOT_FOUND,
        11: grpc.StatusCode.INVALID_ARGUMENT,
        12: grpc.StatusCode.OK,
    }
    assert "169.254.169.254" in answered[8].message, answered[8].message
    assert answered[7].create.leg_a.rtp_port and answered[7].create.leg_b.rtp_port
    assert list(answered[12].delete.not_found) == ["gone"] and "good" in answered[12].delete.stats
    assert relay.pool.active == 0 and relay.service.sessions_of("127.0.0.1") == 0


async def test_one_stream_has_a_bounded_number_of_commands_at_work(
    relay: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command_stream, "IN_FLIGHT", 4)
    at_work, peak = 0, 0
    create_session = MediaRelayService.create

    async def slow_create(self: MediaRelayService, request: Any, caller: str) -> Any:
        nonlocal at_work, peak
        at_work += 1
        peak = max(peak, at_work)
        await asyncio.sleep(0.1)  # e.g. an engine busy with a flood
        try:
            return await create_session(self, request, caller)
        finally:
            at_work -= 1

    monkeypatch.setattr(MediaRelayService, "create", slow_create)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        stream = media_pb2_grpc.MediaRelayStub(channel).Sessions()
        # 20 in one message: the relay takes the next as one is answered
        await stream.write(media_pb2.SessionCommands(commands=[create(i, f"burst-{i}") for i in range(20)]))
        answered = await replies(stream, 20)
        assert sorted(answered) == list(range(20)) and not any(r.code for r in answered.values())
        assert peak == 4 and relay.pool.active == 20
        delete = media_pb2.DeleteSessionsRequest(session_ids=[f"burst-{i}" for i in range(20)])
        await stream.write(
            media_pb2.SessionCommands(commands=[media_pb2.SessionCommand(id=99, delete=delete)])
        )
        assert list(await replies(stream, 1)) == [99]
        await stream.done_writing()
    assert relay.pool.active == 0


def count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each of the relay's session RPCs is entered (set up before the relay starts)."""
    counts = {"Sessions": 0, "CreateSession": 0, "UpdateSession": 0, "DeleteSessions": 0}
    sessions = MediaRelayService.Sessions

    async def counted_stream(self: MediaRelayService, requests: Any, context: Any) -> AsyncIterator[Any]:
        counts["Sessions"] += 1
        async for reply in sessions(self, requests, context):
            yield reply

    monkeypatch.setattr(MediaRelayService, "Sessions", counted_stream)
    for name in ("CreateSession", "UpdateSession", "DeleteSessions"):
        unary = getattr(MediaRelayService, name)

        async def counted(
            self: MediaRelayService, request: Any, context: Any, _n: str = name, _f: Any = unary
        ) -> Any:
            counts[_n] += 1
            return await _f(self, request, context)

        monkeypatch.setattr(MediaRelayService, name, counted)
    return counts


async def place_and_end_calls(relay: MediaServer, count: int) -> None:
    media = RelayMedia(f"127.0.0.1:{relay.port}", policy=LOOPBACK)
    caller, callee = Party(), Party()
    try:
        calls = [outbound_call(f"stream-{i}@127.0.0.2") for i in range(count)]
        for call in calls:
            await media.rewrite(call, sdp_for(caller.port), "a")  # offer: create
            await media.rewrite(call, sdp_for(callee.port), "b")  # answer: update
        assert relay.pool.active == count
        await asyncio.gather(*(media.release(call) for call in calls))
        assert relay.pool.active == 0
    finally:
        await media.close()
        caller.close()
        callee.close()


async def test_an_edge_sends_all_its_calls_session_work_on_one_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = count_calls(monkeypatch)
    async with running_relay() as relay:
        await place_and_end_calls(relay, 5)
    assert counts == {"Sessions": 1, "CreateSession": 0, "UpdateSession": 0, "DeleteSessions": 0}


async def test_an_edge_falls_back_to_unary_calls_on_a_relay_without_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = count_calls(monkeypatch)

    async def unknown(
        self: MediaRelayService, requests: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        counts["Sessions"] += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")  # what an older relay says
        yield  # pragma: no cover

    monkeypatch.setattr(MediaRelayService, "Sessions", unknown)
    async with running_relay() as relay:
        await place_and_end_calls(relay, 3)
    assert counts == {"Sessions": 1, "CreateSession": 3, "UpdateSession": 3, "DeleteSessions": 1}


async def test_an_edge_writes_nothing_on_a_stream_the_relay_has_not_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write racing a refusal would turn the relay's status into INTERNAL in grpc's client
    (grpc/grpc#36066), and the command would fail instead of falling back."""
    written: list[Any] = []

    async def refusing_late(
        self: MediaRelayService, requests: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        with contextlib.suppress(TimeoutError):  # anything the edge writes before the refusal
            written.append(await asyncio.wait_for(anext(aiter(requests)), 0.3))
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield  # pragma: no cover

    monkeypatch.setattr(MediaRelayService, "Sessions", refusing_late)
    async with running_relay() as relay, grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        calls = RelayCalls(channel)
        try:
            assert (await calls.create(create(0, "refused").create, 5)).leg_a.rtp_port
            assert calls.unary and written == []
        finally:
            await calls.close()


async def test_an_edge_writes_after_a_while_on_a_stream_the_relay_never_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay that sends no initial metadata (built before it did) still gets the commands."""
    monkeypatch.setattr(relay_stream, "ACCEPT_WAIT", 0.2)
    sessions = MediaRelayService.Sessions

    class Mute:
        def __init__(self, context: grpc.aio.ServicerContext) -> None:
            self.context = context

        async def send_initial_metadata(self, metadata: Any) -> None:
            pass

        def __getattr__(self, name: str) -> Any:
            return getattr(self.context, name)

    async def mute(self: MediaRelayService, requests: Any, context: Any) -> AsyncIterator[Any]:
        async for reply in sessions(self, requests, Mute(context)):
            yield reply

    monkeypatch.setattr(MediaRelayService, "Sessions", mute)
    async with running_relay() as relay, grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        calls = RelayCalls(channel)
        try:
            started = time.monotonic()
            assert (await calls.create(create(0, "late").create, 5)).leg_a.rtp_port
            assert time.monotonic() - started >= 0.2 and not calls.unary
        finally:
            await calls.close()


async def test_a_broken_stream_fails_its_commands_and_the_next_command_opens_another() -> None:
    async with running_relay() as relay:
        target = f"127.0.0.1:{relay.port}"
        channel = grpc.aio.insecure_channel(target)
        calls = RelayCalls(channel)
        request = create(0, "before").create
        assert (await calls.create(request, 5)).leg_a.rtp_port
    try:
        with pytest.raises(RelayError) as gone:  # the relay is down: refused at once, not after 5 s
            await calls.create(create(0, "meanwhile").create, 5)
        assert gone.value.code is grpc.StatusCode.UNAVAILABLE
        async with running_relay(target) as relay:  # back on the same port (a restart)
            for _ in range(50):  # the channel reconnects with a backoff
                try:
                    answer = await calls.create(create(0, "after").create, 5)
                    break
                except RelayError:
                    await asyncio.sleep(0.2)
            assert answer.leg_a.rtp_port and relay.pool.active == 1
            assert not calls.unary
            await asyncio.sleep(0.1)
            feeding = [t for t in asyncio.all_tasks() if "_consume_request_iterator" in repr(t.get_coro())]
            assert len(feeding) == 1  # the broken streams' command feeds ended with them
    finally:
        await calls.close()
        await channel.close()


async def test_commands_an_edge_queues_together_go_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    messages: list[int] = []  # commands per message the relay received
    sessions = MediaRelayService.Sessions

    async def counted(self: MediaRelayService, requests: Any, context: Any) -> AsyncIterator[Any]:
        async def each(requests: Any) -> AsyncIterator[Any]:
            async for message in requests:
                messages.append(len(message.commands))
                yield message

        async for replies in sessions(self, each(requests), context):
            yield replies

    monkeypatch.setattr(MediaRelayService, "Sessions", counted)
    async with running_relay() as relay:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}")
        calls = RelayCalls(channel)
        try:
            answers = await asyncio.gather(
                *(calls.create(create(0, f"together-{i}").create, 5) for i in range(20))
            )
            assert all(answer.leg_a.rtp_port for answer in answers) and relay.pool.active == 20
        finally:
            await calls.close()
            await channel.close()
    assert sum(messages) == 20 and len(messages) < 20, messages


async def test_a_caller_s_streams_are_capped_and_a_closed_one_makes_room(
    relay: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_STREAMS_PER_CALLER", 2)
    probe = media_pb2.SessionCommands(
        commands=[media_pb2.SessionCommand(id=1, delete=media_pb2.DeleteSessionsRequest(session_ids=["x"]))]
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        stub = media_pb2_grpc.MediaRelayStub(channel)
        streams = [stub.Sessions() for _ in range(2)]
        for stream in streams:  # open, and answering
            await stream.write(probe)
            assert list(await replies(stream, 1)) == [1]
        streams.append(stub.Sessions())
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # refused as it opens
            await streams[2].read()
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 Sessions streams open" in (refused.value.details() or "")
        await streams[0].done_writing()
        assert await streams[0].read() is grpc.aio.EOF  # closed: room for another
        again = stub.Sessions()
        await again.write(probe)
        assert list(await replies(again, 1)) == [1]
        for stream in (again, streams[1]):
            await stream.done_writing()
            assert await stream.read() is grpc.aio.EOF
    assert relay.service._streams_of == {}  # every stream ended: nothing counted for the caller


async def test_an_edge_ending_many_calls_at_once_splits_their_deletion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edge_media, "DELETE_BATCH", 4)  # 256 in production, a relay takes up to 1,024
    batches: list[int] = []
    delete_many = MediaRelayService.delete_many

    async def observed(self: MediaRelayService, request: Any) -> Any:
        batches.append(len(request.session_ids))
        return await delete_many(self, request)

    monkeypatch.setattr(MediaRelayService, "delete_many", observed)
    async with running_relay() as relay:
        await place_and_end_calls(relay, 10)  # all released together
    assert sorted(batches, reverse=True) == [4, 4, 2]


async def test_a_message_of_too_many_commands_or_bytes_ends_the_stream(relay: MediaServer) -> None:
    empty = media_pb2.SessionCommand()  # two bytes each on the wire
    async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
        stub = media_pb2_grpc.MediaRelayStub(channel)
        stream = stub.Sessions()
        await stream.write(media_pb2.SessionCommands(commands=[empty] * (command_stream.MAX_COMMANDS + 1)))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.read()
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"at most {command_stream.MAX_COMMANDS} commands" in (refused.value.details() or "")
        big = media_pb2.DeleteSessionsRequest(session_ids=["x" * 128] * 9000)  # > 1 MiB
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await stub.DeleteSessions(big, timeout=10)
        assert too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        stream = stub.Sessions()  # the relay serves on
        await stream.write(media_pb2.SessionCommands(commands=[create(1, "after")]))
        assert not (await replies(stream, 1))[1].code
        await stream.done_writing()
        assert await stream.read() is grpc.aio.EOF
    assert relay.service._streams_of == {}  # the refused stream's count was released too
