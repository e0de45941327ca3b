"""The edge's calls to one media relay: CreateSession, UpdateSession and DeleteSessions as commands on
one long-lived Sessions stream, matched to their replies by id. The commands queued while the stream
writes go out together in its next message (a message costs about what a unary call does, whatever
it holds); on a busy stream a command waits a few ms (GATHER) for company, so the busier the edge
the less each command costs.

The stream opens with the first command and again after it breaks; a break fails the commands
waiting on it with the break's status (UNAVAILABLE for a relay gone: the caller may try another
relay). It is opened under no call's trace: each command carries its own span's traceparent. A relay
that does not know the stream (UNIMPLEMENTED: older than this edge, during an upgrade) gets the unary
RPCs from then on.

Nothing is written on a stream before the relay accepts it (its initial metadata, ACCEPT_WAIT at
most): a relay that refuses a stream at once (UNIMPLEMENTED, or at its cap of streams) ends it with its
status, and a write racing that end makes grpc's asyncio client report INTERNAL instead
(grpc/grpc#36066), which would fail the command rather than fall back or try another relay. The same
race when a relay ends a stream it had accepted is reported as UNAVAILABLE: the relay's status is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc

from trunkline.core.rpc_tracing import command_client_span
from trunkline.media.v1 import media_pb2, media_pb2_grpc

SERVICE = "trunkline.media.v1.MediaRelay"
STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}
# A command on a stream that sent a message within BUSY seconds waits GATHER for others to share its
# message. A message costs each side about what a unary call does, whatever it holds: at 300 calls/s
# 5 ms cut the edge's and relay's CPU per call by 12% and 48% (bench/README-edge.md). An idle
# stream (an edge with a few calls a second) sends at once.
GATHER = 0.005
BUSY = 0.05
MAX_BATCH = 256  # commands in one message: far below gRPC's 4 MB message limit, the relay's work limit
METHODS = {"create": "CreateSession", "update": "UpdateSession", "delete": "DeleteSessions"}  # by command
ACCEPT_WAIT = 1.0  # seconds the first write waits for the relay to accept the stream (then goes anyway)


class RelayError(Exception):
    """A command the relay refused or that did not reach it: the gRPC status and its message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class _Stream:
    """One open Sessions call: commands queued for it, and the replies awaited, by id."""

    def __init__(self, stub: media_pb2_grpc.MediaRelayStub) -> None:
        self.outgoing: asyncio.Queue[media_pb2.SessionCommand | None] = asyncio.Queue()
        self.pending: dict[int, asyncio.Future[media_pb2.SessionReply]] = {}
        self.call: Any = None  # the Sessions call, once open
        # Under no call's trace: the stream outlives every call whose command opened it.
        self.task = asyncio.get_running_loop().create_task(self._run(stub), context=contextvars.Context())

    async def _messages(self) -> AsyncIterator[media_pb2.SessionCommands]:
        """Everything queued since the last message went out, as one message: while gRPC writes
        one, the next gathers; on a busy stream a command also waits GATHER for others."""
        loop = asyncio.get_running_loop()
        last_sent = -BUSY
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ACCEPT_WAIT):
                await self.call.initial_metadata()  # the relay accepted the stream, or ended it
        if self.call.done():
            return
        command = await self.outgoing.get()
        while command is not None:
            if loop.time() - last_sent < BUSY:
                await asyncio.sleep(GATHER)
            batch = []
            while command is not None:
                batch.append(command)
                if self.outgoing.empty() or len(batch) == MAX_BATCH:
                    break
                command = self.outgoing.get_nowait()
            yield media_pb2.SessionCommands(commands=batch)
            last_sent = loop.time()
            if command is not None:
                command = await self.outgoing.get()

    async def _run(self, stub: media_pb2_grpc.MediaRelayStub) -> None:
        error = RelayError(grpc.StatusCode.UNAVAILABLE, "the relay ended the Sessions stream")
        try:
            call = self.call = stub.Sessions(self._messages())  # _messages runs later, in gRPC's task
            async for message in call:
                for reply in message.replies:
                    future = self.pending.get(reply.id)
                    if future is not None and not future.done():
                        future.set_result(reply)
        except grpc.aio.AioRpcError as exc:
            error = _stream_error(exc)
        except asyncio.CancelledError:
            error = RelayError(grpc.StatusCode.UNAVAILABLE, "the edge closed the Sessions stream")
            raise
        finally:
            self.outgoing.put_nowait(None)  # ends _messages, which gRPC may still be waiting on
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(error)


