"""Protocol errors.

`SipParseError` is a *remote* protocol error: the peer sent something we cannot accept. It carries the
status (and reason) to answer a request with; for a broken response the caller simply drops it.
`LocalProtocolError` means our own code misused the API (wrong state, missing header when building).
"""

from __future__ import annotations


class SipError(Exception):
    """Base class of every error raised by trunkline.sip."""


class SipParseError(SipError):
    """The remote peer sent a malformed or unacceptable message."""

    def __init__(self, reason: str = "Bad Request", status: int = 400) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class LocalProtocolError(SipError):
    """Our side tried something the protocol (or this API) does not allow."""
