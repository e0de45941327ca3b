"""The Control gRPC service (trunkline.control.v1): relay directory and configuration watch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from trunkline.control.store import (
    ConfigStore,
    Entry,
    RelayDirectory,
    RelayLoad,
    WatcherOverflow,
    check_kinds,
)
from trunkline.control.v1 import control_pb2, control_pb2_grpc
from trunkline.core.grpc_auth import caller, refuse
from trunkline.core.rpc import duration

SERVICE_NAME = "trunkline.control.v1.Control"
# Who may call what (mTLS roles, docs/security.md): relays register and heartbeat (as themselves, see
# `_check_relay`), edges pick relays, both watch the configuration (Secrets: edges only).
POLICY = {
    f"/{SERVICE_NAME}/Register": {"relay"},
    f"/{SERVICE_NAME}/Heartbeat": {"relay"},
    f"/{SERVICE_NAME}/PickRelay": {"edge"},
    f"/{SERVICE_NAME}/WatchConfig": {"edge", "relay"},
}
SECRET_READERS = {"edge"}


def resource_message(entry: Entry) -> control_pb2.Resource:
    return control_pb2.Resource(
        kind=entry.kind,
        namespace=entry.namespace,
        name=entry.name,
        generation=entry.generation,
        json=entry.json,
    )


def relay_load(message: control_pb2.RelayLoad) -> RelayLoad:
    return RelayLoad(message.capacity, message.active_sessions, message.draining)


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, store: ConfigStore, relays: RelayDirectory, heartbeat_interval: float = 2.0) -> None:
        self.store = store
        self.relays = relays
        self.heartbeat_interval = heartbeat_interval

    @staticmethod
    async def _check_relay(context: grpc.aio.ServicerContext, relay_id: str) -> None:
        """A relay speaks only for the relay id its certificate names (or its wildcard covers)."""
        identity = caller(context)
        if identity is not None and not identity.speaks_for(relay_id):
            await refuse(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"the certificate of relay {identity.id!r} may not speak for relay {relay_id!r}",
            )

    async def Register(
        self, request: control_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.RegisterResponse:
        if not request.relay_id or not request.grpc_address:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "relay_id and grpc_address are required")
        await self._check_relay(context, request.relay_id)
        self.relays.register(
            request.relay_id, request.grpc_address, request.media_address, relay_load(request.load)
        )
        return control_pb2.RegisterResponse(
            heartbeat_interval=duration(self.heartbeat_interval),
            heartbeat_timeout=duration(self.relays.timeout),
        )

    async def Heartbeat(
        self, request: control_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.HeartbeatResponse:
        await self._check_relay(context, request.relay_id)
        return control_pb2.HeartbeatResponse(
            known=self.relays.heartbeat(request.relay_id, relay_load(request.load))
        )

    async def PickRelay(
        self, request: control_pb2.PickRelayRequest, context: grpc.aio.ServicerContext
    ) -> control_pb2.PickRelayResponse:
        relay = self.relays.pick(request.exclude_relay_ids)
        if relay is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no healthy media relay with free capacity")
        assert relay is not None  # abort raises
        load = relay.load
        return control_pb2.PickRelayResponse(
            relay_id=relay.relay_id,
            grpc_address=relay.grpc_address,
            media_address=relay.media_address,
            load=control_pb2.RelayLoad(
                capacity=load.capacity, active_sessions=load.active_sessions, draining=load.draining
            ),
        )

    async def WatchConfig(
        self, request: control_pb2.WatchConfigRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[control_pb2.ConfigEvent]:
        try:
            kinds = check_kinds(request.kinds)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        identity = caller(context)
        if "Secret" in kinds and identity is not None and identity.role not in SECRET_READERS:
            await refuse(
                context, grpc.StatusCode.PERMISSION_DENIED, f"Secrets are for edges, not {identity.role}s"
            )
        watch, revision, snapshot = self.store.watch(kinds)
        try:
            yield control_pb2.ConfigEvent(
                revision=revision,
                snapshot=control_pb2.Snapshot(resources=[resource_message(e) for e in snapshot]),
            )
            while True:
                change = await watch.next()
                kind = control_pb2.Change.DELETE if change.deleted else control_pb2.Change.UPSERT
                yield control_pb2.ConfigEvent(
                    revision=change.revision,
                    change=control_pb2.Change(type=kind, resource=resource_message(change.entry)),
                )
        except WatcherOverflow as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))
        finally:
            self.store.unwatch(watch)
