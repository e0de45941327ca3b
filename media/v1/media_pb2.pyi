import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionCommands(_message.Message):
    __slots__ = ("commands",)
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[SessionCommand]
    def __init__(self, commands: _Optional[_Iterable[_Union[SessionCommand, _Mapping]]] = ...) -> None: ...

class SessionReplies(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[SessionReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[SessionReply, _Mapping]]] = ...) -> None: ...

class SessionCommand(_message.Message):
    __slots__ = ("id", "traceparent", "create", "update", "delete")
    ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    id: int
    traceparent: str
    create: CreateSessionRequest
    update: UpdateSessionRequest
    delete: DeleteSessionsRequest
    def __init__(self, id: _Optional[int] = ..., traceparent: _Optional[str] = ..., create: _Optional[_Union[CreateSessionRequest, _Mapping]] = ..., update: _Optional[_Union[UpdateSessionRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteSessionsRequest, _Mapping]] = ...) -> None: ...

class SessionReply(_message.Message):
    __slots__ = ("id", "code", "message", "create", "update", "delete")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: int
    message: str
    create: CreateSessionResponse
    update: UpdateSessionResponse
    delete: DeleteSessionsResponse
    def __init__(self, id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., create: _Optional[_Union[CreateSessionResponse, _Mapping]] = ..., update: _Optional[_Union[UpdateSessionResponse, _Mapping]] = ..., delete: _Optional[_Union[DeleteSessionsResponse, _Mapping]] = ...) -> None: ...