class RelayCalls:
    """The session calls to one relay (see the module's doc); `close()` ends the stream."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = media_pb2_grpc.MediaRelayStub(channel)  # type: ignore[no-untyped-call]
        self.unary = False  # the relay has no Sessions stream
        self._stream: _Stream | None = None
        self._ids = itertools.count(1)

    async def create(
        self, request: media_pb2.CreateSessionRequest, timeout: float
    ) -> media_pb2.CreateSessionResponse:
        response = await self._send("create", request, self.stub.CreateSession, timeout)
        return cast(media_pb2.CreateSessionResponse, response)

    async def update(
        self, request: media_pb2.UpdateSessionRequest, timeout: float
    ) -> media_pb2.UpdateSessionResponse:
        response = await self._send("update", request, self.stub.UpdateSession, timeout)
        return cast(media_pb2.UpdateSessionResponse, response)

    async def delete(
        self, request: media_pb2.DeleteSessionsRequest, timeout: float
    ) -> media_pb2.DeleteSessionsResponse:
        response = await self._send("delete", request, self.stub.DeleteSessions, timeout)
        return cast(media_pb2.DeleteSessionsResponse, response)

    async def _send(self, kind: str, request: Any, unary: Any, timeout: float) -> Any:
        """The response to `request` as the command `kind` on the stream, or by the unary RPC."""
        if not self.unary:
            reply = await self._command(media_pb2.SessionCommand(**{kind: request}), kind, timeout)
            if reply is not None:
                return getattr(reply, kind)
        return await _unary(unary, request, timeout)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.outgoing.put_nowait(None)  # half-close: the relay answers what it has, then ends
            try:
                await asyncio.wait_for(asyncio.shield(stream.task), 1.0)
            except (TimeoutError, RelayError):
                stream.task.cancel()

    async def _command(
        self, command: media_pb2.SessionCommand, kind: str, timeout: float
    ) -> media_pb2.SessionReply | None:
        """The reply to `command` (whose oneof is `kind`) on the stream; None when the relay has no
        stream (use the unary RPC)."""
        method = METHODS[kind]
        stream = self._stream
        if stream is None or stream.task.done():
            stream = self._stream = _Stream(self.stub)
        command.id = command_id = next(self._ids)
        future: asyncio.Future[media_pb2.SessionReply] = asyncio.get_running_loop().create_future()
        stream.pending[command_id] = future
        with command_client_span(SERVICE, method) as span:
            command.traceparent = span.traceparent
            stream.outgoing.put_nowait(command)
            try:
                async with asyncio.timeout(timeout):
                    reply = await future
            except TimeoutError:
                span.status(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
                late = f"no answer within {timeout:g} s"
                raise RelayError(grpc.StatusCode.DEADLINE_EXCEEDED, late) from None
            except RelayError as exc:
                if exc.code is grpc.StatusCode.UNIMPLEMENTED:
                    self.unary = True  # nothing was done: the caller goes on with the unary RPC
                    return None
                span.status(exc.code.value[0])
                raise
            finally:
                del stream.pending[command_id]
            span.status(reply.code)
        if reply.code:
            raise RelayError(STATUS_BY_CODE.get(reply.code, grpc.StatusCode.UNKNOWN), reply.message[:200])
        if reply.WhichOneof("reply") != kind:
            raise RelayError(grpc.StatusCode.INTERNAL, f"the relay answered {method} with no {kind} reply")
        return reply


def _stream_error(exc: grpc.aio.AioRpcError) -> RelayError:
    """The status that ended the stream. A write that raced the relay's end of it has grpc's client
    replace the relay's status with INTERNAL (grpc/grpc#36066): the relay ended the stream."""
    failed_write = (exc.debug_error_string() or "").startswith('Failed "execute_batch"')  # the client's own
    if exc.code() is grpc.StatusCode.INTERNAL and failed_write:
        return RelayError(grpc.StatusCode.UNAVAILABLE, "the relay ended the Sessions stream during a write")
    return RelayError(exc.code(), exc.details() or "")


async def _unary(method: Any, request: Any, timeout: float) -> Any:
    try:
        return await method(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        raise RelayError(exc.code(), exc.details() or "") from None
