"""SIP messages (RFC 3261 sections 7, 20, 25): lazy parsing, mutation, serialization, stream framing.

Parsing splits the header section into lines once and keeps each value as its raw (unfolded) string;
a structured view (`Via`, `NameAddr`, `CSeq`...) is built only when asked for and cached. Once built,
the structures *are* the header values: mutate them in place and `to_bytes()` writes the change.

    generic-message  =  start-line *message-header CRLF [ message-body ]
    start-line       =  Request-Line / Status-Line
    Request-Line     =  Method SP Request-URI SP SIP-Version CRLF
    Status-Line      =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
    message-header   =  field-name HCOLON field-value CRLF     (LWS = [*WSP CRLF] 1*WSP folds lines)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar, cast

from trunkline.sip.errors import LocalProtocolError, SipParseError
from trunkline.sip.grammar import is_token, split_top
from trunkline.sip.headers import (
    LIST_HEADERS,
    ContentType,
    CSeq,
    NameAddr,
    Via,
    display_name,
    header_key,
    parse_content_type,
    parse_cseq,
    parse_int,
    parse_name_addr,
    parse_via,
)
from trunkline.sip.uri import SipUri, TelUri, Uri, parse_uri

MAX_MESSAGE_SIZE: Final = 65536
# Caps on the header section (docs/security.md): checked on the raw text before any line is split, so
# a hostile message costs a few C-level scans, not thousands of header objects.
MAX_HEADER_LINES: Final = 96  # header lines after the start line (folded continuations count)
MAX_LINE_LENGTH: Final = 4096  # bytes per line, start line included
SIP_VERSION: Final = "SIP/2.0"

T = TypeVar("T")

REASONS: Final = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip

_FOLD_RE = re.compile(r"\r\n[ \t]+")
# Control characters that may appear in a header section: none but HTAB, and CR LF only as a pair
# (all the CRs and LFs deleted with the others must be exactly the CRLF pairs).
_CTL_BYTES: Final = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.IGNORECASE)
_METHODS: Final = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "UPDATE", "INFO", "PRACK", "SUBSCRIBE",
     "NOTIFY", "REFER", "MESSAGE", "PUBLISH")
)  # fmt: skip
# Header names as written that are known to be valid, with their key: most lines skip the name checks.
_VALID_NAMES: dict[str, str] = {}
_SPELLED: dict[str, str] = {}  # valid names given to add() -> how the line is written
_MAX_VALID_NAMES: Final = 512


class Message:
    """Common part of `Request` and `Response`: ordered header fields and a body.

    Header access is by name, case-insensitive, compact or long form (`msg.get("i")` is Call-ID).
    """

    __slots__ = ("_body", "_cache", "_keys", "_names", "_values", "_wire")

    def __init__(self, headers: Iterable[tuple[str, object]] = (), body: bytes = b"") -> None:
        self._names: list[str] = []
        self._keys: list[str] = []
        self._values: list[object] = []  # raw str, or the parsed structure once asked for
        self._cache: dict[str, Any] = {}
        self._body = b""
        self._wire = 0  # bytes when last parsed or written (0: never)
        for name, value in headers:
            self.add(name, value)
        if body:
            self.body = body

    # -- generic header access ------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return header_key(name) in self._keys

    def headers(self) -> list[tuple[str, str]]:
        """Every header line as (name as written, value), in order."""
        return [(n, str(v)) for n, v in zip(self._names, self._values, strict=True)]

    def get(self, name: str) -> str | None:
        """First value of a header as a string (the whole line for non-list headers), or None."""
        key = header_key(name)
        keys = self._keys
        return str(self._values[keys.index(key)]) if key in keys else None

    def get_all(self, name: str) -> list[str]:
        """All values of a header; list headers (Via, Contact, Allow...) are split at top-level commas."""
        key = header_key(name)
        out: list[str] = []
        if key not in self._keys:
            return out
        split = key in LIST_HEADERS
        for k, v in zip(self._keys, self._values, strict=True):
            if k == key:
                if split and isinstance(v, str):
                    out += [p.strip(" \t") for p in split_top(v, ",")]
                else:
                    out.append(str(v))
        return out

    def add(self, name: str, value: object, *, first: bool = False) -> None:
        """Append a header line (or insert it before the others of that name with `first`)."""
        key = header_key(name)
        spelled = _SPELLED.get(name)
        if spelled is None:
            if not _NAME_RE.match(name):
                raise LocalProtocolError(f"invalid header name {name!r}")
            spelled = display_name(key) if len(name) == 1 else name
            if len(_SPELLED) < _MAX_VALID_NAMES:
                _SPELLED[name] = spelled
        keys = self._keys
        if first and key in keys:
            pos = keys.index(key)
            self._names.insert(pos, spelled)
            keys.insert(pos, key)
            self._values.insert(pos, value)
        else:
            self._names.append(spelled)
            keys.append(key)
            self._values.append(value)
        self._cache.pop(key, None)

    def remove(self, name: str) -> int:
        """Remove every line of a header; returns the position it had (or the end)."""
        key = header_key(name)
        pos = len(self._keys)
        if key not in self._keys:
            self._cache.pop(key, None)
            return pos
        for i in range(len(self._keys) - 1, -1, -1):
            if self._keys[i] == key:
                del self._names[i], self._keys[i], self._values[i]
                pos = i
        self._cache.pop(key, None)
        return pos

    def _append(self, name: str, key: str, value: object) -> None:
        self._names.append(name)
        self._keys.append(key)
        self._values.append(value)

    def set(self, name: str, *values: object) -> None:
        """Replace a header by the given value(s), keeping its place."""
        key = header_key(name)
        pos = self.remove(name)
        spelled = display_name(key)
        for i, v in enumerate(values):
            self._names.insert(pos + i, spelled)
            self._keys.insert(pos + i, key)
            self._values.insert(pos + i, v)

    def _list(self, key: str, parser: Callable[[str], T]) -> list[T]:
        """Parse every value of a list header once; the fields then hold the parsed objects."""
        cached = self._cache.get(key)
        if cached is not None:
            return cast(list[T], cached)
        keys = self._keys
        count = keys.count(key)
        if count == 1:  # the usual case: one line, often one value
            i = keys.index(key)
            v = self._values[i]
            if not isinstance(v, str):
                result = [cast(T, v)]
            elif "," not in v and '"' not in v:  # split_top would return [v]
                obj = parser(v)
                self._values[i] = obj
                result = [obj]
            else:
                result = self._expand(key, parser)
        elif count:
            result = self._expand(key, parser)
        else:
            result = []
        self._cache[key] = result
        return result

    def _expand(self, key: str, parser: Callable[[str], T]) -> list[T]:
        """Parse every line of a list header, one field per value (a line with commas becomes several)."""
        idx = [i for i, k in enumerate(self._keys) if k == key]
        per_field: list[list[T]] = []
        for i in idx:
            v = self._values[i]
            per_field.append([parser(p) for p in split_top(v, ",")] if isinstance(v, str) else [cast(T, v)])
        for i, objs in reversed(list(zip(idx, per_field, strict=True))):
            self._names[i : i + 1] = [self._names[i]] * len(objs)
            self._keys[i : i + 1] = [key] * len(objs)
            self._values[i : i + 1] = objs
        return [o for objs in per_field for o in objs]

    def _single(self, key: str, parser: Callable[[str], T]) -> T | None:
        cached = self._cache.get(key)
        if cached is not None:
            return cast(T, cached)
        keys = self._keys
        if key not in keys:  # (not index's ValueError: responses have no Max-Forwards, read on each)
            return None
        i = keys.index(key)
        if keys.count(key) > 1:
            raise SipParseError(f"Bad Request: more than one {display_name(key)}")
        v = self._values[i]
        obj = parser(v) if isinstance(v, str) else cast(T, v)
        self._values[i] = obj
        self._cache[key] = obj
        return obj

    def _required(self, key: str, parser: Callable[[str], T]) -> T:
        obj = self._single(key, parser)
        if obj is None:
            raise SipParseError(f"Bad Request: missing {display_name(key)}")
        return obj

    # -- typed views ------------------------------------------------------------------------------
    # Each looks in the cache first: they are read many times per message (keys, tags, routing).
    @property
    def via(self) -> list[Via]:
        cached = self._cache.get("via")
        return cast(list[Via], cached) if cached is not None else self._list("via", parse_via)

    @property
    def top_via(self) -> Via:
        vias = self._cache.get("via") or self.via
        if not vias:
            raise SipParseError("Bad Request: missing Via")
        return cast(Via, vias[0])

    @property
    def from_(self) -> NameAddr:
        return self._cache.get("from") or self._required("from", parse_name_addr)

    @property
    def to(self) -> NameAddr:
        return self._cache.get("to") or self._required("to", parse_name_addr)

    @property
    def call_id(self) -> str:
        return self._cache.get("call-id") or self._required("call-id", _parse_call_id)

    @property
    def cseq(self) -> CSeq:
        return self._cache.get("cseq") or self._required("cseq", parse_cseq)

    @property
    def max_forwards(self) -> int | None:
        return self._single("max-forwards", _parse_max_forwards)

    @property
    def contact(self) -> list[NameAddr]:
        cached = self._cache.get("contact")
        return cast(list[NameAddr], cached) if cached is not None else self._list("contact", parse_name_addr)

    @property
    def route(self) -> list[NameAddr]:
        return self._list("route", parse_name_addr)

    @property
    def record_route(self) -> list[NameAddr]:
        return self._list("record-route", parse_name_addr)

    @property
    def content_type(self) -> ContentType | None:
        return self._single("content-type", parse_content_type)

    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = bytes(value)
        self.set("Content-Length", str(len(self._body)))

    # -- checks and serialization -----------------------------------------------------------------
    def validate(self) -> None:
        """Parse the headers every element relies on (RFC 3261 8.2.2 / 8.1.3.3); raise SipParseError.

        Max-Forwards may be absent (RFC 2543 peers, RFC 4475 3.4.1).
        """
        if not self.via:
            raise SipParseError("Bad Request: missing Via")
        self.from_, self.to, self.call_id, self.cseq, self.max_forwards  # noqa: B018
        self.contact, self.route, self.record_route  # noqa: B018

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        lines = [self.start_line()]
        lines += [f"{n}: {v}" for n, v in zip(self._names, self._values, strict=True)]
        if "content-length" not in self._keys:
            lines.append(f"Content-Length: {len(self._body)}")
        lines += ("", "")
        data = "\r\n".join(lines).encode("utf-8", "surrogateescape") + self._body
        self._wire = len(data)
        return data

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def wire_size(self) -> int:
        """`len(self.to_bytes())` without writing the message (a traced call's events give each
        message's size: about a tenth of what tracing cost per call when it serialized them)."""
        size = _utf8_len(self.start_line()) + 4 + len(self._body)  # CRLF after it, CRLF before the body
        for name, value in zip(self._names, self._values, strict=True):
            size += _utf8_len(name) + _utf8_len(value if type(value) is str else str(value)) + 4
        if "content-length" not in self._keys:
            size += len(f"Content-Length: {len(self._body)}\r\n")
        return size

    def last_wire_size(self) -> int:
        """The size of the bytes this message was last parsed from or written to (what crossed the
        wire, for a traced message's event: known without writing it again), else `wire_size()`."""
        return self._wire or self.wire_size()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.start_line()!r}>"


