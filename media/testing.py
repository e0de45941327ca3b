"""Test support: RTP parties on 127.0.0.1 and a relay to put between them (tests and bench)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from trunkline.media.server import MediaServer
from trunkline.media.v1 import media_pb2, media_pb2_grpc

HOST = "127.0.0.1"


def rtp_packet(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 0, marker: bool = False) -> bytes:
    return (
        struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        + payload
    )


def pcmu_stream(count: int, ssrc: int, seed: int = 0) -> list[bytes]:
    """`count` 20 ms PCMU packets with distinct pseudo-random 160-byte payloads."""
    return [rtp_packet(1000 + i, 160 * i, ssrc, bytes((seed + i * 7 + j) % 256 for j in range(160)))
            for i in range(count)]  # fmt: skip


async def recvfrom(sock: socket.socket, size: int = 65536) -> tuple[bytes, tuple[str, int]]:
    """The next datagram on a non-blocking socket. (`loop.sock_recvfrom` would do, but uvloop, which
    the processes and the tests run on, does not implement it.)"""
    try:
        return sock.recvfrom(size)
    except BlockingIOError:
        pass
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    while True:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        try:
            return sock.recvfrom(size)
        except BlockingIOError:  # woken without a datagram: wait again
            continue


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class Party:
    """A UDP endpoint standing in for a phone or a carrier."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (HOST, port))

    async def recv(self, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(recvfrom(self.sock), timeout)

    async def recv_all(self, count: int, timeout: float = 3.0) -> list[bytes]:
        return [(await self.recv(timeout))[0] for _ in range(count)]

    async def nothing(self, wait: float = 0.3) -> bool:
        try:
            await self.recv(wait)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def leg(
    party: Party | None, rtcp_mux: bool = False, crypto: media_pb2.Crypto | None = None
) -> media_pb2.LegSpec:
    """The LegSpec of `party` (None: its address is not known yet)."""
    spec = media_pb2.LegSpec(rtcp_mux=rtcp_mux, crypto=crypto)
    if party is not None:
        spec.remote_address, spec.remote_rtp_port = HOST, party.port
    return spec


@asynccontextmanager
async def relay(
    workers: int = 0,
    ports: int = 200,
    inactivity_timeout: float = 60.0,
    min_timeout: float = 0.0,
    **options: Any,
) -> AsyncIterator[tuple[MediaServer, media_pb2_grpc.MediaRelayStub]]:
    """A relay (one engine thread unless `workers` says otherwise) and a stub talking to it. Tests ask
    for short inactivity timeouts, so there is no floor unless `min_timeout` says; `options` go to
    MediaServer.

    The port range depends on the pid, so parallel test runs rarely meet (the pool skips busy ports).
    """
    low = 40000 + (os.getpid() % 100) * 200
    server = MediaServer(
        "127.0.0.1:0", HOST, (low, low + ports - 1), workers=workers, inactivity_timeout=inactivity_timeout,
        min_timeout=min_timeout, **options,
    )  # fmt: skip
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield server, media_pb2_grpc.MediaRelayStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await server.stop(0)
