"""Header names and the structured header values an edge needs (RFC 3261 section 20, 25).

Header values stay raw strings inside a `Message` until asked for; these parsers turn one value into a
structure whose `str()` is its serialization.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trunkline.sip.errors import SipParseError
from trunkline.sip.grammar import (
    TOKEN_CHARS,
    Params,
    format_params,
    is_token,
    parse_params,
    quote,
    scan_quoted,
    unquote,
)
from trunkline.sip.uri import Uri, parse_uri

MAGIC_COOKIE = "z9hG4bK"

# Compact forms (RFC 3261 7.3.3 and the IANA registry) -> canonical lower-case key.
COMPACT = {
    "i": "call-id", "m": "contact", "f": "from", "t": "to", "v": "via", "l": "content-length",
    "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding", "o": "event",
    "r": "refer-to", "u": "allow-events", "x": "session-expires", "b": "referred-by",
    "a": "accept-contact", "j": "reject-contact", "d": "request-disposition", "y": "identity",
    "n": "identity-info",
}  # fmt: skip

# Display spelling used when we build headers.
CANONICAL = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq",
}  # fmt: skip

# Headers whose values are comma-separated lists (RFC 3261 7.3.1). Everything else - unknown headers,
# the auth headers (their params contain commas), Date, Subject, User-Agent... - is one value per line.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "path", "service-route", "allow", "supported",
        "require", "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "content-encoding", "allow-events", "warning", "alert-info", "call-info", "error-info",
        "in-reply-to", "p-asserted-identity", "p-preferred-identity", "history-info", "reason",
        "security-client", "security-server", "security-verify", "accept-contact", "reject-contact",
        "request-disposition", "privacy",
    }
)  # fmt: skip


_KEYS: dict[str, str] = {}  # name as written -> key, for the names seen (bounded)


def header_key(name: str) -> str:
    """Canonical lookup key of a header name: lower-case long form."""
    key = _KEYS.get(name)
    if key is None:
        low = name.lower()
        key = COMPACT.get(low, low)
        if len(_KEYS) < 512:
            _KEYS[name] = key
    return key


_DISPLAY: dict[str, str] = {}  # key -> display name, for the keys seen (bounded)


def display_name(key: str) -> str:
    name = _DISPLAY.get(key)
    if name is None:
        name = CANONICAL.get(key) or "-".join(p.capitalize() for p in key.split("-"))
        if len(_DISPLAY) < 512:
            _DISPLAY[key] = name
    return name


_DISPLAY_TOKENS_RE = re.compile(rf"[{TOKEN_CHARS}]+(?:[ \t]+[{TOKEN_CHARS}]+)*\Z")


@dataclass(slots=True)
class NameAddr:
    """From/To/Contact/Route/Record-Route value.

    name-addr  =  [ display-name ] LAQUOT addr-spec RAQUOT
    addr-spec  =  SIP-URI / SIPS-URI / absoluteURI
    display-name = *(token LWS) / quoted-string
    """

    uri: Uri
    display: str | None = None
    params: Params = field(default_factory=dict)
    wildcard: bool = False  # Contact: *

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.wildcard:
            return "*" + format_params(self.params)
        params = format_params(self.params) if self.params else ""
        if self.display is None:
            return f"<{self.uri}>{params}"
        return f"{quote(self.display)} <{self.uri}>{params}"


def parse_name_addr(text: str) -> NameAddr:
    s = text.strip(" \t")
    if not s:
        raise SipParseError("Bad Request: empty address")
    display: str | None = None
    if s[0] == '"':
        end = scan_quoted(s, 0)
        display = unquote(s[:end])
        s = s[end:].lstrip(" \t")
        if not s.startswith("<"):
            raise SipParseError("Bad Request: display name without <addr-spec>")
    lt = s.find("<")
    if lt >= 0:
        if lt:
            words = s[:lt].strip(" \t")
            if not _DISPLAY_TOKENS_RE.match(words):
                raise SipParseError("Bad Request: display name must be tokens or a quoted string")
            display = words
        gt = s.find(">", lt)
        if gt < 0:
            raise SipParseError("Bad Request: missing '>'")
        inner = s[lt + 1 : gt]
        if inner != inner.strip(" \t"):
            raise SipParseError("Bad Request: whitespace inside <addr-spec>")
        return NameAddr(parse_uri(inner), display, parse_params(s[gt + 1 :], "address"))
    if s.startswith("*"):
        return NameAddr(Uri("*"), None, parse_params(s[1:], "contact"), wildcard=True)
    # addr-spec form: params after the URI belong to the header (RFC 3261 20), and a URI holding
    # a comma, "?" or ";" must have been enclosed in <>.
    uri_text, semi, params = s.partition(";")
    uri_text = uri_text.rstrip(" \t")
    if "?" in uri_text or "," in uri_text:
        raise SipParseError("Bad Request: URI with headers must be enclosed in <>")
    return NameAddr(parse_uri(uri_text), None, parse_params(semi + params, "address"))


_VIA_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)


@dataclass(slots=True)
class Via:
    """via-parm = sent-protocol LWS sent-by *( SEMI via-params ); sent-by = host [ COLON port ]"""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch carries the magic cookie and something after it (RFC 4475 3.2.1)."""
        b = self.params.get("branch")
        return b is not None and b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE)

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    m = _VIA_RE.match(text)
    if m is None:
        raise SipParseError("Bad Request: malformed Via")
    name, version, transport, host, port_text = m.groups()
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        raise SipParseError("Bad Request: Via port out of range")
    params = parse_params(text[m.end() :], "Via")
    rport = params.get("rport")
    if rport and (not rport.isdigit() or int(rport) > 65535):
        raise SipParseError("Bad Request: malformed rport")
    return Via(transport.upper(), host.lower(), port, params, f"{name.upper()}/{version}")


@dataclass(slots=True, frozen=True)
class CSeq:
    """CSeq = 1*DIGIT LWS Method (the number must be below 2**31, RFC 3261 8.1.1.5)."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
        raise SipParseError("Bad Request: malformed CSeq")
    seq = int(parts[0])
    if seq >= 2**31:
        raise SipParseError("Bad Request: CSeq out of range")
    return CSeq(seq, parts[1])


def parse_int(text: str, what: str, maximum: int) -> int:
    s = text.strip(" \t")
    if not s.isdigit() or not s.isascii() or len(s) > 10 or int(s) > maximum:
        raise SipParseError(f"Bad Request: malformed {what}")
    return int(s)


@dataclass(slots=True, frozen=True)
class ContentType:
    """media-type = m-type SLASH m-subtype *(SEMI m-parameter)"""

    type: str
    subtype: str
    params: Params = field(default_factory=dict)

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return f"{self.mime}{format_params(self.params)}"


def parse_content_type(text: str) -> ContentType:
    main, semi, params = text.partition(";")
    t, slash, sub = main.strip(" \t").partition("/")
    t, sub = t.strip(" \t"), sub.strip(" \t")
    if not slash or not is_token(t) or not is_token(sub):
        raise SipParseError("Bad Request: malformed media type")
    return ContentType(t.lower(), sub.lower(), parse_params(semi + params, "media type"))