class Request(Message):
    __slots__ = ("_uri", "method")

    def __init__(
        self,
        method: str,
        uri: Uri | str,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
    ) -> None:
        if not is_token(method):
            raise LocalProtocolError(f"invalid method {method!r}")
        self.method = method
        self._uri: Uri | str = uri
        super().__init__(headers, body)

    @property
    def uri(self) -> Uri:
        if isinstance(self._uri, str):
            self._uri = parse_uri(self._uri)
        return self._uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri = value

    def start_line(self) -> str:
        return f"{self.method} {self._uri} {SIP_VERSION}"

    def validate(self) -> None:
        """As `Message.validate`, plus the request-only rules (RFC 3261 8.2.1, 8.2.2, 16.3)."""
        super().validate()
        if self.cseq.method != self.method:
            raise SipParseError("Bad Request: CSeq method does not match the request method")
        uri = self.uri
        if not isinstance(uri, SipUri | TelUri):
            raise SipParseError("Unsupported URI Scheme", 416)
        if isinstance(uri, SipUri) and uri.headers:
            raise SipParseError("Bad Request: headers in Request-URI")

    def create_response(
        self, status: int, reason: str | None = None, *, to_tag: str | None = None
    ) -> Response:
        """A response to this request (RFC 3261 8.2.6.2): Via, From, To, Call-ID, CSeq copied."""
        if self.method == "ACK":
            raise LocalProtocolError("ACK is never answered")
        resp = Response(status, reason)
        # Copied in this order, each header's lines in theirs.
        copied: dict[str, list[tuple[str, object]]] = {
            "via": [],
            "from": [],
            "to": [],
            "call-id": [],
            "cseq": [],
        }
        if 100 < status < 300 and self.method in ("INVITE", "SUBSCRIBE"):
            copied["record-route"] = []
        for n, k, v in zip(self._names, self._keys, self._values, strict=True):
            if k in copied:
                copied[k].append((n, v))
        names, keys, values = resp._names, resp._keys, resp._values
        for k, fields in copied.items():
            for n, v in fields:
                names.append(n)
                keys.append(k)
                values.append(str(v))
        cache = resp._cache
        # Parsed views the request already holds are copied rather than parsed again from the text
        # (same serialization: a parsed value's text is what str() gave above).
        vias = copied["via"]
        if vias and not any(isinstance(v, str) for _, v in vias):
            cache["via"] = [_copy_via(cast(Via, v)) for _, v in vias]
            start = keys.index("via")
            values[start : start + len(vias)] = cache["via"]
        cseqs = copied["cseq"]
        if len(cseqs) == 1 and isinstance(cseqs[0][1], CSeq):  # frozen: shared
            cache["cseq"] = values[keys.index("cseq")] = cseqs[0][1]
        if to_tag is not None and status > 100:
            to = self.to  # raises, like parsing the copy would, when To is missing or malformed
            if to.tag is None:
                values[keys.index("to")] = f"{to};tag={to_tag}"
            else:
                values[keys.index("to")] = str(to)
        return resp