class Crypto(_message.Message):
    __slots__ = ("suite", "key")
    SUITE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    suite: str
    key: str
    def __init__(self, suite: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class LegSpec(_message.Message):
    __slots__ = ("remote_address", "remote_rtp_port", "remote_rtcp_port", "rtcp_mux", "crypto", "clock_rate", "want_srtp", "signalling_address")
    REMOTE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_RTP_PORT_FIELD_NUMBER: _ClassVar[int]
    REMOTE_RTCP_PORT_FIELD_NUMBER: _ClassVar[int]
    RTCP_MUX_FIELD_NUMBER: _ClassVar[int]
    CRYPTO_FIELD_NUMBER: _ClassVar[int]
    CLOCK_RATE_FIELD_NUMBER: _ClassVar[int]
    WANT_SRTP_FIELD_NUMBER: _ClassVar[int]
    SIGNALLING_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    remote_address: str
    remote_rtp_port: int
    remote_rtcp_port: int
    rtcp_mux: bool
    crypto: Crypto
    clock_rate: int
    want_srtp: bool
    signalling_address: str
    def __init__(self, remote_address: _Optional[str] = ..., remote_rtp_port: _Optional[int] = ..., remote_rtcp_port: _Optional[int] = ..., rtcp_mux: _Optional[bool] = ..., crypto: _Optional[_Union[Crypto, _Mapping]] = ..., clock_rate: _Optional[int] = ..., want_srtp: _Optional[bool] = ..., signalling_address: _Optional[str] = ...) -> None: ...

class LegAllocation(_message.Message):
    __slots__ = ("address", "rtp_port", "rtcp_port", "crypto")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RTP_PORT_FIELD_NUMBER: _ClassVar[int]
    RTCP_PORT_FIELD_NUMBER: _ClassVar[int]
    CRYPTO_FIELD_NUMBER: _ClassVar[int]
    address: str
    rtp_port: int
    rtcp_port: int
    crypto: Crypto
    def __init__(self, address: _Optional[str] = ..., rtp_port: _Optional[int] = ..., rtcp_port: _Optional[int] = ..., crypto: _Optional[_Union[Crypto, _Mapping]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("session_id", "leg_a", "leg_b", "inactivity_timeout")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LEG_A_FIELD_NUMBER: _ClassVar[int]
    LEG_B_FIELD_NUMBER: _ClassVar[int]
    INACTIVITY_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    leg_a: LegSpec
    leg_b: LegSpec
    inactivity_timeout: _duration_pb2.Duration
    def __init__(self, session_id: _Optional[str] = ..., leg_a: _Optional[_Union[LegSpec, _Mapping]] = ..., leg_b: _Optional[_Union[LegSpec, _Mapping]] = ..., inactivity_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("leg_a", "leg_b")
    LEG_A_FIELD_NUMBER: _ClassVar[int]
    LEG_B_FIELD_NUMBER: _ClassVar[int]
    leg_a: LegAllocation
    leg_b: LegAllocation
    def __init__(self, leg_a: _Optional[_Union[LegAllocation, _Mapping]] = ..., leg_b: _Optional[_Union[LegAllocation, _Mapping]] = ...) -> None: ...

class UpdateSessionRequest(_message.Message):
    __slots__ = ("session_id", "leg_a", "leg_b")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LEG_A_FIELD_NUMBER: _ClassVar[int]
    LEG_B_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    leg_a: LegSpec
    leg_b: LegSpec
    def __init__(self, session_id: _Optional[str] = ..., leg_a: _Optional[_Union[LegSpec, _Mapping]] = ..., leg_b: _Optional[_Union[LegSpec, _Mapping]] = ...) -> None: ...

class UpdateSessionResponse(_message.Message):
    __slots__ = ("leg_a", "leg_b")
    LEG_A_FIELD_NUMBER: _ClassVar[int]
    LEG_B_FIELD_NUMBER: _ClassVar[int]
    leg_a: LegAllocation
    leg_b: LegAllocation
    def __init__(self, leg_a: _Optional[_Union[LegAllocation, _Mapping]] = ..., leg_b: _Optional[_Union[LegAllocation, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: SessionStats
    def __init__(self, stats: _Optional[_Union[SessionStats, _Mapping]] = ...) -> None: ...

class DeleteSessionsRequest(_message.Message):
    __slots__ = ("session_ids",)
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteSessionsResponse(_message.Message):
    __slots__ = ("stats", "not_found")
    class StatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SessionStats
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SessionStats, _Mapping]] = ...) -> None: ...
    STATS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.MessageMap[str, SessionStats]
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stats: _Optional[_Mapping[str, SessionStats]] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSessionStatsRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: SessionStats
    def __init__(self, stats: _Optional[_Union[SessionStats, _Mapping]] = ...) -> None: ...

class DirectionStats(_message.Message):
    __slots__ = ("packets", "bytes", "lost", "jitter_ms", "rtcp_packets")
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    RTCP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    packets: int
    bytes: int
    lost: int
    jitter_ms: float
    rtcp_packets: int
    def __init__(self, packets: _Optional[int] = ..., bytes: _Optional[int] = ..., lost: _Optional[int] = ..., jitter_ms: _Optional[float] = ..., rtcp_packets: _Optional[int] = ...) -> None: ...

class LegStats(_message.Message):
    __slots__ = ("received", "sent", "dropped_unexpected_source", "dropped_malformed", "dropped_srtp", "rtp_peer", "latches")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_UNEXPECTED_SOURCE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_MALFORMED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SRTP_FIELD_NUMBER: _ClassVar[int]
    RTP_PEER_FIELD_NUMBER: _ClassVar[int]
    LATCHES_FIELD_NUMBER: _ClassVar[int]
    received: DirectionStats
    sent: DirectionStats
    dropped_unexpected_source: int
    dropped_malformed: int
    dropped_srtp: int
    rtp_peer: str
    latches: int
    def __init__(self, received: _Optional[_Union[DirectionStats, _Mapping]] = ..., sent: _Optional[_Union[DirectionStats, _Mapping]] = ..., dropped_unexpected_source: _Optional[int] = ..., dropped_malformed: _Optional[int] = ..., dropped_srtp: _Optional[int] = ..., rtp_peer: _Optional[str] = ..., latches: _Optional[int] = ...) -> None: ...

class SessionStats(_message.Message):
    __slots__ = ("leg_a", "leg_b", "age")
    LEG_A_FIELD_NUMBER: _ClassVar[int]
    LEG_B_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    leg_a: LegStats
    leg_b: LegStats
    age: _duration_pb2.Duration
    def __init__(self, leg_a: _Optional[_Union[LegStats, _Mapping]] = ..., leg_b: _Optional[_Union[LegStats, _Mapping]] = ..., age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("active_sessions",)
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    active_sessions: int
    def __init__(self, active_sessions: _Optional[int] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("kind", "session_id", "stats")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[SessionEvent.Kind]
        INACTIVITY_TIMEOUT: _ClassVar[SessionEvent.Kind]
        DRAINED: _ClassVar[SessionEvent.Kind]
        SHUTDOWN: _ClassVar[SessionEvent.Kind]
    KIND_UNSPECIFIED: SessionEvent.Kind
    INACTIVITY_TIMEOUT: SessionEvent.Kind
    DRAINED: SessionEvent.Kind
    SHUTDOWN: SessionEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    kind: SessionEvent.Kind
    session_id: str
    stats: SessionStats
    def __init__(self, kind: _Optional[_Union[SessionEvent.Kind, str]] = ..., session_id: _Optional[str] = ..., stats: _Optional[_Union[SessionStats, _Mapping]] = ...) -> None: ...
