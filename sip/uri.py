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

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from trunkline.sip.errors import SipParseError
from trunkline.sip.grammar import Params, format_params

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?::([0-9]{1,5}))?\Z")
# Characters a user/password/param may carry (unreserved, escaped and the few reserved ones allowed).
_USERINFO_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:]*\Z")
_ESCAPED_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# RFC 2396 "reserved": escaping one of these changes the meaning, so it never equals the bare character
# (RFC 3261 19.1.4). "%" itself stays escaped too, so that decoding cannot make two strings collide.
_KEEP_ESCAPED = frozenset(";/?:@&=+$,%")
# Parameters that must match when either URI has them (RFC 3261 19.1.4); others only when both do.
_MUST_MATCH_PARAMS = frozenset(("user", "ttl", "method", "maddr", "transport"))
# RFC 3966 5.1.1 visual separators, ignored when tel: numbers are compared (RFC 3966 4).
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")


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
        user = self.user
        if user is None:
            text = f"{self.scheme}:{self.host}"
        elif self.password is None:
            text = f"{self.scheme}:{user}@{self.host}"
        else:
            text = f"{self.scheme}:{user}:{self.password}@{self.host}"
        if self.port is not None:
            text += f":{self.port}"
        if self.params:
            text += format_params(self.params)
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return text


_BAD_URI_CHARS_RE = re.compile(r'[ \t\r\n<>"]')
_PARAM_CHARS = r"A-Za-z0-9\-_.!~*'()%\[\]/:&+$"
_PARAM = rf"[{_PARAM_CHARS}]+(?:=[{_PARAM_CHARS}]+)?"  # uri-parameter: pname [ "=" pvalue ]
_PARAMS_RE = re.compile(rf"{_PARAM}(?:;{_PARAM})*\Z")
# The usual sip:/sips: hostport and params in one match (no "?headers"). What it does not match goes
# through the step-by-step parser below, which accepts more and says what is wrong.
_FAST_HOST_RE = re.compile(rf"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?::([0-9]{{1,5}}))?((?:;{_PARAM})*)\Z")


def parse_uri(text: str) -> Uri:
    """Parse a URI; unknown schemes become an opaque `Uri`. Raises SipParseError(400)."""
    if text.startswith("sip:"):
        uri = _fast_sip("sip", text, 4)
        if uri is not None:
            return uri
    elif text.startswith("sips:"):
        uri = _fast_sip("sips", text, 5)
        if uri is not None:
            return uri
    m = _SCHEME_RE.match(text)
    if m is None or not text or _BAD_URI_CHARS_RE.search(text):
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


def _fast_sip(scheme: str, text: str, start: int) -> SipUri | None:
    user = password = None
    at = text.find("@", start)
    if at >= 0:
        userinfo = text[start:at]
        if not _USERINFO_RE.match(userinfo):
            return None
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        start = at + 1
    m = _FAST_HOST_RE.match(text, start)
    if m is None:
        return None
    host, port_text, param_text = m.groups()
    port = None
    if port_text:
        port = int(port_text)
        if port > 65535:
            return None  # the full parser reports it
    params: Params = {}
    if param_text:
        for item in param_text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
    return SipUri(scheme, "", user, password, host.lower(), port, params, {})


def _uri_params(text: str) -> Params:
    params: Params = {}
    if not text:
        return params
    if not _PARAMS_RE.match(text):
        raise SipParseError("Bad Request: malformed URI parameter")
    for item in text.split(";"):
        name, eq, value = item.partition("=")
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


def uri_equal(a: Uri, b: Uri) -> bool:
    """URI equivalence: RFC 3261 19.1.4 for sip:/sips:, RFC 3966 4 for tel:, else exact text.

    Not transitive (sip:c@h equals both sip:c@h;security=on and sip:c@h;security=off, which differ),
    so it cannot be turned into a hash key: compare candidates one by one."""
    if isinstance(a, SipUri) or isinstance(b, SipUri):
        return isinstance(a, SipUri) and isinstance(b, SipUri) and _sip_equal(a, b)
    if isinstance(a, TelUri) or isinstance(b, TelUri):
        return isinstance(a, TelUri) and isinstance(b, TelUri) and _tel_equal(a, b)
    return a.scheme.lower() == b.scheme.lower() and a.opaque == b.opaque


def _sip_equal(a: SipUri, b: SipUri) -> bool:
    # sip never equals sips; userinfo is case-sensitive, the rest is not; an omitted user, password or
    # port never equals a present one, not even the default 5060.
    if a.scheme.lower() != b.scheme.lower() or a.port != b.port or _host_key(a.host) != _host_key(b.host):
        return False
    if _opt(a.user, _canonical) != _opt(b.user, _canonical):
        return False
    if _opt(a.password, _canonical) != _opt(b.password, _canonical):
        return False
    pa, pb = _param_keys(a.params), _param_keys(b.params)
    for name in pa.keys() | pb.keys():
        if name in pa and name in pb:
            if pa[name] != pb[name]:
                return False
        elif name in _MUST_MATCH_PARAMS:
            return False
    # Headers are never ignored: the same set, names in any case, values exactly (once unescaped).
    ha = {_canonical(k).lower(): _canonical(v) for k, v in a.headers.items()}
    hb = {_canonical(k).lower(): _canonical(v) for k, v in b.headers.items()}
    return ha == hb


def _tel_equal(a: TelUri, b: TelUri) -> bool:
    na, nb = (_canonical(u.number).translate(_VISUAL_SEPARATORS).lower() for u in (a, b))
    return na == nb and _param_keys(a.params) == _param_keys(b.params)


def _canonical(text: str) -> str:
    """Escapes of unreserved characters decoded, the others kept with upper-case hex digits."""

    def one(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return "%" + m.group(1).upper() if char in _KEEP_ESCAPED else char

    return _ESCAPED_RE.sub(one, text)


def _opt(text: str | None, norm: Callable[[str], str]) -> str | None:
    return None if text is None else norm(text)


def _param_keys(params: Params) -> dict[str, str | None]:
    return {_canonical(k).lower(): _opt(v, lambda t: _canonical(t).lower()) for k, v in params.items()}


def _host_key(host: str) -> str:
    # Names compare without case; IPv6 references as addresses ([::1] == [0:0::1], RFC 5954 4.3). A
    # name never equals the address it resolves to.
    if host.startswith("["):
        try:
            return "[" + str(ipaddress.IPv6Address(host.strip("[]"))) + "]"
        except ValueError:
            pass
    return host.lower()
