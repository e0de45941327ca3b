"""Low-level RFC 3261 section 25 lexical helpers shared by URI and header parsers.

token          =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
quoted-pair    =  "\\" (%x00-09 / %x0B-0C / %x0E-7F)
generic-param  =  token [ EQUAL gen-value ]
gen-value      =  token / host / quoted-string
"""

from __future__ import annotations

import re

from trunkline.sip.errors import SipParseError

Params = dict[str, str | None]

TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rf"[{TOKEN_CHARS}]+")
_TOKEN_FULL = re.compile(rf"[{TOKEN_CHARS}]+\Z")
# A param value is a token, a host (IPv6 reference included) or a quoted string.
_PARAM_RE = re.compile(
    rf"""[ \t]*;[ \t]*([{TOKEN_CHARS}]+)[ \t]*"""
    rf"""(?:=[ \t]*("(?:[^"\\]|\\.)*"|\[[0-9A-Fa-f:.]+\]|[{TOKEN_CHARS}:]+))?[ \t]*""",
    re.DOTALL,
)


def is_token(text: str) -> bool:
    return _TOKEN_FULL.match(text) is not None


def unquote(text: str) -> str:
    """Strip the DQUOTEs of a quoted-string and resolve quoted-pairs."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise SipParseError("Bad Request: unterminated quoted string")
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scan_quoted(text: str, start: int) -> int:
    """Index just past the quoted-string starting at text[start] == '"'."""
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1
    raise SipParseError("Bad Request: unterminated quoted string")


# The usual shape, `;name=value;flag` without spaces or quotes: split without the per-param regex.
_SIMPLE_PARAMS_RE = re.compile(rf"(?:;[{TOKEN_CHARS}]+(?:=[{TOKEN_CHARS}:]+)?)+\Z")


def parse_params(text: str, what: str) -> Params:
    """Parse `*( SEMI generic-param )`; the whole of `text` must be consumed."""
    params: Params = {}
    if not text:
        return params
    if _SIMPLE_PARAMS_RE.match(text):
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
        return params
    pos = 0
    n = len(text.rstrip(" \t"))
    while pos < n:
        m = _PARAM_RE.match(text, pos)
        if m is None:
            raise SipParseError(f"Bad Request: malformed {what} parameter")
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()
    return params


def format_params(params: Params) -> str:
    if not params:
        return ""
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


def split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings and angle brackets (RFC 3261 7.3.1 comma lists)."""
    if '"' not in text and "<" not in text:
        return text.split(sep)
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = scan_quoted(text, i)
            continue
        if c == "<":
            depth += 1
        elif c == ">" and depth:
            depth -= 1
        elif c == sep and not depth:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts
