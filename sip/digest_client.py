"""HTTP Digest for SIP, the computation both sides share, and the client's answer to a challenge
(RFC 3261 section 22.4, RFC 7616 algorithms MD5, SHA-256 and SHA-512-256, qop=auth, RFC 8760).

Pure: the edge's server side (edge/digest.py) verifies with `digest_response`; whatever sends
requests to a challenging peer (carrier registration, carrier INVITEs) calls `authorization` only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data),
}

# RFC 3261 section 25.1 / RFC 7616 section 3.4 (challenge and credentials share the grammar):
#   credentials     = "Digest" LWS digest-response
#   digest-response = dig-resp *(COMMA dig-resp)
#   auth-param      = auth-param-name EQUAL ( token / quoted-string )
#   quoted-string   = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
_PARAM = re.compile(r'\s*([A-Za-z0-9_.!%*+`\'~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
_QUOTED_PAIR = re.compile(r"\\(.)")
_MAX_VALUE = 2048  # a challenge is read from a peer: bounded before anything is hashed


class DigestError(ValueError):
    """Digest parameters we cannot read or answer."""


def parse_credentials(value: str) -> dict[str, str]:
    """`Digest k=v, k="v"` -> {k: v}, keys lower-cased, quotes and quoted-pairs removed. Also reads a
    challenge (WWW-Authenticate / Proxy-Authenticate), whose grammar is the same."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"scheme {scheme!r} is not Digest")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip()
    for match in _PARAM.finditer(rest):  # each match must begin where the last one ended
        if match.start() != pos or match.end() == pos:
            break
        name, raw = match.groups()
        if raw.startswith('"'):
            raw = raw[1:-1]
            if "\\" in raw:
                raw = _QUOTED_PAIR.sub(r"\1", raw)
        params[name.lower()] = raw
        pos = match.end()
    if pos < len(rest):
        raise DigestError(f"cannot read digest parameters at {rest[pos : pos + 20]!r}")
    return params


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = "auth",
    nc: str = "",
    cnonce: str = "",
) -> str:
    """RFC 7616 section 3.4.1 (qop=auth) and RFC 2069 (no qop) response, lower-case hex."""
    h = HASHES[algorithm.upper()]

    def hexdigest(text: str) -> str:
        return h(text.encode("utf-8")).hexdigest()

    ha1 = hexdigest(f"{username}:{realm}:{password}")
    ha2 = hexdigest(f"{method}:{uri}")
    if qop:
        return hexdigest(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return hexdigest(f"{ha1}:{nonce}:{ha2}")


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def authorization(
    challenge_header_value: str, method: str, uri: str, username: str, password: str, nc: int, cnonce: str
) -> str:
    """The Authorization / Proxy-Authorization value answering one challenge for `method` `uri`.

    qop=auth when the challenge offers it (else RFC 2069, which servers that offer no qop expect);
    `nc` counts the requests sent with this nonce (1 for the first). DigestError for a challenge that
    is not Digest, lacks realm or nonce, names an algorithm we do not have, or offers only auth-int."""
    params = parse_credentials(challenge_header_value)
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or not nonce:
        raise DigestError("the challenge has no realm or nonce")
    if any(len(v) > _MAX_VALUE for v in params.values()):
        raise DigestError("a challenge parameter is too long")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper() not in HASHES:
        raise DigestError(f"algorithm {algorithm!r} is not supported")
    offered = {q.strip().lower() for q in params["qop"].split(",")} if "qop" in params else None
    if offered is not None and "auth" not in offered:
        raise DigestError(f"qop {params['qop']!r}: only auth is supported")
    qop = "auth" if offered else None
    count = f"{nc:08x}"
    response = digest_response(algorithm, username, realm, password, method, uri, nonce, qop, count, cnonce)
    fields = [f'username="{_quote(username)}"', f'realm="{_quote(realm)}"', f'nonce="{_quote(nonce)}"',
              f'uri="{_quote(uri)}"', f'response="{response}"', f"algorithm={algorithm}"]  # fmt: skip
    if qop:
        fields += [f"qop={qop}", f"nc={count}", f'cnonce="{_quote(cnonce)}"']
    if "opaque" in params:
        fields.append(f'opaque="{_quote(params["opaque"])}"')
    return "Digest " + ", ".join(fields)
