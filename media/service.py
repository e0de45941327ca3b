"""The MediaRelay gRPC service (trunkline.media.v1) on top of an EnginePool."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any, TypeVar

import grpc

from trunkline.core.addresses import MediaAddressPolicy
from trunkline.core.rpc import duration, seconds
from trunkline.media import rtp
from trunkline.media.command_stream import CommandStream
from trunkline.media.engine import LegAllocation, LegConfig, SessionCounters
from trunkline.media.errors import (
    Draining,
    InvalidRequest,
    LocalError,
    NoMediaAddress,
    PortsExhausted,
    RemoteError,
    SessionExists,
    SessionNotFound,
)
from trunkline.media.pool import EnginePool
from trunkline.media.records import SessionRecord, SessionRecords
from trunkline.media.v1 import media_pb2, media_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "trunkline.media.v1.MediaRelay"
# Who may call what (mTLS roles, docs/security.md): edges run their calls' sessions, the operator drains.
POLICY = {
    **{
        f"/{SERVICE_NAME}/{method}": {"edge"}
        for method in (
            "CreateSession",
            "UpdateSession",
            "DeleteSession",
            "DeleteSessions",
            "GetSessionStats",
            "WatchEvents",
            "Sessions",
        )
    },
    f"/{SERVICE_NAME}/Drain": {"operator"},
}
DEFAULT_INACTIVITY_TIMEOUT = 60.0
# A caller may not ask for less: a session that never times out (or almost at once) is an open relay
# left behind, or a way to churn ports.
DEFAULT_MIN_INACTIVITY_TIMEOUT = 10.0
DEFAULT_MAX_SESSIONS_PER_CALLER = 4000  # one edge's calls on one relay; a runaway caller cannot take all
# An edge process opens one Sessions stream per relay; one identity (or IP address) may be several
# processes (edge workers, a restarting pod): room for them, not for a caller multiplying its streams.
MAX_STREAMS_PER_CALLER = 64
MAX_DELETE_IDS = 1024  # sessions one DeleteSessions may name (an edge sends at most 256)
# The largest request message: an edge's largest is ~130 KB (1,024 session ids, or 256 commands
# with keys); gRPC decodes a message whole before any check of ours (4 MB of empty commands: ~180 MiB).
MAX_REQUEST_BYTES = 1024 * 1024
REFUSAL_LOG_INTERVAL = 60.0  # a refusal repeated by one caller is logged again at most this often
REFUSAL_LOG_KEYS = 1024  # (caller, status) pairs remembered; more start afresh
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
EVENT_QUEUE = 1024  # events buffered per watcher; a watcher that falls further behind is cut off

STATUS: dict[type[LocalError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    SessionNotFound: grpc.StatusCode.NOT_FOUND,
    SessionExists: grpc.StatusCode.ALREADY_EXISTS,
    PortsExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Draining: grpc.StatusCode.UNAVAILABLE,
    NoMediaAddress: grpc.StatusCode.UNAVAILABLE,  # another relay can take the session
}
EVENT_KINDS = {"timeout": media_pb2.SessionEvent.INACTIVITY_TIMEOUT}

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


class TooManySessions(LocalError):
    """The caller holds its maximum of sessions on this relay."""


class TooManyStreams(LocalError):
    """The caller has its maximum of Sessions streams open on this relay."""


STATUS[TooManySessions] = STATUS[TooManyStreams] = grpc.StatusCode.RESOURCE_EXHAUSTED


def caller_of(context: grpc.aio.ServicerContext) -> str:
    """Who is asking: the peer's certificate name under mTLS, else its IP address (not its port:
    one edge uses many connections)."""
    auth = context.auth_context()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        names = auth.get(key)
        if names:
            return str(names[0].decode("utf-8", "replace"))
    peer = context.peer() or "unknown"  # "ipv4:10.0.0.5:43210", "ipv6:[::1]:43210", "unix:..."
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


class RefusalLog:
    """Logs each refusal once per (caller, status) and interval, then how many were not logged: a
    caller flooding bad requests must not flood the log."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (last logged, suppressed since)

    def refused(self, method: str, caller: str, status: grpc.StatusCode, message: str) -> bool:
        """Log the refusal unless it was logged recently; True when logged."""
        key, now = (caller, status.name), time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is None and len(self._seen) >= REFUSAL_LOG_KEYS:
            self._seen.clear()
        suppressed = f" ({last[1]} more like it not logged)" if last and last[1] else ""
        log.warning("%s from %s refused: %s %s%s", method, caller, status.name, message, suppressed)
        self._seen[key] = (now, 0)
        return True


