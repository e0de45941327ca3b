"""The media relay process: `trunkline media --listen HOST:PORT --media-listen HOST --media-ports LO-HI
[--control HOST:PORT]`.

One MediaServer is the MediaRelay gRPC service (with health checking) in this process, and the packet
engines in worker processes (one per core by default). With --control it registers with the control
service and heartbeats its load there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence

from trunkline.control.client import RelayLoad, RelayRegistration
from trunkline.core.rpc import GrpcServer, parse_hostport, parse_range, run_until_signal
from trunkline.media.engine import LatchPolicy
from trunkline.media.pool import EnginePool
from trunkline.media.service import DEFAULT_INACTIVITY_TIMEOUT, SERVICE_NAME, MediaRelayService, session_stats
from trunkline.media.v1 import media_pb2, media_pb2_grpc

log = logging.getLogger(__name__)


class MediaServer:
    """The relay: engines + MediaRelay gRPC service. `port` is the bound gRPC port after start().

    workers: engine processes (0: one engine in a thread of this process, for tests and `up`).
    advertise: the address written into SDP, when not the media bind address.
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        media_host: str = "127.0.0.1",
        media_ports: tuple[int, int] = (20000, 20999),
        workers: int = 1,
        advertise: str | None = None,
        control: str | None = None,
        relay_id: str | None = None,
        inactivity_timeout: float = DEFAULT_INACTIVITY_TIMEOUT,
        policy: LatchPolicy | None = None,
    ) -> None:
        self.pool = EnginePool(media_host, *media_ports, workers=workers, policy=policy)
        self.service = MediaRelayService(
            self.pool, advertise or media_host, inactivity_timeout, self._draining
        )
        self.grpc = GrpcServer(
            listen, media_pb2_grpc.add_MediaRelayServicer_to_server, self.service, SERVICE_NAME
        )
        self.control = control
        self.relay_id = relay_id or f"{socket.gethostname()}-{os.getpid()}"
        self.registration: RelayRegistration | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        return self.grpc.port

    def load(self) -> RelayLoad:
        return RelayLoad(self.pool.capacity, self.pool.active, self.service.draining)

    async def start(self) -> None:
        """Start engines and gRPC; OSError naming the address when either cannot bind."""
        check_bindable(self.pool.host)
        await self.pool.start()
        try:
            await self.grpc.start()
        except BaseException:
            await self.pool.stop()
            raise
        if self.control:
            host, _ = parse_hostport(self.grpc.listen)
            self.registration = RelayRegistration(
                self.control, self.relay_id, f"{host}:{self.port}", self.service.media_address, self.load
            )
            self._tasks.append(asyncio.create_task(self.registration.run(), name="control-registration"))

    async def stop(self, grace: float | None = 1.0) -> None:
        """End every session (ports freed, SHUTDOWN events), then the gRPC server and the engines."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session_id, counters in (await self.pool.stop()).items():
            self.service.publish(
                media_pb2.SessionEvent(
                    kind=media_pb2.SessionEvent.SHUTDOWN, session_id=session_id, stats=session_stats(counters)
                )
            )
        self.service.close_watchers()
        await self.grpc.stop(grace)

    async def _draining(self) -> None:
        await self.grpc.set_serving(False)
        if self.registration is not None:  # tell control now, not at the next heartbeat
            await self.registration.report_now()


def check_bindable(host: str) -> None:
    """Fail at start, with the address in the message, rather than at the first call."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        raise OSError(f"cannot bind media on {host}: {exc.strerror or exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trunkline media", description="Run a media relay.")
    parser.add_argument(
        "--listen", default="0.0.0.0:7100", help="gRPC address HOST:PORT (default %(default)s)"
    )
    parser.add_argument("--media-listen", default="127.0.0.1", metavar="HOST", help="address media binds on")
    parser.add_argument("--media-ports", default="20000-20999", metavar="LO-HI", help="media port range")
    parser.add_argument(
        "--advertise", metavar="HOST", help="address written into SDP (default: --media-listen)"
    )
    parser.add_argument("--control", metavar="HOST:PORT", help="control service to register with")
    parser.add_argument("--relay-id", help="id at the control service (default: host name and pid)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="engine processes (one per core)"
    )
    parser.add_argument(
        "--inactivity-timeout", type=float, default=DEFAULT_INACTIVITY_TIMEOUT, metavar="SECONDS"
    )
    args = parser.parse_args(argv)
    try:
        ports = parse_range(args.media_ports)
        parse_hostport(args.listen)
        if args.control:
            parse_hostport(args.control)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        # Built inside the running loop: grpc.aio binds its server to the loop it is created on.
        server = MediaServer(
            args.listen, args.media_listen, ports, max(args.workers, 1), args.advertise, args.control,
            args.relay_id, args.inactivity_timeout,
        )  # fmt: skip

        async def start() -> None:
            await server.start()
            print(
                f"media relay listening on {args.listen.rpartition(':')[0]}:{server.port}, "
                f"media {args.media_listen} ports {args.media_ports}",
                flush=True,
            )

        await run_until_signal(start, server.stop)

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
