import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RelayLoad(_message.Message):
    __slots__ = ("capacity", "active_sessions", "draining")
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    capacity: int
    active_sessions: int
    draining: bool
    def __init__(self, capacity: _Optional[int] = ..., active_sessions: _Optional[int] = ..., draining: _Optional[bool] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("relay_id", "grpc_address", "media_address", "load")
    RELAY_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    relay_id: str
    grpc_address: str
    media_address: str
    load: RelayLoad
    def __init__(self, relay_id: _Optional[str] = ..., grpc_address: _Optional[str] = ..., media_address: _Optional[str] = ..., load: _Optional[_Union[RelayLoad, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("heartbeat_interval", "heartbeat_timeout")
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval: _duration_pb2.Duration
    heartbeat_timeout: _duration_pb2.Duration
    def __init__(self, heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., heartbeat_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("relay_id", "load")
    RELAY_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    relay_id: str
    load: RelayLoad
    def __init__(self, relay_id: _Optional[str] = ..., load: _Optional[_Union[RelayLoad, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: _Optional[bool] = ...) -> None: ...

class PickRelayRequest(_message.Message):
    __slots__ = ("exclude_relay_ids",)
    EXCLUDE_RELAY_IDS_FIELD_NUMBER: _ClassVar[int]
    exclude_relay_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, exclude_relay_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PickRelayResponse(_message.Message):
    __slots__ = ("relay_id", "grpc_address", "media_address", "load")
    RELAY_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    relay_id: str
    grpc_address: str
    media_address: str
    load: RelayLoad
    def __init__(self, relay_id: _Optional[str] = ..., grpc_address: _Optional[str] = ..., media_address: _Optional[str] = ..., load: _Optional[_Union[RelayLoad, _Mapping]] = ...) -> None: ...

class WatchConfigRequest(_message.Message):
    __slots__ = ("kinds",)
    KINDS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("kind", "namespace", "name", "generation", "json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    generation: int
    json: str
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., generation: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("resources",)
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("type", "resource")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[Change.Type]
        UPSERT: _ClassVar[Change.Type]
        DELETE: _ClassVar[Change.Type]
    TYPE_UNSPECIFIED: Change.Type
    UPSERT: Change.Type
    DELETE: Change.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    type: Change.Type
    resource: Resource
    def __init__(self, type: _Optional[_Union[Change.Type, str]] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...

class ConfigEvent(_message.Message):
    __slots__ = ("revision", "snapshot", "change")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    snapshot: Snapshot
    change: Change
    def __init__(self, revision: _Optional[int] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., change: _Optional[_Union[Change, _Mapping]] = ...) -> None: ...
