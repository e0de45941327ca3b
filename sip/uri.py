"""URIs: sip:/sips: (RFC 3261 19.1), tel: (RFC 3966) and any other absoluteURI kept opaque.

SIP-URI        =  "sip:" [ userinfo ] hostport uri-parameters [ headers ]
SIPS-URI       =  "sips:" [ userinfo ] hostport uri-parameters [ headers ]
userinfo       =  ( user / telephone-subscriber ) [ ":" password ] "@"
hostport       =  host [ ":" port ]
host           =  hostname / IPv4address / IPv6reference
uri-parameters =  *( ";" uri-parameter )
headers        =  "?" header *( "&" header )
absoluteURI    =  scheme ":" ( hier-part / opaque-part )
scheme         =  ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
telephone-uri  =  "tel:" telephone-subscriber *( ";" par )       (RFC 3966)
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from trunkline.sip.errors import SipParseError
from trunkline.sip.grammar import Params, format_params

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?::([0-9]{1,5}))?\Z")
# Characters a user/password/param may carry (unreserved, escaped and the few reserved ones allowed).
_USERINFO_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:]*\Z")
_PARAM_CHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+\Z")


def _unescape(text: str) -> str:
    return urllib.parse.unquote(text, errors="surrogateescape")


@dataclass(slots=True)
class Uri:
    """Any absoluteURI we do not interpret (http:, isbn:, urn:...)."""

    scheme: str
    opaque: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


@dataclass(slots=True)
class TelUri(Uri):
    number: str = ""
    params: Params = field(default_factory=dict)

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"


@dataclass(slots=True)
class SipUri(Uri):
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else _unescape(self.user)

    @property
    def transport(self) -> str:
        """Transport named by the URI, lower-case (RFC 3263 default: udp, tls for sips)."""
        t = self.params.get("transport")
        return t.lower() if t else ("tls" if self.scheme == "sips" else "udp")

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += (":", self.password)
            out.append("@")
        out.append(self.hostport)
        if self.params:
            out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)


def parse_uri(text: str) -> Uri:
    """Parse a URI; unknown schemes become an opaque `Uri`. Raises SipParseError(400)."""
    m = _SCHEME_RE.match(text)
    if m is None or not text or any(c in text for c in ' \t\r\n<>"'):
        raise SipParseError("Bad Request: malformed URI")
    scheme = m.group(1).lower()
    rest = text[m.end() :]
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise SipParseError("Bad Request: empty tel URI")
        return TelUri(scheme, rest, number, _uri_params(params))
    if not rest:
        raise SipParseError("Bad Request: empty URI")
    return Uri(scheme, rest)


def _uri_params(text: str) -> Params:
    params: Params = {}
    if not text:
        return params
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name or not _PARAM_CHARS_RE.match(name) or (eq and not _PARAM_CHARS_RE.match(value)):
            raise SipParseError("Bad Request: malformed URI parameter")
        params[name.lower()] = value if eq else None
    return params


def _parse_sip(scheme: str, rest: str) -> SipUri:
    # userinfo cannot hold an unescaped "@", so the first one ends it (user may contain ";" and "?").
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not _USERINFO_RE.match(userinfo):
            raise SipParseError("Bad Request: malformed URI userinfo")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    rest, q, hdrs = rest.partition("?")
    hostport, _, params = rest.partition(";")
    hm = _HOST_RE.match(hostport)
    if hm is None:
        raise SipParseError("Bad Request: malformed URI host")
    port = int(hm.group(2)) if hm.group(2) else None
    if port is not None and port > 65535:
        raise SipParseError("Bad Request: URI port out of range")
    headers: dict[str, str] = {}
    if q:
        for item in hdrs.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError("Bad Request: malformed URI header")
            headers[name] = value
    return SipUri(scheme, "", user, password, hm.group(1).lower(), port, _uri_params(params), headers)
