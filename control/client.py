"""Clients of the Control service: a relay's registration loop, the configuration mirror that edges
and relays run from (snapshot, then changes applied in place; no restart), and the edge's relay picker.

Both run until cancelled and survive a control service that restarts or is unreachable for a while:
transport failures (remote errors) are logged and retried with backoff; a resource this version
cannot parse (a local error) is logged and skipped, never applied half-way. Each takes the process's
`GrpcSecurity` (mTLS; plaintext on loopback by default); a retry opens a new channel, with the
certificate files as they are then (rotated ones included).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from pydantic import ValidationError

from trunkline.control.store import Item, Key, RelayLoad
from trunkline.control.v1 import control_pb2, control_pb2_grpc
from trunkline.core.grpc_tls import GrpcSecurity
from trunkline.core.manifests import ConfigSet
from trunkline.core.models import parse_resource
from trunkline.core.rpc import seconds

__all__ = ["Backoff", "ConfigMirror", "PickedRelay", "RelayLoad", "RelayPicker", "RelayRegistration"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0


class Backoff:
    """Retry delays: 0.2 s doubling up to MAX_BACKOFF, back to the start after a success."""

    def __init__(self) -> None:
        self.delay = 0.0

    def reset(self) -> None:
        self.delay = 0.0

    async def wait(self) -> None:
        self.delay = min(max(self.delay * 2, 0.2), MAX_BACKOFF)
        await asyncio.sleep(self.delay)


def load_message(load: RelayLoad) -> control_pb2.RelayLoad:
    return control_pb2.RelayLoad(
        capacity=load.capacity, active_sessions=load.active_sessions, draining=load.draining
    )


class RelayRegistration:
    """Register a relay, then heartbeat its load at the interval the control service asks for."""

    def __init__(
        self,
        target: str,
        relay_id: str,
        grpc_address: str,
        media_address: str,
        load: Callable[[], RelayLoad],
        security: GrpcSecurity | None = None,
    ) -> None:
        self.target = target
        self.security = security or GrpcSecurity.insecure_loopback()
        self.relay_id = relay_id
        self.grpc_address = grpc_address
        self.media_address = media_address
        self.load = load
        self.registered = asyncio.Event()
        self._stub: control_pb2_grpc.ControlStub | None = None

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            async with self.security.channel(self.target, "control") as channel:
                stub = self._stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
                try:
                    await self._register_and_beat(stub, backoff)
                except grpc.aio.AioRpcError as exc:
                    self.registered.clear()
                    log.warning("control %s: %s %s; retrying", self.target, exc.code().name, exc.details())
                    await backoff.wait()

    async def report_now(self) -> None:
        """Heartbeat at once (e.g. draining started), not at the next interval; best effort."""
        if self._stub is not None and self.registered.is_set():
            try:
                await self._beat(self._stub)
            except grpc.aio.AioRpcError as exc:
                log.warning("control %s: %s; the next heartbeat will tell", self.target, exc.code().name)

    async def _beat(self, stub: control_pb2_grpc.ControlStub) -> bool:
        request = control_pb2.HeartbeatRequest(relay_id=self.relay_id, load=load_message(self.load()))
        response = await stub.Heartbeat(request, timeout=5)
        return bool(response.known)

    async def _register_and_beat(self, stub: control_pb2_grpc.ControlStub, backoff: Backoff) -> None:
        request = control_pb2.RegisterRequest(
            relay_id=self.relay_id,
            grpc_address=self.grpc_address,
            media_address=self.media_address,
            load=load_message(self.load()),
        )
        answer = await stub.Register(request, timeout=5)
        self.registered.set()
        backoff.reset()
        interval = seconds(answer.heartbeat_interval) or 2.0
        while True:
            await asyncio.sleep(interval)
            if not await self._beat(stub):
                log.info("control %s forgot relay %s; registering again", self.target, self.relay_id)
                return


class ConfigMirror:
    """A local copy of the configuration, kept current by WatchConfig.

    `on_change(items)` runs after the snapshot and after each change, with the full current set; a
    reconnect starts again from a fresh snapshot (what was deleted meanwhile disappears).
    """

    def __init__(
        self,
        target: str,
        kinds: Iterable[str] = (),
        on_change: Callable[[dict[Key, Item]], None] | None = None,
        security: GrpcSecurity | None = None,
    ) -> None:
        self.target = target
        self.security = security or GrpcSecurity.insecure_loopback()
        self.kinds = list(kinds)
        self.on_change = on_change
        self.items: dict[Key, Item] = {}
        self.revision = -1
        self.ready = asyncio.Event()  # the first snapshot arrived

    def config_set(self) -> ConfigSet:
        """The mirror in the shape `trunkline.core.manifests.load` returns."""
        config = ConfigSet()
        for item in self.items.values():
            config.add(item)
        return config

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            async with self.security.channel(self.target, "control") as channel:
                stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
                try:
                    async for event in stub.WatchConfig(control_pb2.WatchConfigRequest(kinds=self.kinds)):
                        self.apply(event)
                        backoff.reset()
                    log.warning("control %s ended the config stream; watching again", self.target)
                except grpc.aio.AioRpcError as exc:
                    log.warning(
                        "control %s: %s %s; watching again", self.target, exc.code().name, exc.details()
                    )
                await backoff.wait()

    def apply(self, event: control_pb2.ConfigEvent) -> None:
        """Apply one snapshot or change."""
        if event.HasField("snapshot"):
            fresh: dict[Key, Item] = {}
            for resource in event.snapshot.resources:
                item = self._parse(resource)
                if item is not None:
                    fresh[(resource.kind, resource.namespace, resource.name)] = item
            self.items = fresh
            self.ready.set()
        else:
            resource = event.change.resource
            key = (resource.kind, resource.namespace, resource.name)
            if event.change.type == control_pb2.Change.DELETE:
                self.items.pop(key, None)
            elif (item := self._parse(resource)) is not None:
                self.items[key] = item
        self.revision = event.revision
        if self.on_change is not None:
            self.on_change(self.items)

    @staticmethod
    def _parse(resource: control_pb2.Resource) -> Item | None:
        try:
            return parse_resource(json.loads(resource.json))
        except (KeyError, ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
            log.error(
                "cannot use %s %s/%s from control: %s", resource.kind, resource.namespace, resource.name, exc
            )
            return None


@dataclass(frozen=True)
class PickedRelay:
    relay_id: str
    grpc_address: str  # "host:port" of its MediaRelay service
    media_address: str


class RelayPicker:
    """Asks the control service which relay should carry a new call: PickRelay (healthy, not draining,
    least loaded). The channel is opened at the first pick, inside the running loop."""

    def __init__(self, target: str, timeout: float = 2.0, security: GrpcSecurity | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.security = security or GrpcSecurity.insecure_loopback()
        self._channel: grpc.aio.Channel | None = None
        self._stamp: tuple[int, ...] = ()

    async def pick(self, exclude: Iterable[str] = ()) -> PickedRelay | None:
        """The relay to use, None when control knows none with room; AioRpcError when control fails."""
        if self._channel is not None and self.security.stamp() != self._stamp:
            await self.close()  # rotated certificate files: the next connection presents the new ones
        if self._channel is None:
            self._stamp = self.security.stamp()
            self._channel = self.security.channel(self.target, "control")
        stub = control_pb2_grpc.ControlStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            answer = await stub.PickRelay(
                control_pb2.PickRelayRequest(exclude_relay_ids=list(exclude)), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return PickedRelay(
            answer.relay_id, dialable(answer.grpc_address, answer.media_address), answer.media_address
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def dialable(grpc_address: str, media_address: str) -> str:
    """A relay that listens on every interface registers "0.0.0.0:port": dial its media address."""
    host, _, port = grpc_address.rpartition(":")
    try:
        wildcard = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return grpc_address  # a host name
    if not wildcard or not media_address:
        return grpc_address
    return f"[{media_address}]:{port}" if ":" in media_address else f"{media_address}:{port}"
