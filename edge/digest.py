"""HTTP Digest authentication for SIP (RFC 3261 section 22, RFC 7616 algorithms, RFC 8760 SHA-256).

Nonces are stateless: a timestamp, random bytes and an HMAC over both, the realm and the client's
address (an IPv6 client by its /64), keyed by a secret that every edge shares (`NonceKeys`: several keys
may be valid at once, so the secret can be rotated without failing challenges in flight). A nonce
issued to one source fails from another. Any edge can check a nonce another edge issued, and an
expired one is answered with `stale=true` instead of a failure. Replays are caught by the caller,
which records each (nonce, nonce-count) pair once in the shared store (`Verdict.replay_key`).

Written here rather than taken from a library: the HTTP digest libraries on PyPI are client-side or
tied to a web framework; SIP needs the server side over its own header grammar.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from trunkline.core.models import DigestAlgorithm
from trunkline.edge.nonce_keys import NonceKeys
from trunkline.sip.flood import source_group
from trunkline.sip.ids import random_bytes

_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    # RFC 7616's SHA-512/256 (offered by some carriers); the server side does not offer it.
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data),
}

# RFC 3261 section 25.1 / RFC 7616 section 3.4:
#   credentials     = "Digest" LWS digest-response
#   digest-response = dig-resp *(COMMA dig-resp)
#   dig-resp        = username / realm / nonce / digest-uri / dresponse / algorithm / cnonce / opaque
#                     / message-qop / nonce-count / auth-param
#   auth-param      = auth-param-name EQUAL ( token / quoted-string )
#   quoted-string   = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
_PARAM = re.compile(r'\s*([A-Za-z0-9_.!%*+`\'~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
_QUOTED_PAIR = re.compile(r"\\(.)")


class DigestError(ValueError):
    """The Authorization header is not digest credentials we can read (answer with a new challenge)."""


def parse_credentials(value: str) -> dict[str, str]:
    """`Digest k=v, k="v"` -> {k: v}, keys lower-cased, quotes and quoted-pairs removed (a challenge
    has the same grammar: edge/digest_client.py reads them with this too)."""
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


class Outcome(Enum):
    OK = "ok"
    STALE = "stale nonce"  # a nonce we issued that expired: challenge again with stale=true
    BAD_NONCE = "nonce not issued by us"
    WRONG_REALM = "wrong realm"
    WRONG_URI = "digest uri is not the Request-URI"
    UNKNOWN_USER = "unknown user"
    WRONG_PASSWORD = "wrong password"
    BAD_ALGORITHM = "algorithm not offered"
    NO_QOP = "qop=auth required (RFC 2069 digest not allowed on this trunk)"
    MALFORMED = "malformed credentials"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    username: str = ""
    # With OK: the caller must record this once in the shared store; a second use is a replay.
    replay_key: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


class DigestAuthenticator:
    def __init__(
        self,
        secret: bytes | NonceKeys | None = None,
        nonce_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
    ):
        self.keys = secret if isinstance(secret, NonceKeys) else NonceKeys([secret] if secret else None)
        self.nonce_ttl = nonce_ttl
        self.clock = clock

    @property
    def secret(self) -> bytes:
        """The key that signs new nonces."""
        return self.keys.current()[0]

    # -- nonces ------------------------------------------------------------------------------------
    @staticmethod
    def _mac(key: bytes, body: bytes, realm: str, source: str) -> bytes:
        data = body + realm.encode() + b"\x00" + source_group(source).encode()
        return hmac.digest(key, data, "sha256")[:16]  # one-shot, in C

    def make_nonce(self, realm: str, source: str = "") -> str:
        """A nonce for `realm`, good only from `source` (the client's IP address as seen by us)."""
        body = struct.pack(">Q", int(self.clock() * 1000)) + random_bytes(8)
        return (
            base64.urlsafe_b64encode(body + self._mac(self.secret, body, realm, source)).decode().rstrip("=")
        )

    def nonce_age(self, nonce: str, realm: str, source: str = "") -> float | None:
        """Seconds since we issued `nonce` for `realm` to `source`; None when we did not."""
        if len(nonce) > 64:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 32:
            return None
        body, mac = raw[:16], raw[16:]
        if not any(hmac.compare_digest(mac, self._mac(k, body, realm, source)) for k in self.keys.current()):
            return None
        issued_ms: int = struct.unpack(">Q", raw[:8])[0]
        return self.clock() - issued_ms / 1000

    # -- challenges --------------------------------------------------------------------------------
    def challenges(
        self, realm: str, algorithms: list[DigestAlgorithm], stale: bool = False, source: str = ""
    ) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, one per algorithm in order of preference
        (many PBXs read only the first), with a nonce bound to `source`."""
        nonce = self.make_nonce(realm, source)
        tail = ", stale=true" if stale else ""
        return [
            f'Digest realm="{quote(realm)}", nonce="{nonce}", algorithm={alg.value}, qop="auth"{tail}'
            for alg in algorithms
        ]

    # -- verification ------------------------------------------------------------------------------
    def verify(
        self,
        params: dict[str, str],
        method: str,
        request_uri: str,
        realm: str,
        algorithms: list[DigestAlgorithm],
        password_of: Callable[[str], str | None],
        *,
        source: str = "",
        allow_rfc2069: bool = False,
    ) -> Verdict:
        """Check credentials sent from `source` (must be the address the nonce was issued to).

        Without `allow_rfc2069` (Trunk `auth.digest.allowRfc2069`), credentials without qop=auth are
        refused: RFC 2069 digest has no client nonce and no nonce-count.
        """
        username, nonce, response = params.get("username"), params.get("nonce"), params.get("response")
        if not username or not nonce or not response:
            return Verdict(Outcome.MALFORMED, username or "")
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in {a.value.upper() for a in algorithms}:
            return Verdict(Outcome.BAD_ALGORITHM, username)
        if params.get("realm") != realm:
            return Verdict(Outcome.WRONG_REALM, username)
        age = self.nonce_age(nonce, realm, source)
        if age is None or age < -5:  # a little clock skew between edges is fine
            return Verdict(Outcome.BAD_NONCE, username)
        if not same_target(params.get("uri", ""), request_uri):
            return Verdict(Outcome.WRONG_URI, username)
        password = password_of(username)
        if password is None:
            return Verdict(Outcome.UNKNOWN_USER, username)
        qop, nc, cnonce = params.get("qop"), params.get("nc", ""), params.get("cnonce", "")
        if qop is None and not allow_rfc2069:
            return Verdict(Outcome.NO_QOP, username)
        if qop not in (None, "auth") or (qop and (not nc or not cnonce)):
            return Verdict(Outcome.MALFORMED, username)
        # The client hashed the uri it named (same_target checked that it names this request).
        expected = digest_response(
            algorithm, username, realm, password, method, params["uri"], nonce, qop, nc, cnonce
        )
        if not hmac.compare_digest(expected, response.lower()):
            return Verdict(Outcome.WRONG_PASSWORD, username)
        if age > self.nonce_ttl:
            return Verdict(Outcome.STALE, username)
        # Without qop there is no nonce-count: such a nonce is good for one request.
        return Verdict(Outcome.OK, username, replay_key=f"{nonce}:{nc or '-'}")


_TARGET = re.compile(r"^(sips?):(?:([^@;?]*)@)?([^;?]+)", re.IGNORECASE)


def same_target(digest_uri: str, request_uri: str) -> bool:
    """Does the digest `uri` name the Request-URI? Equal strings do; so does the Request-URI without
    its user part (what SIPp and some PBXs put there). Host and port must always match."""
    if digest_uri == request_uri:
        return True
    ours, theirs = _TARGET.match(request_uri), _TARGET.match(digest_uri)
    if not ours or not theirs:
        return False

    def hostport(match: re.Match[str]) -> str:
        host = match.group(3).lower()
        return host if host.endswith("]") or ":" in host.split("]")[-1] else host + ":5060"

    same_user = theirs.group(2) is None or theirs.group(2) == ours.group(2)
    return (
        theirs.group(1).lower() == ours.group(1).lower() and same_user and hostport(theirs) == hostport(ours)
    )


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
    h = _HASHES[algorithm.upper()]

    def hexdigest(text: str) -> str:
        return h(text.encode("utf-8")).hexdigest()

    ha1 = hexdigest(f"{username}:{realm}:{password}")
    ha2 = hexdigest(f"{method}:{uri}")
    if qop:
        return hexdigest(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return hexdigest(f"{ha1}:{nonce}:{ha2}")


def quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