def _copy_via(via: Via) -> Via:
    return Via(via.transport, via.host, via.port, dict(via.params), via.protocol)


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, object]] = (),
        body: bytes = b"",
    ) -> None:
        if not 100 <= status <= 699:
            raise LocalProtocolError(f"invalid status {status}")
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason
        super().__init__(headers, body)

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"


def _utf8_len(text: str) -> int:
    """Bytes of `text` as to_bytes() writes it (ASCII, the usual case, without encoding it)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def _parse_call_id(text: str) -> str:
    # callid = word [ "@" word ]: any visible characters, no whitespace.
    if not text or " " in text or "\t" in text:
        raise SipParseError("Bad Request: malformed Call-ID")
    return text


def _parse_max_forwards(text: str) -> int:
    return parse_int(text, "Max-Forwards", 255)


# -- parsing ------------------------------------------------------------------------------------------
def _parse_start_line(line: str) -> Message:
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version.upper() != SIP_VERSION:
            raise SipParseError("Version Not Supported", 505)
        if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
            raise SipParseError("Bad Request: malformed status code")
        return Response(int(code), reason)
    parts = line.split(" ")
    if len(parts) != 3 or not parts[1]:
        raise SipParseError("Bad Request: malformed Request-Line")
    method, uri, version = parts
    if version != SIP_VERSION and version.upper() != SIP_VERSION:
        if _VERSION_RE.match(version):
            raise SipParseError("Version Not Supported", 505)
        raise SipParseError("Bad Request: malformed SIP-Version")
    if method not in _METHODS and not is_token(method):
        raise SipParseError("Bad Request: malformed Method")
    return Request(method, uri)


def _parse_head(head: str, controls: int) -> tuple[Message, int]:
    """Parse the start line and header lines; returns the message and Content-Length (-1 if absent).

    `controls`: how many control bytes `_check_caps` found; all of them must be the CRLFs.
    """
    folded = "\r\n " in head or "\r\n\t" in head
    if folded:
        crlf = head.count("\r\n")
        head = _FOLD_RE.sub(" ", head)
    lines = head.split("\r\n")
    if not folded:
        crlf = len(lines) - 1
    if crlf > MAX_HEADER_LINES:
        raise SipParseError(f"Bad Request: more than {MAX_HEADER_LINES} header lines")
    if controls != 2 * crlf:  # also catches a lone CR or LF
        raise SipParseError("Bad Request: control character in a header")
    msg = _parse_start_line(lines[0])
    names: list[str] = []
    keys: list[str] = []
    values: list[object] = []
    clen = -1
    known = _VALID_NAMES
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = known.get(name) if colon else None
        if key is None:
            name = name.rstrip(" \t")
            if not colon or not _NAME_RE.match(name):
                raise SipParseError("Bad Request: malformed header line")
            key = header_key(name)
            if len(known) < _MAX_VALID_NAMES:
                known[name] = key
        value = value.strip(" \t")
        if key == "content-length":
            if clen >= 0:
                raise SipParseError("Bad Request: more than one Content-Length")
            clen = parse_int(value, "Content-Length", MAX_MESSAGE_SIZE * 16)
        names.append(name)
        keys.append(key)
        values.append(value)
    msg._names, msg._keys, msg._values, msg._cache, msg._wire = names, keys, values, {}, 0
    return msg, clen


def _check_caps(head: bytes) -> int:
    """Refuse a header section breaking a cap, before it is decoded and split; returns its number of
    control bytes, which `_parse_head` requires to be exactly its CRLFs.

    One C-level pass for a typical message (under 1 us for an INVITE). Only a section longer than a
    line may be (MAX_LINE_LENGTH) pays for counting and measuring its lines here, so a huge one is
    refused before it is split into thousands of strings.
    """
    if len(head) > MAX_LINE_LENGTH:
        if head.count(b"\r\n") > MAX_HEADER_LINES:
            raise SipParseError(f"Bad Request: more than {MAX_HEADER_LINES} header lines")
        if max(map(len, head.split(b"\r\n"))) > MAX_LINE_LENGTH:
            raise SipParseError(f"Bad Request: header line longer than {MAX_LINE_LENGTH} bytes")
    return len(head) - len(head.translate(None, _CTL_BYTES))


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> Request | Response:
    """Parse one message from a datagram (or a framed stream chunk).

    Bytes after Content-Length octets are ignored (RFC 3261 18.3); without Content-Length the body
    runs to the end of the data. Raises SipParseError carrying the status to answer with.
    """
    if len(data) > max_size:
        raise SipParseError("Message Too Large", 513)
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 3261 7.5: CRLFs before the start line are ignored
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("Bad Request: no end of header section")
    head = data[start:end]
    msg, clen = _parse_head(_decode(head), _check_caps(head))
    body_at = end + 4
    if clen < 0:
        msg._body = data[body_at:]
    elif body_at + clen > len(data):
        raise SipParseError("Bad Request: Content-Length larger than the message")
    else:
        msg._body = data[body_at : body_at + clen]
    msg._wire = len(data)
    return cast(Request | Response, msg)


class KeepAlive:
    """A double-CRLF keep-alive ping seen on a stream (RFC 5626 4.4.1); answer with a single CRLF."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KeepAlive()"


