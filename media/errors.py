"""Errors of the media relay, local and remote kept apart.

A `LocalError` is a problem this process found (bad request, no free ports, draining): the caller
can fix or retry it elsewhere, and gRPC answers it with a precise status code. A `RemoteError` is a
failure of another process we talked to (the control service, a relay worker that died): it says
nothing about the request itself.
"""

from __future__ import annotations


class MediaError(Exception):
    """Base of every error raised by trunkline.media."""


class LocalError(MediaError):
    """A request this process refuses."""


class InvalidRequest(LocalError):
    """A field of the request is wrong (bad address, unsupported crypto suite, bad session id)."""


class SessionNotFound(LocalError):
    """No session with that id."""


class SessionExists(LocalError):
    """A session with that id exists already."""


class PortsExhausted(LocalError):
    """The media port range has no free pair left."""


class PortInUse(LocalError):
    """A restored session's ports cannot be bound again (another session or program holds them)."""


class Draining(LocalError):
    """The relay is draining and accepts no new sessions."""


class NoMediaAddress(LocalError):
    """The relay has no usable address to write into SDP (its Node gives none yet)."""


class RemoteError(MediaError):
    """Another process failed: a relay worker, or the control service."""


# Codes a worker process sends back over its pipe, and the local errors they stand for.
ERROR_CODES: dict[str, type[LocalError]] = {
    "invalid": InvalidRequest,
    "not_found": SessionNotFound,
    "exists": SessionExists,
    "exhausted": PortsExhausted,
    "in_use": PortInUse,
}
CODE_OF: dict[type[LocalError], str] = {cls: code for code, cls in ERROR_CODES.items()}
