"""The media relay process: `trunkline media --listen HOST:PORT --media-listen HOST --media-ports LO-HI
[--advertise SETTING] [--control HOST:PORT] [--redis URL --relay-id ID] [--http-listen HOST:PORT]`.

One MediaServer is the MediaRelay gRPC service (with health checking) in this process, and the packet
engines in worker processes (one per core by default). With --control it registers with the control
service and heartbeats its load there. With --redis it keeps its sessions there and, started again
under the same --relay-id, brings them back on their ports before it serves (see `trunkline.media`).
With --http-listen it serves /healthz, /readyz and /metrics.

--advertise may name the address through the pod or its Node (trunkline.core.media_advertise): the
relay resolves it at start, and until it has a usable one it refuses sessions, is not ready (/readyz
says why), does not register with control, and retries every ADDRESS_RETRY seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trunkline.control.client import RelayLoad, RelayRegistration
from trunkline.core import grpc_tls, observability, runner
from trunkline.core.addresses import MediaAddressPolicy, is_loopback
from trunkline.core.grpc_tls import GrpcSecurity
from trunkline.core.http import OpsServer
from trunkline.core.media_advertise import AdvertiseMode, UnusableAddress
from trunkline.core.media_advertise import parse as parse_advertise
from trunkline.core.net import ConfigError, tcp_listener
from trunkline.core.rpc import GrpcServer, parse_hostport, parse_range, run_until_signal
from trunkline.core.state_redis import RedisTarget, add_redis_arguments, redis_target
from trunkline.media.engine import EngineReport, LatchPolicy
from trunkline.media.errors import LocalError, PortInUse, RemoteError, SessionExists
from trunkline.media.node_address import NodeAddress
from trunkline.media.pool import EnginePool
from trunkline.media.records import LOAD_TIMEOUT, REPORT_INTERVAL, UNAVAILABLE, SessionRecord, SessionRecords
from trunkline.media.service import (
    DEFAULT_INACTIVITY_TIMEOUT,
    DEFAULT_MAX_SESSIONS_PER_CALLER,
    DEFAULT_MIN_INACTIVITY_TIMEOUT,
    MAX_REQUEST_BYTES,
    POLICY,
    SERVICE_NAME,
    MediaRelayService,
    session_stats,
)
from trunkline.media.v1 import media_pb2, media_pb2_grpc

log = logging.getLogger(__name__)

NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a DNS subdomain: safe in a URL path

RESTORE_BIND_WAIT = 2.0  # seconds a restored session waits for its ports (the dead run's engines let go)
ADDRESS_RETRY = 10.0  # seconds between attempts to resolve an unusable advertised address


class MediaServer:
    """The relay: engines + MediaRelay gRPC service. `port` is the bound gRPC port after start().

    workers: engine processes (0: one engine in a thread of this process, for tests and `up`).
    advertise: the address written into SDP, when not the media bind address.
    node_address: resolves the advertised address at start instead (wins over `advertise`).
    redis: keep the sessions there under `relay_id`, which must then be stable across restarts.
    security: mTLS for its gRPC server and its control client (default: plaintext, loopback only).
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
        redis: str | RedisTarget | None = None,
        address_policy: MediaAddressPolicy | None = None,
        min_timeout: float = DEFAULT_MIN_INACTIVITY_TIMEOUT,
        max_sessions_per_caller: int = DEFAULT_MAX_SESSIONS_PER_CALLER,
        security: GrpcSecurity | None = None,
        node_address: NodeAddress | None = None,
    ) -> None:
        if redis and not relay_id:
            raise ValueError("keeping sessions in Redis needs a relay id that stays the same across restarts")
        self.relay_id = relay_id or f"{socket.gethostname()}-{os.getpid()}"
        self.records: SessionRecords | None = None
        if redis:
            target = RedisTarget(redis) if isinstance(redis, str) else redis
            self.records = SessionRecords(target.connect(), self.relay_id)
        self.pool = EnginePool(media_host, *media_ports, workers=workers, policy=policy)
        if address_policy is None:  # a relay on loopback (tests, `up`) serves parties on loopback
            address_policy = MediaAddressPolicy(allow_loopback=is_loopback(media_host))
        self.service = MediaRelayService(
            self.pool, advertise or media_host, inactivity_timeout, self._draining, self.records,
            address_policy, min_timeout, max_sessions_per_caller,
        )  # fmt: skip
        self.node_address = node_address
        if node_address is not None:
            self.service.address_problem = "the advertised address is not resolved yet"
        self.security = security or GrpcSecurity.insecure_loopback()
        self.grpc = GrpcServer(
            listen,
            media_pb2_grpc.add_MediaRelayServicer_to_server,
            self.service,
            SERVICE_NAME,
            self.security,
            POLICY,
            max_message=MAX_REQUEST_BYTES,
        )
        self.control = control
        self.registration: RelayRegistration | None = None
        self.serving = False
        self.restored = 0  # sessions brought back from Redis since start
        self.packets = EngineReport({}, 0)  # totals as of the last engine report
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        return self.grpc.port

    def load(self) -> RelayLoad:
        return RelayLoad(self.pool.capacity, self.pool.active, self.service.draining)

    def ready(self) -> bool:
        """Engines up, gRPC serving, not draining, an address to advertise."""
        return (
            self.serving
            and not self.service.draining
            and self.pool.running()
            and self.service.address_problem is None
        )

    def why_not_ready(self) -> str | None:
        """What /readyz says: the advertised address's problem, when there is one."""
        problem = self.service.address_problem
        return f"no usable media address: {problem}" if problem is not None else None

    async def start(self) -> None:
        """Start engines, bring back this relay's sessions from Redis, then serve gRPC; OSError
        naming the address when the engines or gRPC cannot bind. Redis trouble is logged only."""
        check_bindable(self.pool.host)
        await self.pool.start()
        try:
            if self.records is not None:
                try:
                    await self._restore()
                except UNAVAILABLE as exc:
                    log.warning("cannot read relay %s's sessions from Redis (%s); serving without them "
                                "until it answers", self.relay_id, exc)  # fmt: skip
            await self.grpc.start()
        except BaseException:
            await self.pool.stop()
            raise
        self.serving = True
        self._tasks.append(asyncio.create_task(self._report(), name="engine-reports"))
        if self.records is not None:
            self._tasks.append(asyncio.create_task(self.records.run(self._restore), name="session-records"))
        if self.node_address is not None and not await self._resolve_address():
            await self.grpc.set_serving(False)
            self._tasks.append(asyncio.create_task(self._resolve_until_usable(), name="media-address"))
            return  # registered with control once the address is usable
        self._register()

    async def _resolve_address(self) -> bool:
        """One attempt: True when the advertised address is set, else the problem is logged and shown."""
        assert self.node_address is not None
        try:
            address = await self.node_address.resolve()
        except UnusableAddress as exc:
            if self.service.address_problem != str(exc):
                log.error("relay %s refuses sessions: no usable media address: %s (retrying every %g s)",
                          self.relay_id, exc, ADDRESS_RETRY)  # fmt: skip
            self.service.address_problem = str(exc)
            await self.node_address.report(str(exc))
            return False
        self.service.media_address = address
        self.service.address_problem = None
        log.info("relay %s advertises %s (%s)", self.relay_id, address, self.node_address.spec)
        return True

    async def _resolve_until_usable(self) -> None:
        while True:
            await asyncio.sleep(ADDRESS_RETRY)
            if await self._resolve_address():
                if not self.service.draining:
                    await self.grpc.set_serving(True)
                self._register()
                return

    def _register(self) -> None:
        if self.control:
            host, _ = parse_hostport(self.grpc.listen)
            self.registration = RelayRegistration(
                self.control,
                self.relay_id,
                f"{host}:{self.port}",
                self.service.media_address,
                self.load,
                self.security,
            )
            self._tasks.append(asyncio.create_task(self.registration.run(), name="control-registration"))

    async def stop(self, grace: float | None = 1.0) -> None:
        """End every session (ports freed, SHUTDOWN events, records deleted), then the gRPC server
        and the engines."""
        self.serving = False
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session_id, counters in (await self.pool.stop()).items():
            self.service.ended(session_id)
            self.service.publish(
                media_pb2.SessionEvent(
                    kind=media_pb2.SessionEvent.SHUTDOWN, session_id=session_id, stats=session_stats(counters)
                )
            )
        await self.service.close_watchers()
        await self.grpc.stop(grace)
        if self.records is not None:  # the sessions ended: nothing to restore
            for session_id in list(self.records.live):
                self.records.drop(session_id)
            await self.records.flush_all(timeout=2.0)
            await self.records.close()

    async def _restore(self) -> None:
        """Re-create the sessions the previous run of this relay left in Redis, on their ports.
        Raises one of UNAVAILABLE when Redis does not answer (nothing is restored then)."""
        assert self.records is not None
        records = await asyncio.wait_for(self.records.load(), LOAD_TIMEOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESTORE_BIND_WAIT
        pending = [r for r in records if r.session_id not in self.records.live]
        restored = dropped = 0
        while pending:
            waiting = []
            for record in pending:
                problem = await self._restore_one(record)
                if problem is None:
                    restored += 1
                elif isinstance(problem, PortInUse) and loop.time() < deadline:
                    waiting.append(record)
                elif not isinstance(problem, SessionExists):  # else created anew meanwhile: that one wins
                    log.warning("session %s not restored, record dropped: %s", record.session_id, problem)
                    self.records.drop(record.session_id)
                    dropped += 1
            pending = waiting
            if pending:
                await asyncio.sleep(0.1)
        self.records.loaded = True
        self.restored += restored
        if records:
            log.info("relay %s: %d session(s) restored from Redis on their ports, %d dropped",
                     self.relay_id, restored, dropped)  # fmt: skip

    async def _restore_one(self, record: SessionRecord) -> LocalError | RemoteError | None:
        assert self.records is not None
        a, b = record.legs
        try:
            await self.pool.restore(
                record.session_id, (a.config, b.config), record.timeout, (a.state(), b.state())
            )
        except (LocalError, RemoteError) as exc:
            return exc
        self.records.put(record)  # written again: a fresh TTL
        return None

    async def _report(self) -> None:
        """Every REPORT_INTERVAL: totals for /metrics, and the records of sessions with packets."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            try:
                report = await self.pool.report()
            except RemoteError:
                continue
            self.packets = report
            if self.records is not None:
                self.records.refresh(report.active, set(self.pool.sessions()))

    async def _draining(self) -> None:
        await self.grpc.set_serving(False)
        if self.registration is not None:  # tell control now, not at the next heartbeat
            await self.registration.report_now()


class MediaReadiness:
    """The Component /readyz asks about: the relay (its lifecycle is run by `main`)."""

    name = "media"

    def __init__(self, server: MediaServer) -> None:
        self.server = server

    async def start(self) -> None:
        pass

    def ready(self) -> bool:
        return self.server.ready()

    def why_not_ready(self) -> str | None:
        return self.server.why_not_ready()

    def busy(self) -> int:
        return self.server.pool.active

    async def drain(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class RelayMetrics(Collector):
    """The relay's figures for /metrics, read when scraped (packet totals: as of the last report)."""

    def __init__(self, server: MediaServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        yield GaugeMetricFamily("trunkline_media_sessions", "Sessions on this relay", server.pool.active)
        yield GaugeMetricFamily(
            "trunkline_media_session_capacity", "Sessions the free and used ports allow", server.pool.capacity
        )
        packets = server.packets
        yield CounterMetricFamily(
            "trunkline_media_packets_relayed", "RTP packets sent to a party", packets.relayed_packets
        )
        dropped = CounterMetricFamily(
            "trunkline_media_packets_dropped",
            "Packets dropped: from a source that is not (yet) the party's, malformed, SRTP failure",
            labels=["reason"],
        )
        dropped.add_metric(["source"], packets.dropped_source)
        dropped.add_metric(["malformed"], packets.dropped_malformed)
        dropped.add_metric(["srtp"], packets.dropped_srtp)
        yield dropped
        yield CounterMetricFamily(
            "trunkline_media_sessions_restored", "Sessions brought back from Redis", server.restored
        )
        if server.records is not None:
            yield GaugeMetricFamily(
                "trunkline_media_session_records_pending",
                "Sessions whose record is not written to Redis yet",
                server.records.pending,
            )


def check_bindable(host: str) -> None:
    """Fail at start, with the address in the message, rather than at the first call."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        raise OSError(f"cannot bind media on {host}: {exc.strerror or exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults come from the environment (the runtime ConfigMap) when it is built."""
    parser = argparse.ArgumentParser(prog="trunkline media", description="Run a media relay.")
    parser.add_argument(
        "--listen", default="0.0.0.0:7100", help="gRPC address HOST:PORT (default %(default)s)"
    )
    parser.add_argument("--media-listen", default="127.0.0.1", metavar="HOST", help="address media binds on")
    parser.add_argument("--media-ports", default="20000-20999", metavar="LO-HI", help="media port range")
    parser.add_argument(
        "--advertise", metavar="SETTING",
        help="address written into SDP: an IP address, podIP ($POD_IP), nodeInternalIP, nodeExternalIP or "
        "nodeAnnotation:KEY (of this pod's Node, read from the API) (default: --media-listen)",
    )  # fmt: skip
    parser.add_argument(
        "--node-name", default=os.environ.get("NODE_NAME"),
        help="this relay's Node, for the node-based --advertise settings (default: $NODE_NAME)",
    )  # fmt: skip
    parser.add_argument(
        "--control", metavar="HOST:PORT", default=os.environ.get("TRUNKLINE_CONTROL_ADDRESS"),
        help="control service to register with (default: $TRUNKLINE_CONTROL_ADDRESS)",
    )  # fmt: skip
    parser.add_argument(
        "--relay-id", default=os.environ.get("POD_NAME"),
        help="this relay's name at the control service and in Redis; with --redis it must stay the same "
        "across restarts (default: $POD_NAME, else host name and pid)",
    )  # fmt: skip
    add_redis_arguments(
        parser,
        "keep sessions here, to restore them on the same ports after a restart "
        "(redis://, rediss://, sentinel://; default: env, as the edges)",
    )
    parser.add_argument(
        "--http-listen", default=os.environ.get("TRUNKLINE_HTTP_LISTEN"), metavar="HOST:PORT",
        help="serve /healthz, /readyz, /metrics (default: $TRUNKLINE_HTTP_LISTEN, else none)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="engine processes (one per core)"
    )
    parser.add_argument(
        "--inactivity-timeout", type=float, default=DEFAULT_INACTIVITY_TIMEOUT, metavar="SECONDS"
    )
    parser.add_argument(
        "--min-inactivity-timeout", type=float, default=DEFAULT_MIN_INACTIVITY_TIMEOUT, metavar="SECONDS",
        help="refuse sessions asking for a shorter inactivity timeout, or none (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-sessions-per-caller", type=int, default=DEFAULT_MAX_SESSIONS_PER_CALLER, metavar="N",
        help="sessions one caller (certificate name, else IP) may hold at once (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-loopback-media", action="store_true",
        help="accept loopback remote media addresses (implied when --media-listen is loopback)",
    )  # fmt: skip
    parser.add_argument(
        "--media-deny-cidr", action="append", default=[], metavar="CIDR",
        help="refuse remote media addresses in this network (repeatable; e.g. the pod and service CIDRs)",
    )  # fmt: skip
    observability.add_arguments(parser)
    grpc_tls.add_arguments(parser)
    return parser


def address_policy_of(args: argparse.Namespace) -> MediaAddressPolicy:
    """The remote media addresses the relay accepts; loopback ones when asked or when the relay itself
    listens on loopback (tests, `trunkline up`). ValueError for a bad --media-deny-cidr."""
    return MediaAddressPolicy.build(
        args.allow_loopback_media or is_loopback(args.media_listen), args.media_deny_cidr
    )


def advertise_of(args: argparse.Namespace) -> tuple[str | None, NodeAddress | None]:
    """--advertise as a literal address, or the resolver of a pod- or node-based setting; ValueError
    for a bad setting or node name."""
    if args.advertise is None:
        return None, None
    spec = parse_advertise(args.advertise)
    if spec.mode is AdvertiseMode.ADDRESS:
        return spec.value, None
    if args.node_name is not None and not NODE_NAME.match(args.node_name):
        raise ValueError(f"--node-name {args.node_name[:64]!r} is not a node name")
    pod = (os.environ.get("POD_NAMESPACE", ""), os.environ.get("POD_NAME", ""))
    version = 6 if ":" in args.media_listen else 4
    return None, NodeAddress(
        spec, version, args.node_name, os.environ.get("POD_IP"), pod if all(pod) else None
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ports = parse_range(args.media_ports)
        advertise, node_address = advertise_of(args)
        parse_hostport(args.listen)
        if args.control:
            parse_hostport(args.control)
        address_policy = address_policy_of(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.min_inactivity_timeout < 0 or args.inactivity_timeout < 0:
        parser.error("--inactivity-timeout and --min-inactivity-timeout must not be negative")
    if args.max_sessions_per_caller < 1:
        parser.error("--max-sessions-per-caller must be at least 1")
    try:
        redis = redis_target(args)
    except ValueError as exc:
        parser.error(str(exc))
    if redis is not None and not args.relay_id:
        parser.error("--redis needs --relay-id (or $POD_NAME): a name that stays the same across restarts")
    try:
        observability.configure("media", args)
        security = grpc_tls.from_arguments(args, "trunkline media")
        security.check_listen(args.listen)
        if args.control:
            security.check_target(args.control)
        http = tcp_listener(args.http_listen, "--http-listen") if args.http_listen else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    async def serve() -> None:
        # Built inside the running loop: grpc.aio binds its server to the loop it is created on.
        server = MediaServer(
            args.listen, args.media_listen, ports, max(args.workers, 1), advertise, args.control,
            args.relay_id, args.inactivity_timeout, redis=redis, address_policy=address_policy,
            min_timeout=args.min_inactivity_timeout, max_sessions_per_caller=args.max_sessions_per_caller,
            security=security, node_address=node_address,
        )  # fmt: skip
        ops = None
        if http is not None:
            registry = CollectorRegistry()
            registry.register(RelayMetrics(server))
            ops = OpsServer(http, [MediaReadiness(server)], registry)

        async def start() -> None:
            if ops is not None:  # /healthz answers while sessions are being restored
                await ops.start()
            await server.start()
            print(
                f"media relay listening on {args.listen.rpartition(':')[0]}:{server.port}, "
                f"media {args.media_listen} ports {args.media_ports}",
                flush=True,
            )

        async def stop() -> None:
            if ops is not None:
                ops.draining = True
            await server.stop()
            if ops is not None:
                await ops.stop()

        await run_until_signal(start, stop)

    try:
        runner.run(serve())
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
