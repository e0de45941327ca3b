"""The control service process: `trunkline control --listen HOST:PORT -f MANIFESTS...`.

The configuration comes from the manifests; SIGHUP reloads them (a set with problems is refused and
the running configuration kept). Watchers get the differences, nobody restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from trunkline.control.rpc import GrpcServer, run_until_signal
from trunkline.control.service import SERVICE_NAME, ControlService
from trunkline.control.store import ConfigStore, RelayDirectory
from trunkline.control.v1 import control_pb2_grpc
from trunkline.core.manifests import Problem

log = logging.getLogger(__name__)


class ControlServer:
    """The Control gRPC service with health checking; `port` is the bound port after start()."""

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        store: ConfigStore | None = None,
        heartbeat_interval: float = 2.0,
        heartbeat_timeout: float = 10.0,
    ) -> None:
        self.store = store or ConfigStore()
        self.relays = RelayDirectory(heartbeat_timeout)
        self.service = ControlService(self.store, self.relays, heartbeat_interval)
        self.grpc = GrpcServer(
            listen, control_pb2_grpc.add_ControlServicer_to_server, self.service, SERVICE_NAME
        )

    @property
    def port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        await self.grpc.start()

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.grpc.stop(grace)


def _report(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trunkline control", description="Run the control service.")
    parser.add_argument(
        "--listen", default="0.0.0.0:7000", help="gRPC address HOST:PORT (default %(default)s)"
    )
    parser.add_argument(
        "-f", dest="manifests", nargs="+", required=True, metavar="PATH", help="manifest files/folders"
    )
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=10.0, help="seconds before a relay is unhealthy"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    server = ControlServer(args.listen, heartbeat_timeout=args.heartbeat_timeout)
    problems = server.store.load_files(args.manifests)
    if problems:
        _report(problems)
        return 1

    def reload() -> None:
        problems = server.store.load_files(args.manifests)
        if problems:
            _report(problems)
            log.error("reload refused; the running configuration stays")
        else:
            log.info("configuration reloaded (revision %d)", server.store.revision)

    async def start() -> None:
        await server.start()
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
        print(f"control listening on {args.listen.rpartition(':')[0]}:{server.port}", flush=True)

    try:
        asyncio.run(run_until_signal(start, server.stop))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