def rpc_errors(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Answer our own refusals with their status code, logged (see RefusalLog); a failed engine is
    INTERNAL."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except (LocalError, RemoteError) as exc:
            status = self.refusal(handler.__name__, caller_of(context), exc)
            await context.abort(status, str(exc))
        raise AssertionError("unreachable: abort raises")

    return wrapper


def leg_config(spec: media_pb2.LegSpec, policy: MediaAddressPolicy, name: str = "leg") -> LegConfig:
    """Check one LegSpec; InvalidRequest names the bad field."""
    rtp_peer = rtcp_peer = None
    if spec.remote_address:
        refusal = policy.refusal(spec.remote_address)
        if refusal is not None:
            raise InvalidRequest(f"{name}.remote_address: {refusal}")
    signalling = None
    if spec.signalling_address:
        try:
            signalling = str(ipaddress.ip_address(spec.signalling_address))
        except ValueError:
            raise InvalidRequest(
                f"{name}.signalling_address: {spec.signalling_address[:64]!r} is not an IP address"
            ) from None
    if spec.remote_address and spec.remote_rtp_port:
        if spec.remote_rtp_port > 65535 or spec.remote_rtcp_port > 65535:
            raise InvalidRequest("remote ports must be below 65536")
        rtp_peer = (spec.remote_address, spec.remote_rtp_port)
        rtcp_peer = (spec.remote_address, spec.remote_rtcp_port or min(spec.remote_rtp_port + 1, 65535))
    key = None
    if spec.HasField("crypto"):
        if spec.crypto.suite != rtp.SRTP_SUITE:
            raise InvalidRequest(
                f"crypto suite {spec.crypto.suite!r} is not supported (only {rtp.SRTP_SUITE})"
            )
        try:
            key = rtp.decode_key(spec.crypto.key)
        except ValueError as exc:
            raise InvalidRequest(f"crypto.key: {exc}") from None
    if spec.clock_rate > 1_000_000:
        raise InvalidRequest(f"clock_rate {spec.clock_rate} is not an RTP clock rate")
    return LegConfig(
        rtp_peer, rtcp_peer, spec.rtcp_mux, key, spec.clock_rate or 8000, spec.want_srtp, signalling
    )


def session_stats(counters: SessionCounters) -> media_pb2.SessionStats:
    return media_pb2.SessionStats(
        leg_a=media_pb2.LegStats(**asdict(counters.leg_a)),
        leg_b=media_pb2.LegStats(**asdict(counters.leg_b)),
        age=duration(counters.age),
    )


class MediaRelayService(media_pb2_grpc.MediaRelayServicer):
    def __init__(
        self,
        pool: EnginePool,
        media_address: str,
        default_timeout: float = DEFAULT_INACTIVITY_TIMEOUT,
        on_drain: Callable[[], Awaitable[None]] | None = None,
        records: SessionRecords | None = None,
        address_policy: MediaAddressPolicy | None = None,
        min_timeout: float = DEFAULT_MIN_INACTIVITY_TIMEOUT,
        max_sessions_per_caller: int = DEFAULT_MAX_SESSIONS_PER_CALLER,
    ) -> None:
        self.pool = pool
        self.address_policy = address_policy or MediaAddressPolicy()
        self.min_timeout = min_timeout
        self.max_sessions_per_caller = max_sessions_per_caller
        self.refusals = RefusalLog()
        self._caller_of: dict[str, str] = {}  # session id -> who created it
        self._sessions_of: dict[str, int] = {}  # caller -> sessions it holds
        self._streams_of: dict[str, int] = {}  # caller -> Sessions streams it has open
        self.records = records  # with Redis: what a restarted relay restores
        self.media_address = media_address  # what goes into SDP
        self.address_problem: str | None = None  # set: no usable media_address, sessions refused
        self.default_timeout = default_timeout
        self.draining = False
        self._drained = False  # DRAINED was published
        self._on_drain = on_drain
        self._watchers: set[asyncio.Queue[media_pb2.SessionEvent | None]] = set()
        pool.on_event = self._engine_event

    def _allocation(self, allocation: LegAllocation) -> media_pb2.LegAllocation:
        crypto = None
        if allocation.relay_key is not None:
            crypto = media_pb2.Crypto(suite=rtp.SRTP_SUITE, key=rtp.encode_key(allocation.relay_key))
        return media_pb2.LegAllocation(
            address=self.media_address,
            rtp_port=allocation.rtp_port,
            rtcp_port=allocation.rtcp_port,
            crypto=crypto,
        )

    def refusal(self, method: str, caller: str, exc: LocalError | RemoteError) -> grpc.StatusCode:
        """The status that answers `exc`, the refusal logged (see RefusalLog); a failed engine is
        INTERNAL."""
        if isinstance(exc, RemoteError):
            log.error("%s failed: %s", method, exc)
            return grpc.StatusCode.INTERNAL
        status = STATUS.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT)
        if not isinstance(exc, SessionNotFound):  # an ordinary race with a timeout, not a refusal
            self.refusals.refused(method, caller, status, str(exc))
        return status

    @rpc_errors
    async def CreateSession(
        self, request: media_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.CreateSessionResponse:
        return await self.create(request, caller_of(context))

    async def create(
        self, request: media_pb2.CreateSessionRequest, caller: str
    ) -> media_pb2.CreateSessionResponse:
        if self.draining:
            raise Draining("the relay is draining")
        if self.address_problem is not None:
            raise NoMediaAddress(f"this relay has no usable media address: {self.address_problem}")
        if not SESSION_ID.match(request.session_id):
            raise InvalidRequest("session_id must be 1-128 letters, digits or -_.:@")
        policy = self.address_policy
        configs = (leg_config(request.leg_a, policy, "leg_a"), leg_config(request.leg_b, policy, "leg_b"))
        timeout = self.default_timeout
        if request.HasField("inactivity_timeout"):
            timeout = seconds(request.inactivity_timeout)
            if timeout < 0:
                raise InvalidRequest("inactivity_timeout must not be negative")
            if timeout < self.min_timeout:  # zero (never) included, unless the floor is zero
                raise InvalidRequest(
                    f"inactivity_timeout must be at least {self.min_timeout:g} s on this relay"
                )
        held = self._sessions_of.get(caller, 0)
        if held >= self.max_sessions_per_caller:
            held = self._prune(caller)
        if held >= self.max_sessions_per_caller:
            raise TooManySessions(f"{caller} holds {held} sessions, the most this relay allows one caller")
        if request.session_id in self._caller_of:
            raise SessionExists(f"session {request.session_id!r} exists")
        self._own(request.session_id, caller)  # before the await: concurrent creates count too
        try:
            a, b = await self.pool.create(request.session_id, configs, timeout)
        except BaseException:
            self._disown(request.session_id)
            raise
        if self.records is not None:
            self.records.put(SessionRecord.created(request.session_id, timeout, configs, (a, b)))
        return media_pb2.CreateSessionResponse(leg_a=self._allocation(a), leg_b=self._allocation(b))

    @rpc_errors
    async def UpdateSession(
        self, request: media_pb2.UpdateSessionRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.UpdateSessionResponse:
        return await self.update(request)

    async def update(self, request: media_pb2.UpdateSessionRequest) -> media_pb2.UpdateSessionResponse:
        policy = self.address_policy
        configs = (
            leg_config(request.leg_a, policy, "leg_a") if request.HasField("leg_a") else None,
            leg_config(request.leg_b, policy, "leg_b") if request.HasField("leg_b") else None,
        )
        a, b = await self.pool.update(request.session_id, configs)
        if self.records is not None:
            self.records.update(request.session_id, configs, (a, b))
        return media_pb2.UpdateSessionResponse(leg_a=self._allocation(a), leg_b=self._allocation(b))

    @rpc_errors
    async def DeleteSession(
        self, request: media_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.DeleteSessionResponse:
        try:
            counters = await self.pool.delete(request.session_id)
        finally:  # gone, or its engine with it
            self._disown(request.session_id)
            if self.records is not None and request.session_id in self.records.live:
                self.records.drop(request.session_id)
        self._check_drained()
        return media_pb2.DeleteSessionResponse(stats=session_stats(counters))

    @rpc_errors
    async def DeleteSessions(
        self, request: media_pb2.DeleteSessionsRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.DeleteSessionsResponse:
        return await self.delete_many(request)

    async def delete_many(self, request: media_pb2.DeleteSessionsRequest) -> media_pb2.DeleteSessionsResponse:
        if len(request.session_ids) > MAX_DELETE_IDS:  # each id is a request to an engine, all at once
            raise InvalidRequest(f"at most {MAX_DELETE_IDS} session ids in one DeleteSessions")
        ids = list(dict.fromkeys(request.session_ids))  # each once
        # All at once: the engines answer a batch of requests in one wake-up.
        results = await asyncio.gather(*(self.pool.delete(i) for i in ids), return_exceptions=True)
        response = media_pb2.DeleteSessionsResponse()
        for session_id in ids:
            self._disown(session_id)
        if self.records is not None:  # each session is gone, or its engine with it
            for session_id in ids:
                if session_id in self.records.live:
                    self.records.drop(session_id)
        for session_id, result in zip(ids, results, strict=True):
            if isinstance(result, SessionNotFound):
                response.not_found.append(session_id)
            elif isinstance(result, BaseException):
                raise result
            else:
                response.stats[session_id].CopyFrom(session_stats(result))
        self._check_drained()
        return response

    @rpc_errors
    async def GetSessionStats(
        self, request: media_pb2.GetSessionStatsRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.GetSessionStatsResponse:
        return media_pb2.GetSessionStatsResponse(
            stats=session_stats(await self.pool.stats(request.session_id))
        )

    @rpc_errors
    async def Drain(
        self, request: media_pb2.DrainRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.DrainResponse:
        await self.drain()
        return media_pb2.DrainResponse(active_sessions=self.pool.active)

    async def Sessions(
        self, messages: AsyncIterator[media_pb2.SessionCommands], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.SessionReplies]:
        caller = caller_of(context)
        streams = self._streams_of.get(caller, 0)
        if streams >= MAX_STREAMS_PER_CALLER:  # each stream may keep IN_FLIGHT commands at work
            refused = TooManyStreams(f"{caller} has {streams} Sessions streams open, the most allowed")
            await context.abort(self.refusal("Sessions", caller, refused), str(refused))
        self._streams_of[caller] = streams + 1
        stream = CommandStream(self, caller)
        try:
            # Accepted: the edge writes its first commands only after this (edge/relay_stream.py).
            await context.send_initial_metadata(())
            async for replies in stream.run(messages):
                yield replies
            if stream.refusal is not None:
                bad = InvalidRequest(stream.refusal)
                await context.abort(self.refusal("Sessions", caller, bad), str(bad))
        finally:
            left = self._streams_of[caller] - 1
            if left:
                self._streams_of[caller] = left
            else:
                del self._streams_of[caller]

    async def WatchEvents(
        self, request: media_pb2.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.SessionEvent]:
        queue: asyncio.Queue[media_pb2.SessionEvent | None] = asyncio.Queue(EVENT_QUEUE)
        self._watchers.add(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._watchers.discard(queue)

    async def drain(self) -> None:
        if not self.draining:
            self.draining = True
            if self._on_drain is not None:
                await self._on_drain()
        self._check_drained()

    def publish(self, event: media_pb2.SessionEvent) -> None:
        for queue in list(self._watchers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a stuck watcher must not hold events for everyone
                log.warning("event watcher fell %d events behind; closing its stream", EVENT_QUEUE)
                self._end(queue)

    async def close_watchers(self, timeout: float = 1.0) -> None:
        """End every WatchEvents stream (at shutdown), after what they hold was sent (for at most
        `timeout`): a server stopped without grace cancels its streams, and the SHUTDOWN events just
        published would be lost with them."""
        queues = list(self._watchers)
        for queue in queues:
            self._end(queue)
        deadline = asyncio.get_running_loop().time() + timeout
        while any(not queue.empty() for queue in queues) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    def _end(self, queue: asyncio.Queue[media_pb2.SessionEvent | None]) -> None:
        self._watchers.discard(queue)
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(None)

    def _own(self, session_id: str, caller: str) -> None:
        self._caller_of[session_id] = caller
        self._sessions_of[caller] = self._sessions_of.get(caller, 0) + 1

    def _disown(self, session_id: str) -> None:
        """The session ended (deleted, timed out, shut down): its caller may have another."""
        caller = self._caller_of.pop(session_id, None)
        if caller is not None:
            left = self._sessions_of[caller] - 1
            if left:
                self._sessions_of[caller] = left
            else:
                del self._sessions_of[caller]

    def _prune(self, caller: str) -> int:
        """Forget the caller's sessions its engine lost (an engine that died ends them without an
        event); only on the way to a refusal, so it costs nothing per call. Its sessions held now."""
        live = set(self.pool.sessions())
        for session_id in [s for s, c in self._caller_of.items() if c == caller and s not in live]:
            self._disown(session_id)
        return self._sessions_of.get(caller, 0)

    def sessions_of(self, caller: str) -> int:
        return self._sessions_of.get(caller, 0)

    def ended(self, session_id: str) -> None:
        """A session ended outside the API (relay shutdown)."""
        self._disown(session_id)

    def _engine_event(self, kind: str, session_id: str, counters: SessionCounters) -> None:
        self._disown(session_id)
        if self.records is not None:
            self.records.drop(session_id)
        self.publish(
            media_pb2.SessionEvent(
                kind=EVENT_KINDS[kind], session_id=session_id, stats=session_stats(counters)
            )
        )
        self._check_drained()

    def _check_drained(self) -> None:
        if self.draining and not self._drained and self.pool.active == 0:
            self._drained = True
            self.publish(media_pb2.SessionEvent(kind=media_pb2.SessionEvent.DRAINED))
