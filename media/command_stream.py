"""One edge's Sessions stream (MediaRelay.Sessions): its commands run as the unary RPCs would, several
at once, each answered by one reply carrying the command's id; the replies ready when the stream
writes go out in one message.

Bounds: at most IN_FLIGHT commands of one stream are running or waiting for their reply to be taken;
past that the stream reads no more, so a caller that sends without reading stalls only itself (gRPC's
flow control holds its further messages back). A refusal is the reply's status code, logged as the
unary RPC's would be; a bug in one command is INTERNAL for that command, not the end of the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from trunkline.core.rpc_tracing import command_server_span
from trunkline.media.errors import LocalError, RemoteError
from trunkline.media.v1 import media_pb2

if TYPE_CHECKING:
    from trunkline.media.service import MediaRelayService

log = logging.getLogger(__name__)

SERVICE = "trunkline.media.v1.MediaRelay"
IN_FLIGHT = 256  # commands of one stream at once (a busy edge has a few dozen)
# Commands in one message: an edge sends at most 256. Two bytes make an (empty) command, so a message
# of many costs far more to answer than to send: refused whole, the stream ended.
MAX_COMMANDS = 1024
# The unary RPC each command stands for: refusals are logged and spans named after it.
METHODS = {"create": "CreateSession", "update": "UpdateSession", "delete": "DeleteSessions"}


class CommandStream:
    def __init__(self, service: MediaRelayService, caller: str) -> None:
        self.service = service
        self.caller = caller
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._replies: asyncio.Queue[media_pb2.SessionReply | None] = asyncio.Queue()
        self._running: set[asyncio.Task[None]] = set()
        self.refusal: str | None = None  # why the stream was ended (INVALID_ARGUMENT), if it was

    async def run(
        self, messages: AsyncIterator[media_pb2.SessionCommands]
    ) -> AsyncIterator[media_pb2.SessionReplies]:
        reader = asyncio.ensure_future(self._read(messages))
        try:
            ended = False
            while not ended:
                reply = await self._replies.get()
                ready: list[media_pb2.SessionReply] = []  # every reply ready by now: one message
                while reply is not None:
                    ready.append(reply)
                    if self._replies.empty():
                        break
                    reply = self._replies.get_nowait()
                ended = reply is None
                for _ in ready:
                    self._slots.release()
                if ready:
                    yield media_pb2.SessionReplies(replies=ready)
        finally:
            # The caller went away: commands already running finish (a create cancelled half-way
            # would leave its ports to the inactivity timeout); their replies have nowhere to go.
            reader.cancel()

    async def _read(self, messages: AsyncIterator[media_pb2.SessionCommands]) -> None:
        try:
            async for message in messages:
                if len(message.commands) > MAX_COMMANDS:
                    self.refusal = f"at most {MAX_COMMANDS} commands in one message"
                    break
                for command in message.commands:
                    await self._slots.acquire()
                    task = asyncio.ensure_future(self._execute(command))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
        except grpc.aio.AioRpcError:  # the caller's side broke: nothing more will come
            pass
        finally:
            if self._running:
                await asyncio.wait(set(self._running))
            self._replies.put_nowait(None)  # the caller closed its side: the stream ends once answered

    async def _execute(self, command: media_pb2.SessionCommand) -> None:
        kind = command.WhichOneof("command")
        reply = media_pb2.SessionReply(id=command.id)
        if kind is None:
            reply.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            reply.message = "a command names create, update or delete"
            self._replies.put_nowait(reply)
            return
        method = METHODS[kind]
        service = self.service
        with command_server_span(SERVICE, method, command.traceparent) as span:
            try:
                if kind == "create":
                    reply.create.CopyFrom(await service.create(command.create, self.caller))
                elif kind == "update":
                    reply.update.CopyFrom(await service.update(command.update))
                else:
                    reply.delete.CopyFrom(await service.delete_many(command.delete))
            except (LocalError, RemoteError) as exc:
                status = service.refusal(method, self.caller, exc)
                reply.code, reply.message = status.value[0], str(exc)
            except Exception:  # a bug: this command fails, the stream and its other calls go on
                log.exception("%s from %s failed", method, self.caller)
                reply.code, reply.message = grpc.StatusCode.INTERNAL.value[0], "internal error"
            span.status(reply.code)
        self._replies.put_nowait(reply)
