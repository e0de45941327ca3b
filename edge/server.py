"""The SIP edge as a component (inside `trunkline up`) and as its own process (`trunkline edge`).

Configuration comes from manifest files (`-f`) or from the control service (`--control`), whose
changes are applied without a restart; state lives in memory or in Redis (`--redis`).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from trunkline.core import emergency, grpc_tls, observability, trunk_defaults
from trunkline.core.addresses import MediaAddressPolicy, is_loopback
from trunkline.core.cdr import CdrSettings
from trunkline.core.cpu_limit import cpu_limit
from trunkline.core.http import OpsServer
from trunkline.core.logs import event
from trunkline.core.manifests import ConfigSet, load
from trunkline.core.net import (
    ConfigError,
    HostPort,
    bind,
    bind_udp_and_tcp,
    client_tls_context,
    parse_hostport,
    server_tls_context,
    tcp_listener,
)
from trunkline.core.runner import run, run_until_signalled
from trunkline.core.state import MemoryStore, StateStore
from trunkline.core.state_redis import add_redis_arguments, redis_target
from trunkline.edge.adoption import incarnation
from trunkline.edge.b2bua import Edge
from trunkline.edge.call import MediaPlane
from trunkline.edge.cdr import CdrSink
from trunkline.edge.context import EdgeOptions
from trunkline.edge.defences import DefenceCollector, SignallingLimits, flood_rules
from trunkline.edge.digest import DigestAuthenticator
from trunkline.edge.directory import Directory
from trunkline.edge.legs import Local
from trunkline.edge.media import RelayMedia
from trunkline.edge.metrics import EdgeMetrics
from trunkline.edge.nonce_keys import NonceKeys
from trunkline.edge.resolver import Resolver
from trunkline.edge.spool import DEFAULT_MAX_BYTES, CdrSpool
from trunkline.edge.upkeep import Upkeep
from trunkline.edge.workers import Supervisor, WorkerPlan, default_edge_id
from trunkline.sip.compiled import COMPILED, compiled_modules
from trunkline.sip.flood import DEFAULT_BYTES, DEFAULT_COOLDOWN, DEFAULT_RATE, Budget
from trunkline.sip.stack import SipStack
from trunkline.sip.transport import (
    DEFAULT_CONNECTIONS_PER_SOURCE,
    DEFAULT_HEADER_DEADLINE,
    DEFAULT_IDLE_TIMEOUT,
)

log = logging.getLogger("trunkline.edge")


@dataclass
class SipSockets:
    udp: socket.socket
    tcp: socket.socket
    tls: socket.socket | None = None
    tls_context: ssl.SSLContext | None = None
    service: tuple[socket.socket, socket.socket] | None = None  # UDP, TCP shared with other edges
    # A worker of `--workers` sends from its own socket (with rport): the peers that answer to the
    # source, not to Via (SIPp, NATs), would otherwise answer to the shared port, hence any worker.
    send_from_service: bool = True

    @property
    def address(self) -> HostPort:
        host, port = self.udp.getsockname()[:2]
        return HostPort(host, port)

    def close(self) -> None:
        for sock in (self.udp, self.tcp, self.tls, *(self.service or ())):
            if sock is not None:
                sock.close()


def own_address(unspecified: str) -> str:
    """This host's address for a socket bound to 0.0.0.0 or ::: the pod's IP (Kubernetes' POD_IP) or
    the address the host name resolves to."""
    if os.environ.get("POD_IP"):
        return os.environ["POD_IP"]
    family = socket.AF_INET6 if ":" in unspecified else socket.AF_INET
    try:
        return str(socket.getaddrinfo(socket.gethostname(), None, family)[0][4][0])
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def open_sip_sockets(listen: HostPort, what: str = "--sip-listen", shared: bool = False) -> SipSockets:
    return SipSockets(*bind_udp_and_tcp(listen, what, shared))


class EdgeComponent:
    name = "edge"

    def __init__(
        self,
        config: ConfigSet,
        sockets: SipSockets,
        advertise: HostPort | None = None,
        store: StateStore | None = None,
        cdr: str | None = None,
        media: MediaPlane | None = None,
        options: EdgeOptions | None = None,
        nonce_secret: bytes | NonceKeys | None = None,
        edge_id: str | None = None,
        resolver: Resolver | None = None,
        tls_client: ssl.SSLContext | None = None,
        metrics: EdgeMetrics | None = None,
        limits: SignallingLimits | None = None,
    ) -> None:
        here = sockets.address
        if ipaddress.ip_address(here.host).is_unspecified:
            # Listening on every address: Via must name one that routes back to this process.
            here = HostPort(own_address(here.host), here.port)
        contact = advertise or here
        self.sockets = sockets
        self.cdr = CdrSink(cdr, CdrSettings.from_env(os.environ))
        options = options or EdgeOptions()
        self.limits = limits or SignallingLimits()
        options.contact_deny = self.limits.contact_deny
        self.stack = SipStack()
        self.stack.transport.tls_client = tls_client or client_tls_context()
        # Before listening: the flood guard and the stream limits stand in front of parsing.
        trunks, carriers = config.trunks.values(), config.carriers.values()
        self.stack.defend(self.limits.stream, self.limits.guard(trunks, carriers))
        self.edge = Edge(
            Directory(config),
            store or MemoryStore(),
            Local(
                here.host,
                here.port,
                contact.host,
                contact.port,
                rport=sockets.service is None or not sockets.send_from_service,
            ),
            self.cdr,
            media,
            options,
            # Edges behind one Service share the secret, so a nonce one issued is good at any other.
            DigestAuthenticator(nonce_secret, nonce_ttl=options.nonce_ttl),
            resolver=resolver,
            owner=incarnation(edge_id) if edge_id else None,  # a restarted process is a new owner
            stack=self.stack,
            metrics=metrics,
        )
        self.edge.metrics.count_flood_drops(self._flood_drops)
        if isinstance(media, RelayMedia) and media.on_inactive is None:
            media.on_inactive = self.edge.end_call  # a relay session gone silent ends its call
        self._listening = False
        self._configured = True  # see expect_configuration
        self._keep_alive: asyncio.Future[None] | None = None
        self.upkeep = Upkeep(self.edge.ctx)  # carrier registration and gateway probes
        self._upkeep: asyncio.Future[None] | None = None

    def expect_configuration(self) -> None:
        """The configuration comes from control: not ready (no calls from the Service) until its first
        snapshot is applied, or an edge just started turns callers away as strangers."""
        self._configured = False

    def reconfigure(self, config: ConfigSet) -> None:
        """Apply a new configuration: calls in progress keep the trunk they started with."""
        self._configured = True
        self.edge.directory = Directory(config)
        guard = self.stack.flood_guard
        if guard is not None:  # new networks, same default budget and counters
            rules = flood_rules(config.trunks.values(), config.carriers.values(), self.limits.flood.cooldown)
            self.stack.set_flood_guard(guard.with_rules(rules))
        event(log, logging.INFO, "configuration applied", resources=config.summary())

    async def start(self) -> None:
        transport = self.stack.transport
        here = self.sockets.address
        service = self.sockets.service
        if service is not None and not self.sockets.send_from_service:
            await self._listen_service(*service)  # first: the UDP socket listened last sends
        await transport.listen_udp(here.host, here.port, sock=self.sockets.udp)
        await transport.listen_stream(here.host, here.port, sock=self.sockets.tcp)
        if self.sockets.tls is not None:
            await transport.listen_stream(here.host, 0, self.sockets.tls_context, sock=self.sockets.tls)
        if service is not None and self.sockets.send_from_service:
            # Peers send to the shared address; we send from it too (the UDP socket listened last is
            # the one sending: a peer or NAT that keeps to the address it first heard from finds any
            # edge there), while Via names our own socket without rport, so that answers to our
            # requests come back to us (RFC 3261 18.2.2), never to another edge behind the address.
            await self._listen_service(*service)
        self._keep_alive = asyncio.ensure_future(self.edge.keep_alive())
        self._upkeep = asyncio.ensure_future(self.upkeep.run())
        self._listening = True
        service = self.sockets.service[0].getsockname()[:2] if self.sockets.service else None
        event(log, logging.INFO, "sip listening", udp_tcp=str(here), tls=bool(self.sockets.tls),
              service=service, edge_id=self.edge.ctx.owner,
              sip_compiled=f"{len(compiled_modules())}/{len(COMPILED)}")  # fmt: skip

    async def _listen_service(self, udp: socket.socket, tcp: socket.socket) -> None:
        host = self.sockets.address.host
        await self.stack.transport.listen_udp(host, 0, sock=udp)
        await self.stack.transport.listen_stream(host, 0, sock=tcp)

    def ready(self) -> bool:
        return self._listening and self._configured

    def why_not_ready(self) -> str | None:
        if not self._configured:
            return "no configuration from control yet"
        return None if self._listening else "not listening yet"

    def _flood_drops(self) -> int:
        """Messages the flood guard dropped (`trunkline_rejections_total{rule="flood"}`)."""
        guard = self.stack.flood_guard
        return guard.counters.dropped_rate + guard.counters.dropped_cooldown if guard is not None else 0

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """The signalling defences' counters (flood guard, refused connections, core failures) on
        /metrics."""
        registry.register(DefenceCollector(lambda: self.stack.transport, lambda: self.stack.core_failures))

    def busy(self) -> int:
        return self.edge.active_calls

    async def drain(self) -> None:
        self.edge.draining = True

    async def stop(self) -> None:
        if self._keep_alive is not None:
            self._keep_alive.cancel()
        if self._upkeep is not None:
            self._upkeep.cancel()
            await self.upkeep.stop()
        await self.stack.close()
        if isinstance(self.edge.media, RelayMedia):
            await self.edge.media.close()
        self.cdr.close()
        if self.edge.ctx.spool is not None:
            self.edge.ctx.spool.close()


async def watch_parent(parent: int, period: float = 1.0) -> None:
    """In a worker: drain (SIGTERM to itself) once the parent is gone, so no worker outlives it."""
    while os.getppid() == parent:
        await asyncio.sleep(period)
    event(log, logging.WARNING, "parent gone: draining", parent=parent)
    os.kill(os.getpid(), signal.SIGTERM)


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults come from the environment (the runtime ConfigMap) when it is built."""
    parser = argparse.ArgumentParser(prog="trunkline edge", description="Run a SIP edge (B2BUA).")
    parser.add_argument("-f", "--filename", dest="files", action="extend", nargs="+", metavar="PATH",
                        help="manifests to run from (instead of --control)")  # fmt: skip
    parser.add_argument("--control", metavar="HOST:PORT", default=os.environ.get("TRUNKLINE_CONTROL_ADDRESS"),
                        help="control service to take the configuration from")  # fmt: skip
    parser.add_argument("--sip-listen", default="0.0.0.0:5060", metavar="HOST:PORT")
    parser.add_argument(
        "--advertise", metavar="HOST[:PORT]", default=os.environ.get("TRUNKLINE_EDGE_ADVERTISE"),
        help="address in Contact: the one every edge answers at (the Service's; default: env)",
    )  # fmt: skip
    parser.add_argument(
        "--service-listen", metavar="HOST:PORT",
        help="also take requests on this address, shared (SO_REUSEPORT) with the other edges on this host: "
        "one address for several edge processes where no Kubernetes Service provides it",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=_at_least_one, metavar="N",
        help="edge processes sharing the SIP ports (SO_REUSEPORT), state in the shared store, which "
        "N > 1 requires (default with --redis: the CPU limit, from affinity and the cgroup quota; else 1)",
    )  # fmt: skip
    parser.add_argument(
        "--worker-ports", type=int, default=0, metavar="FIRST",
        help="with --workers: worker i's own SIP port (UDP, TCP), where answers to its requests come, "
        "is FIRST+i (default: any free port; fixed ones for a network policy)",
    )  # fmt: skip
    # Set by the parent of --workers for each worker, not by people.
    parser.add_argument("--http-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tls-listen", metavar="HOST:PORT", help="also take SIP over TLS here")
    parser.add_argument("--tls-cert", metavar="PATH", help="PEM certificate chain for --tls-listen")
    parser.add_argument("--tls-key", metavar="PATH", help="PEM private key for --tls-listen")
    parser.add_argument("--tls-ca", metavar="PATH",
                        help="CA bundle to verify TLS targets with (default: the system's)")  # fmt: skip
    parser.add_argument("--dns", action="append", metavar="HOST:PORT",
                        help="nameserver for RFC 3263 (repeatable; default: the system's)")  # fmt: skip
    parser.add_argument("--edge-id", default=os.environ.get("POD_NAME"),
                        help="this edge's name in the shared store (default: host name and pid)")  # fmt: skip
    parser.add_argument("--http-listen", default=os.environ.get("TRUNKLINE_HTTP_LISTEN", "127.0.0.1:8080"))
    add_redis_arguments(parser, "shared store: redis://, rediss://, sentinel:// (default: env)")
    parser.add_argument(
        "--media-relay", metavar="HOST:PORT",
        help="anchor media on this relay's gRPC service (default with --control: the relay control picks, "
        "per call)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-loopback-media", action="store_true",
        help="accept loopback media addresses in SDP (implied when --sip-listen is loopback)",
    )  # fmt: skip
    parser.add_argument(
        "--media-deny-cidr", action="append", default=[], metavar="CIDR",
        help="answer 488 to SDP naming a media address in this network (repeatable; e.g. the pod and "
        "service CIDRs)",
    )  # fmt: skip
    parser.add_argument("--relay-lost-after", type=float, default=20.0, metavar="SECONDS",
                        help="end the calls of a relay unreachable this long (default: 20)")  # fmt: skip
    parser.add_argument("--cdr", metavar="PATH", help="append call records (JSON lines); '-' for stdout")
    parser.add_argument(
        "--cdr-spool", metavar="DIR",
        help="keep call ends the store did not take in this directory until it does, replayed at start "
        "(a volume that outlives the process: Kubernetes' emptyDir; docs/cdr.md)",
    )  # fmt: skip
    parser.add_argument("--cdr-spool-max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="BYTES",
                        help="the spool's size cap; past it the oldest ends are dropped")  # fmt: skip
    parser.add_argument("--test-pause-at-cdr", choices=["before", "after"], help=argparse.SUPPRESS)
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument(
        "--unready-before-drain", type=float, default=0.0, metavar="SECONDS",
        help="on a stop signal, fail /readyz this long while still taking new calls, then refuse them "
        "(503) and drain: a Service stops sending here before any call is refused (default: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--max-call-duration", type=float, default=EdgeOptions.max_duration, metavar="SECONDS",
        help="end answered calls (BYE both ways) after this long (default: 4 hours)",
    )  # fmt: skip
    parser.add_argument(
        "--nonce-secret-file", metavar="PATH", default=os.environ.get("TRUNKLINE_NONCE_SECRET_FILE"),
        help="keys every edge of an installation shares, to sign digest nonces: one per line, newest "
        "first (it signs, all verify); re-read when the file changes, for rotation (docs/security.md)",
    )  # fmt: skip
    # Signalling defences (docs/security.md): parsed here, handed to the stack as `SignallingLimits`.
    parser.add_argument(
        "--flood-rate", type=_positive, default=DEFAULT_RATE, metavar="MSG/S",
        help="messages/s per source (IPv6: per /64) before it is ignored (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--flood-bytes", type=_positive, default=DEFAULT_BYTES, metavar="BYTES/S",
        help="bytes/s per source before it is ignored (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--flood-cooldown", type=_positive, default=DEFAULT_COOLDOWN, metavar="SECONDS",
        help="how long a source over budget is ignored (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-connections-per-source", type=int, default=DEFAULT_CONNECTIONS_PER_SOURCE, metavar="N",
        help="TCP/TLS connections one source address (IPv6: /64) may hold (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--header-deadline", type=_positive, default=DEFAULT_HEADER_DEADLINE, metavar="SECONDS",
        help="close a TCP/TLS connection whose message (or handshake) is not complete in this long "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--idle-timeout", type=_positive, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
        help="close TCP/TLS connections idle this long (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--contact-deny", action="append", default=[], metavar="CIDR",
        help="refuse REGISTER Contacts inside this network, e.g. the pod and service CIDRs (repeatable)",
    )  # fmt: skip
    parser.add_argument("--log-level", default=os.environ.get("TRUNKLINE_LOG_LEVEL", "INFO"))
    emergency.add_arguments(parser)
    trunk_defaults.add_arguments(parser)
    grpc_tls.add_arguments(parser)
    observability.add_arguments(parser)
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def signalling_limits(args: argparse.Namespace) -> SignallingLimits:
    """The defences' settings from the flags (errors raise ConfigError)."""
    try:
        return SignallingLimits.build(
            flood=Budget(args.flood_rate, args.flood_bytes, args.flood_cooldown),
            max_connections_per_source=args.max_connections_per_source,
            header_deadline=args.header_deadline,
            idle_timeout=args.idle_timeout,
            contact_deny=args.contact_deny,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        observability.configure("edge", args, args.log_level)
        plan = worker_plan(args, list(sys.argv[2:] if argv is None else argv))
        if plan is not None:
            return run(Supervisor(plan, tcp_listener(args.http_listen, "--http-listen")).run())
        return run(_serve(args))
    except ConfigError as exc:
        print(f"trunkline edge: {exc}")
        return 1


def worker_plan(args: argparse.Namespace, argv: list[str]) -> WorkerPlan | None:
    """The workers to run (`--workers`, by default the CPU limit when a shared store is given), or
    None for one edge in this process. Workers share calls through the store: N > 1 needs one."""
    try:
        shared = redis_target(args) is not None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    count = args.workers
    if count is None:
        # A worker, or an edge already sharing an address with others, is one process.
        alone = args.worker_of is not None or args.service_listen
        count = cpu_limit() if shared and not alone else 1
    if count == 1:
        return None
    if not shared:
        raise ConfigError(
            f"--workers {count}: workers carry each other's calls through a shared store; give --redis "
            "(or TRUNKLINE_REDIS_URL), or run one worker (--workers 1)"
        )
    if args.service_listen:
        raise ConfigError("--service-listen with --workers > 1: the workers already share --sip-listen")
    if not 0 <= args.worker_ports <= 65535 - count:
        raise ConfigError(f"--worker-ports: {args.worker_ports} leaves no room for {count} ports")
    if args.files:  # said once here, rather than by every worker as it dies
        _, problems = load(args.files)
        if problems:
            raise ConfigError("; ".join(str(p) for p in problems))
    listen = parse_hostport(args.sip_listen, "--sip-listen", default_port=5060)
    return WorkerPlan(count, argv, listen, args.edge_id or default_edge_id(), args.worker_ports,
                      args.grace, args.log_level, own_nonce_key=not args.nonce_secret_file,
                      cdr_spool=args.cdr_spool)  # fmt: skip


def media_policy_of(args: argparse.Namespace, sip_host: str) -> MediaAddressPolicy:
    """The media addresses SDP may name: loopback ones when asked or when SIP itself listens on
    loopback (tests, `trunkline up`), none in a --media-deny-cidr (a bad one is a ConfigError)."""
    try:
        loopback = args.allow_loopback_media or is_loopback(sip_host)
        return MediaAddressPolicy.build(loopback, args.media_deny_cidr)
    except ValueError as exc:
        raise ConfigError(f"--media-deny-cidr: {exc}") from None


def open_spool(directory: str, max_bytes: int) -> CdrSpool:
    """The CDR spool in `directory`, with the ends a previous process left loaded (to be replayed)."""
    if max_bytes < 64 * 1024:
        raise ConfigError("--cdr-spool-max-bytes: at least 65536")
    try:
        spool = CdrSpool(Path(directory), max_bytes)
        left = spool.load()
    except OSError as exc:
        raise ConfigError(f"--cdr-spool {directory}: {exc.strerror or exc}") from None
    if left:
        event(log, logging.WARNING, "call ends left in the CDR spool, to replay", ends=len(left))
    return spool


async def _serve(args: argparse.Namespace) -> int:
    if not args.files and not args.control:
        raise ConfigError("give manifests (-f) or a control service (--control)")
    numbers = emergency.from_arguments(args)  # before anything is bound
    try:
        redis = redis_target(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    security = None
    if args.control or args.media_relay:  # an edge with neither speaks no gRPC
        security = grpc_tls.from_arguments(args, "trunkline edge")
        if args.control:
            security.check_target(args.control, "--control")
        if args.media_relay:
            security.check_target(args.media_relay, "--media-relay")
    config = ConfigSet()
    if args.files:
        config, problems = load(args.files)
        if problems:
            raise ConfigError("; ".join(str(p) for p in problems))
    listen = parse_hostport(args.sip_listen, "--sip-listen", default_port=5060)
    advertise = (
        parse_hostport(args.advertise, "--advertise", default_port=listen.port, names=True)
        if args.advertise
        else None
    )
    tls_server = server_tls_context(args.tls_cert, args.tls_key) if args.tls_listen else None
    tls_client = client_tls_context(args.tls_ca)
    worker = args.worker_of is not None  # one of `--workers`: the TLS port is shared with the others
    if args.http_fd is not None:  # the parent's socket for this worker: a port it knows
        http = socket.socket(fileno=args.http_fd)
    else:
        http = tcp_listener(args.http_listen, "--http-listen")
    sockets = open_sip_sockets(listen)
    if args.tls_listen:
        try:
            tls_addr = parse_hostport(args.tls_listen, "--tls-listen", default_port=5061)
            tls_sock = bind(tls_addr, socket.SOCK_STREAM, "--tls-listen", shared=worker)
            sockets.tls, sockets.tls_context = tls_sock, tls_server
        except ConfigError:
            sockets.close()
            raise
    if args.service_listen:
        try:
            service = open_sip_sockets(parse_hostport(args.service_listen, "--service-listen", 5060),
                                       "--service-listen", shared=True)  # fmt: skip
        except ConfigError:
            sockets.close()
            raise
        sockets.service = (service.udp, service.tcp)
        sockets.send_from_service = not worker
        if advertise is None:  # Contact names the shared address; when that is every address, ours
            shared_at = service.address
            if ipaddress.ip_address(shared_at.host).is_unspecified:
                shared_at = HostPort(own_address(shared_at.host), shared_at.port)
            advertise = shared_at
    store: StateStore = MemoryStore()
    if redis is not None:
        from trunkline.core.state_redis import RedisStore

        # The CDR stream the installation's exporter reads (the runtime ConfigMap names it).
        store = RedisStore.from_target(redis, cdr_stream=CdrSettings.from_env(os.environ).stream)
    secret = None
    if args.nonce_secret_file:
        try:
            secret = NonceKeys.from_file(args.nonce_secret_file)
        except OSError as exc:
            raise ConfigError(
                f"--nonce-secret-file: cannot read {args.nonce_secret_file}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"--nonce-secret-file: {args.nonce_secret_file}: {exc}") from None
    limits = signalling_limits(args)
    media = None
    policy = media_policy_of(args, listen.host)
    if args.media_relay:
        media = RelayMedia(
            args.media_relay, lost_after=args.relay_lost_after, security=security, policy=policy
        )
    elif args.control:
        from trunkline.control.client import RelayPicker

        picker = RelayPicker(args.control, security=security)
        media = RelayMedia(picker=picker, lost_after=args.relay_lost_after, security=security, policy=policy)
    if args.max_call_duration <= 0:
        raise ConfigError("--max-call-duration: must be more than 0 seconds")
    try:
        defaults = trunk_defaults.from_arguments(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    options = EdgeOptions(
        max_duration=args.max_call_duration,
        emergency_numbers=numbers,
        trunk_defaults=defaults,
        test_pause_at_cdr=args.test_pause_at_cdr or "",
    )
    spool = open_spool(args.cdr_spool, args.cdr_spool_max_bytes) if args.cdr_spool else None
    nameservers = [parse_hostport(d, "--dns", default_port=53) for d in args.dns or []]
    resolver = Resolver([(n.host, n.port) for n in nameservers]) if nameservers else None
    component = EdgeComponent(
        config,
        sockets,
        advertise,
        store,
        args.cdr,
        media,
        options,
        secret,
        args.edge_id,
        resolver,
        tls_client,
        EdgeMetrics(registry := CollectorRegistry()),
        limits,
    )
    component.register_metrics(registry)
    if spool is not None:
        component.edge.ctx.spool = spool
        component.edge.metrics.count_spool(lambda: spool.pending, lambda: spool.dropped)
    mirror_task = None
    if args.control:
        from trunkline.control.client import ConfigMirror

        component.expect_configuration()
        mirror = ConfigMirror(args.control, kinds=["Trunk", "DID", "Carrier", "Secret"],
                              on_change=lambda _: component.reconfigure(mirror.config_set()),
                              security=security)  # fmt: skip
        mirror_task = asyncio.create_task(mirror.run())
    watcher = asyncio.create_task(watch_parent(args.worker_of)) if worker else None
    try:
        ops = OpsServer(http, [component], registry)
        unready = args.unready_before_drain
        return await run_until_signalled(
            [component], ops, args.grace, settle_heap=True, unready_first=unready
        )
    finally:
        for task in (mirror_task, watcher):
            if task is not None:
                task.cancel()
        sockets.close()
