"""What every trunkline gRPC server and client shares: addresses, durations, server start-up with
standard health checking (grpc.health.v1), and running until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from trunkline.core.grpc_auth import RoleCheck
from trunkline.core.grpc_tls import GrpcSecurity
from trunkline.core.rpc_tracing import client_interceptors, server_interceptors

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def parse_hostport(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """Parse HOST:PORT, :PORT or [V6]:PORT; ValueError with a readable message otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or default_host
    return host, int(port)


def parse_range(text: str) -> tuple[int, int]:
    """Parse a port range LO-HI; ValueError with a readable message otherwise."""
    low, sep, high = text.partition("-")
    if not sep or not low.isdigit() or not high.isdigit() or not 0 < int(low) < int(high) < 65536:
        raise ValueError(f"{text!r} is not a port range LO-HI (e.g. 20000-20999)")
    return int(low), int(high)


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def seconds(message: duration_pb2.Duration) -> float:
    return float(message.ToNanoseconds()) / 1e9


def insecure_channel(target: str) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` that carries the trace context when tracing is on."""
    return grpc.aio.insecure_channel(target, interceptors=client_interceptors() or None)


class GrpcServer:
    """A grpc.aio server on HOST:PORT (port 0: any free port, see `port`) serving one service, with
    health checking: the service (`name`, its full name) and "" (the server) report SERVING once
    started. `add` is the generated add_XServicer_to_server function. `security`: mTLS, or plaintext on
    loopback only (the default); `policy`: the roles allowed per method (`core/grpc_auth.py`);
    `max_message`: the largest request message in bytes (RESOURCE_EXHAUSTED beyond).
    """

    def __init__(
        self,
        listen: str,
        add: Callable[[Any, grpc.aio.Server], None],
        servicer: Any,
        name: str,
        security: GrpcSecurity | None = None,
        policy: Mapping[str, Collection[str]] | None = None,
        max_message: int = 4 * 1024 * 1024,
    ) -> None:
        self.listen = listen
        self.services = [name]
        self.security = security or GrpcSecurity.insecure_loopback()
        self.security.check_listen(listen)
        self.health = health.aio.HealthServicer()
        # Tracing first, so that a refused call is traced too.
        self.server = grpc.aio.server(
            interceptors=[*server_interceptors(), RoleCheck(policy or {})],
            options=[("grpc.max_receive_message_length", max_message)],  # decoded before we see it
        )
        add(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = 0

    async def start(self) -> None:
        """Bind and serve; OSError naming the address when it cannot bind."""
        host, port = parse_hostport(self.listen)
        try:
            self.port = self.security.add_port(
                self.server, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            )
        except RuntimeError:
            raise OSError(f"cannot listen on {self.listen} (address in use or not ours?)") from None
        await self.server.start()
        for name in ["", *self.services]:
            await self.health.set(name, SERVING)

    async def set_serving(self, serving: bool) -> None:
        for name in self.services:
            await self.health.set(name, SERVING if serving else NOT_SERVING)

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def run_until_signal(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> None:
    """Start, wait for SIGINT or SIGTERM, stop."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, done.set)
    await start()
    try:
        await done.wait()
    finally:
        await stop()
