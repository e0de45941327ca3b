"""`trunkline up`: the embedded default. Control, edge and media in one process, state in memory
(or in Redis with --redis), fed from manifest files instead of the Kubernetes API.

Everything that can fail from the outside (manifests, ports, certificates) is checked before anything
starts, so a bad start is one readable line and nothing half-started.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from trunkline.core.addresses import MediaAddressPolicy, is_loopback
from trunkline.core.component import Component
from trunkline.core.http import OpsServer
from trunkline.core.logs import event
from trunkline.core.manifests import ConfigSet, load
from trunkline.core.net import (
    ConfigError,
    HostPort,
    bind,
    parse_host,
    parse_hostport,
    parse_port_range,
    server_tls_context,
)
from trunkline.core.runner import run_until_signalled
from trunkline.core.state import MemoryStore
from trunkline.core.state_redis import RedisStore, RedisTarget
from trunkline.core.trunk_defaults import TrunkDefaults
from trunkline.edge.context import EdgeOptions
from trunkline.edge.media import RelayMedia
from trunkline.edge.metrics import EdgeMetrics
from trunkline.edge.server import EdgeComponent, SipSockets
from trunkline.media.server import MediaServer

log = logging.getLogger("trunkline.up")


@dataclass
class UpOptions:
    files: list[str]
    sip_listen: str = "127.0.0.1:5060"
    tls_listen: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    media_listen: str = "127.0.0.1"
    media_ports: str = "20000-20999"
    http_listen: str = "127.0.0.1:8080"
    advertise: str | None = None
    redis: RedisTarget | None = None  # --redis, with --redis-password-file and --redis-ca
    grace: float = 30.0
    cdr: str | None = None
    relay: bool = True  # anchor media on the relay; False: SDP keeps the parties' addresses
    emergency_numbers: frozenset[str] = EdgeOptions.emergency_numbers  # the installation's
    trunk_defaults: TrunkDefaults = field(default_factory=TrunkDefaults)  # --default-channels ...


@dataclass
class Listeners:
    """Sockets bound before anything starts; components take them over."""

    sip: HostPort
    sip_udp: socket.socket
    sip_tcp: socket.socket
    http: socket.socket
    tls: socket.socket | None = None
    tls_context: ssl.SSLContext | None = None
    media_host: str = "127.0.0.1"
    media_ports: tuple[int, int] = (20000, 20999)
    advertise: HostPort | None = None
    all: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in self.all:
            sock.close()


def open_listeners(opts: UpOptions) -> Listeners:
    """Parse every address and bind every socket, or close what was bound and raise ConfigError."""
    sip = parse_hostport(opts.sip_listen, "--sip-listen", default_port=5060)
    http_addr = parse_hostport(opts.http_listen, "--http-listen", default_port=8080)
    media_host = parse_host(opts.media_listen, "--media-listen")
    media_ports = parse_port_range(opts.media_ports, "--media-ports")
    advertise = (
        parse_hostport(opts.advertise, "--advertise", default_port=sip.port) if opts.advertise else None
    )
    tls_addr = parse_hostport(opts.tls_listen, "--tls-listen", default_port=5061) if opts.tls_listen else None
    tls_context = server_tls_context(opts.tls_cert, opts.tls_key) if tls_addr else None
    opened: list[socket.socket] = []
    try:
        udp = bind(sip, socket.SOCK_DGRAM, "--sip-listen")
        opened.append(udp)
        # UDP and TCP share the port number; port 0 means "any", so TCP follows what UDP got.
        sip = HostPort(sip.host, udp.getsockname()[1])
        tcp = bind(sip, socket.SOCK_STREAM, "--sip-listen")
        opened.append(tcp)
        tls = None
        if tls_addr:
            tls = bind(tls_addr, socket.SOCK_STREAM, "--tls-listen")
            opened.append(tls)
        http = bind(http_addr, socket.SOCK_STREAM, "--http-listen")
        opened.append(http)
        # The relay binds its ports later, one per call leg; check now that the address is ours.
        probe = bind(HostPort(media_host, 0), socket.SOCK_DGRAM, "--media-listen")
        probe.close()
    except ConfigError:
        for sock in opened:
            sock.close()
        raise
    return Listeners(
        sip=sip, sip_udp=udp, sip_tcp=tcp, http=http, tls=tls, tls_context=tls_context,
        media_host=media_host, media_ports=media_ports, advertise=advertise, all=opened,
    )  # fmt: skip


class ConfigComponent:
    """The in-process control plane of the embedded default: the validated manifests, in memory."""

    name = "control"

    def __init__(self, config: ConfigSet):
        self.config = config

    async def start(self) -> None:
        event(log, logging.INFO, "configuration loaded", resources=self.config.summary())

    def ready(self) -> bool:
        return True

    def busy(self) -> int:
        return 0

    async def drain(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class MediaComponent:
    """The embedded media relay: one engine process, its gRPC service on a loopback port."""

    name = "media"

    def __init__(self, host: str, ports: tuple[int, int], advertise: str | None) -> None:
        self.server = MediaServer("127.0.0.1:0", host, ports, workers=1, advertise=advertise)
        self._started = False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def start(self) -> None:
        await self.server.start()
        self._started = True
        event(log, logging.INFO, "media relay", ports=f"{self.server.pool.host}", grpc=self.target)

    def ready(self) -> bool:
        return self._started

    def busy(self) -> int:
        return 0  # the edge's calls are the live work; their sessions end with them

    async def drain(self) -> None:
        pass

    async def stop(self) -> None:
        await self.server.stop()


def build_components(
    config: ConfigSet, listeners: Listeners, opts: UpOptions, registry: CollectorRegistry | None = None
) -> list[Component]:
    """The components of one process; the edge's call metrics go on `registry` (what /metrics serves)."""
    sockets = SipSockets(listeners.sip_udp, listeners.sip_tcp, listeners.tls, listeners.tls_context)
    store = RedisStore.from_target(opts.redis) if opts.redis else MemoryStore()
    advertise = listeners.advertise.host if listeners.advertise else None
    media = MediaComponent(listeners.media_host, listeners.media_ports, advertise)
    # On loopback (the usual `up`) the parties' SDP names loopback addresses too.
    policy = MediaAddressPolicy(allow_loopback=is_loopback(listeners.sip.host))
    relay = RelayMedia(lambda: media.target, policy=policy) if opts.relay else None
    metrics = EdgeMetrics(registry or CollectorRegistry())
    options = EdgeOptions(emergency_numbers=opts.emergency_numbers, trunk_defaults=opts.trunk_defaults)
    edge = EdgeComponent(
        config, sockets, listeners.advertise, store, opts.cdr, relay, options=options, metrics=metrics
    )
    return [ConfigComponent(config), media, edge]


async def up(opts: UpOptions, started: asyncio.Event | None = None) -> int:
    config, problems = load(opts.files)
    if problems:
        for problem in problems:
            print(f"trunkline up: {problem}")
        print(f"trunkline up: {len(problems)} problem(s); nothing started")
        return 1
    listeners = open_listeners(opts)
    registry = CollectorRegistry()
    components = build_components(config, listeners, opts, registry)
    for component in components:
        if isinstance(component, EdgeComponent):
            component.register_metrics(registry)
    ops = OpsServer(listeners.http, components, registry)
    host, port = listeners.http.getsockname()[:2]
    event(
        log,
        logging.INFO,
        "http",
        healthz=f"http://{host}:{port}/healthz",
        metrics=f"http://{host}:{port}/metrics",
    )
    try:
        return await run_until_signalled(components, ops, opts.grace, started)
    finally:
        listeners.close()