KEEPALIVE: Final = KeepAlive()


class StreamFramer:
    """Frames messages on a byte stream by Content-Length (RFC 3261 18.3).

    `feed(data)` returns the complete messages (and keep-alive pings) now available. A framing
    error - bad or missing Content-Length, a header section or message beyond `max_size` - raises
    SipParseError: the stream can no longer be trusted and the connection must be closed.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Response | KeepAlive]:
        self._buf += data
        out: list[Request | Response | KeepAlive] = []
        buf = self._buf
        while buf:
            if buf.startswith(b"\r\n"):
                if buf.startswith(b"\r\n\r\n"):
                    out.append(KEEPALIVE)
                    del buf[:4]
                elif bytes(buf) in (b"\r\n", b"\r\n\r"):
                    break  # maybe the start of a ping
                else:
                    del buf[:2]  # a lone CRLF (a pong, or noise between messages)
                continue
            end = buf.find(b"\r\n\r\n", 0, self.max_size + 4)
            if end < 0:
                if len(buf) > self.max_size:
                    raise SipParseError("Message Too Large: header section without end", 513)
                break
            head = bytes(buf[:end])
            msg, clen = _parse_head(_decode(head), _check_caps(head))
            if clen < 0:
                raise SipParseError("Bad Request: missing Content-Length on a stream")
            total = end + 4 + clen
            if total > self.max_size:
                raise SipParseError("Message Too Large", 513)
            if len(buf) < total:
                break
            msg._body = bytes(buf[end + 4 : total])
            msg._wire = total
            del buf[:total]
            out.append(cast(Request | Response, msg))
        return out
