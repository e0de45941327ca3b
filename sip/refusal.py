"""The answer to a request the parser refused (a control character, a header over its cap, too many
header lines): RFC 3261 wants a 400 rather than silence, yet there is no `Request` to answer from.

Built from the five headers every response echoes (Via, From, To, Call-ID, CSeq), read leniently but
bounded: only the head's first lines, each echoed value short and free of control characters.
The caller sends it to the packet's real source (never to a Via the peer wrote). Sans-I/O.
"""

from __future__ import annotations

from typing import Final

from trunkline.sip.errors import SipParseError

_COMPACT: Final = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}
_ECHOED: Final = (b"via", b"from", b"to", b"call-id", b"cseq")
_NAMES: Final = {b"via": b"Via", b"from": b"From", b"to": b"To", b"call-id": b"Call-ID", b"cseq": b"CSeq"}
MAX_LINES: Final = 128  # a head longer than this is not worth an answer
MAX_VALUE: Final = 1024


def refusal_for(data: bytes, err: SipParseError) -> bytes | None:
    """The final response to `data` (a request that failed to parse with `err`), or None when it is not
    a request (a response, an ACK: never answered) or the headers to echo are not readable."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n", MAX_LINES)
    first = head[0]
    if first.startswith(b"SIP/") or first.startswith(b"ACK ") or not first.endswith(b" SIP/2.0"):
        return None
    found: dict[bytes, bytes] = {}
    for line in head[1:MAX_LINES]:
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        if not sep or key not in _NAMES or key in found:
            continue
        value = value.strip()
        if len(value) > MAX_VALUE or any((c < 32 and c != 9) or c == 127 for c in value):
            return None
        found[key] = value
    if len(found) < len(_ECHOED):
        return None
    status = b"%d %s" % (err.status, err.reason.encode("ascii", "replace"))
    lines = [b"SIP/2.0 " + status, *(_NAMES[k] + b": " + found[k] for k in _ECHOED), b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"
