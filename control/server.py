"""The control service process: `trunkline control --listen HOST:PORT (-f MANIFESTS... | --all-namespaces |
--namespace NS)`.

The configuration comes from the manifests, where SIGHUP reloads them (a set with problems is refused
and the running configuration kept), or from the Kubernetes API, watched (`kube_source`), as the
operator's Deployment runs it. Watchers get the differences, nobody restarts. With the API as the
source, gRPC opens only once everything has been listed, so no edge starts from a partial snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from trunkline.control.service import POLICY, SERVICE_NAME, ControlService
from trunkline.control.store import ConfigStore, RelayDirectory
from trunkline.control.v1 import control_pb2_grpc
from trunkline.core import grpc_tls, observability, runner
from trunkline.core.grpc_tls import GrpcSecurity
from trunkline.core.http import OpsServer
from trunkline.core.manifests import ManifestProblem
from trunkline.core.net import ConfigError, tcp_listener
from trunkline.core.rpc import GrpcServer

log = logging.getLogger(__name__)


class ControlServer:
    """The Control gRPC service with health checking; `port` is the bound port after start()."""

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        store: ConfigStore | None = None,
        heartbeat_interval: float = 2.0,
        heartbeat_timeout: float = 10.0,
        security: GrpcSecurity | None = None,
    ) -> None:
        self.store = store or ConfigStore()
        self.relays = RelayDirectory(heartbeat_timeout)
        self.service = ControlService(self.store, self.relays, heartbeat_interval)
        self.grpc = GrpcServer(
            listen,
            control_pb2_grpc.add_ControlServicer_to_server,
            self.service,
            SERVICE_NAME,
            security,
            POLICY,
        )

    @property
    def port(self) -> int:
        return self.grpc.port

    async def start(self) -> None:
        await self.grpc.start()

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.grpc.stop(grace)


def _report(problems: Sequence[ManifestProblem]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)


class _Readiness:
    """The Component /readyz asks: ready once gRPC serves (and so the configuration is complete)."""

    name = "control"

    def __init__(self) -> None:
        self.serving = False

    async def start(self) -> None:
        pass

    def ready(self) -> bool:
        return self.serving

    def busy(self) -> int:
        return 0

    async def drain(self) -> None:
        self.serving = False

    async def stop(self) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults come from the environment (the runtime ConfigMap) when it is built."""
    parser = argparse.ArgumentParser(prog="trunkline control", description="Run the control service.")
    parser.add_argument(
        "--listen", default="0.0.0.0:7000", help="gRPC address HOST:PORT (default %(default)s)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", dest="manifests", nargs="+", metavar="PATH", help="manifest files/folders")
    source.add_argument(
        "--all-namespaces", action="store_true", help="watch the Kubernetes API, every namespace"
    )
    source.add_argument(
        "--namespace", metavar="NS", action="append",
        help="watch the Kubernetes API, namespace NS only (repeatable: each of them, with Roles there)",
    )  # fmt: skip
    parser.add_argument(
        "--http-listen",
        default=os.environ.get("TRUNKLINE_HTTP_LISTEN"),
        metavar="HOST:PORT",
        help="serve /healthz, /readyz, /metrics (default: $TRUNKLINE_HTTP_LISTEN, else none)",
    )
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=10.0, help="seconds before a relay is unhealthy"
    )
    grpc_tls.add_arguments(parser)
    observability.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    store = ConfigStore()
    readiness = _Readiness()
    try:
        security = grpc_tls.from_arguments(args, "trunkline control")
        security.check_listen(args.listen)
        observability.configure("control", args)
        http = tcp_listener(args.http_listen, "--http-listen") if args.http_listen else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ops = OpsServer(http, [readiness], CollectorRegistry()) if http else None

    kube = None
    if args.manifests:
        problems = store.load_files(args.manifests)
        if problems:
            _report(problems)
            return 1
    else:
        # Imported here: the kubernetes client is big, and a file-fed control never needs it.
        import kubernetes

        from trunkline.control.kube_source import KubeSource, connect

        try:
            api = connect()
        except kubernetes.config.ConfigException as exc:
            print(f"error: no Kubernetes API to read from (not in a pod, no usable KUBECONFIG): {exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        kube = KubeSource(store, None if args.all_namespaces else args.namespace, api)

    def reload() -> None:
        problems = store.load_files(args.manifests)
        if problems:
            _report(problems)
            log.error("reload refused; the running configuration stays")
        else:
            log.info("configuration reloaded (revision %d)", store.revision)

    async def run() -> None:
        # Made here, not before asyncio.run: a grpc.aio server belongs to the loop it was made in.
        server = ControlServer(
            args.listen, store, heartbeat_timeout=args.heartbeat_timeout, security=security
        )
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        serving = False
        try:
            if ops is not None:
                await ops.start()  # /healthz answers while the first list is still on its way
            if kube is not None:
                kube.start()
                # A signal must end the process even while the API server is out of reach.
                waits = [asyncio.ensure_future(kube.synced.wait()), asyncio.ensure_future(done.wait())]
                _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                if done.is_set():
                    return
            else:
                loop.add_signal_handler(signal.SIGHUP, reload)
            await server.start()
            serving = readiness.serving = True
            print(f"control listening on {args.listen.rpartition(':')[0]}:{server.port}", flush=True)
            await done.wait()
        finally:
            readiness.serving = False
            if serving:
                await server.stop()
            if kube is not None:
                await kube.stop()
            if ops is not None:
                await ops.stop()

    try:
        runner.run(run())
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
