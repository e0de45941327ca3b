"""Who may call which RPC: a server interceptor that checks the caller's role before the servicer runs,
and refusals that are a gRPC status with a message, logged once per peer and reason.

A policy maps full method names (`/pkg.Service/Method`) to the roles allowed; a method not in the
policy is refused (health checking is allowed to every authenticated peer). On a server started with
--insecure-grpc (loopback only) there are no identities and nothing is checked: every local process is
trusted, as in `trunkline up`. Checks that need the request (a relay registers only its own id; only
edges read Secrets) are the servicers', with `refuse`.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, NoReturn

import grpc

from trunkline.core.grpc_tls import is_tls, peer_identity
from trunkline.core.pki import Identity

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
LOGGED_REFUSALS = 4096  # distinct (peer, reason) pairs remembered, so that a flood logs each once


class _Refusals:
    """Remembers which (peer, reason) were logged, oldest forgotten first (bounded memory)."""

    def __init__(self, size: int = LOGGED_REFUSALS) -> None:
        self.size = size
        self.seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, peer: str, reason: str) -> bool:
        key = (peer, reason)
        if key in self.seen:
            self.seen.move_to_end(key)
            return False
        self.seen[key] = None
        if len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return True


_refusals = _Refusals()


def _peer(context: grpc.aio.ServicerContext) -> str:
    identity = peer_identity(context)
    return f"{identity} at {context.peer()}" if identity else str(context.peer())


async def refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with `code` and `message`; logged the first time this peer gets this message."""
    peer = _peer(context)
    if _refusals.first(peer.rpartition(":")[0] or peer, message):  # the same peer on another port too
        log.warning("refused %s: %s %s", peer, code.name, message)
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


def caller(context: grpc.aio.ServicerContext) -> Identity | None:
    """The caller's identity; None on an insecure (loopback, trusted) server."""
    return peer_identity(context) if is_tls(context) else None


async def check_role(context: grpc.aio.ServicerContext, method: str, roles: Collection[str] | None) -> None:
    """Refuse unless the caller has one of `roles` (None: any authenticated peer)."""
    if not is_tls(context):
        return
    identity = peer_identity(context)
    if identity is None:
        await refuse(
            context,
            grpc.StatusCode.UNAUTHENTICATED,
            "no spiffe://trunkline/<role>/<id> identity in the client certificate",
        )
    assert identity is not None
    if roles is not None and identity.role not in roles:
        allowed = " or ".join(sorted(roles)) or "nobody"
        await refuse(
            context, grpc.StatusCode.PERMISSION_DENIED, f"{method} is for {allowed}, not {identity.role}"
        )


Behaviour = Callable[[Any, grpc.aio.ServicerContext], Any]


class RoleCheck(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc's aio interceptor is untyped
    """Refuses a call before its servicer runs unless the caller's role is in `policy[method]`."""

    def __init__(self, policy: Mapping[str, Collection[str]]) -> None:
        self.policy = policy

    def _roles(self, method: str) -> Collection[str] | None:
        if method.startswith(HEALTH_PREFIX):
            return None
        return self.policy.get(method, ())

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        roles = self._roles(method)
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method, roles))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method, roles))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._unary(handler.stream_unary, method, roles))
        return handler._replace(stream_stream=self._stream(handler.stream_stream, method, roles))

    @staticmethod
    def _unary(behaviour: Behaviour, method: str, roles: Collection[str] | None) -> Behaviour:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check_role(context, method, roles)
            return await behaviour(request, context)

        return guarded

    @staticmethod
    def _stream(behaviour: Behaviour, method: str, roles: Collection[str] | None) -> Behaviour:
        if not inspect.isasyncgenfunction(behaviour):

            async def guarded_writer(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check_role(context, method, roles)
                return await behaviour(request, context)

            return guarded_writer

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await check_role(context, method, roles)
            async for item in behaviour(request, context):
                yield item

        return guarded
