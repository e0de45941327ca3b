"""Digest authentication as a client (UAC, RFC 3261 22.2-22.3 with RFC 7616 / RFC 8760 algorithms):
what the edge sends when a carrier gateway challenges one of its requests with 401 or 407.

Pure: it reads the challenge of a response, picks the strongest one it can answer, and builds the
Authorization / Proxy-Authorization value. The header grammar and the hashes are edge/digest.py's
(the server side); the I/O (resending, which gateway may get credentials) is edge/carrier_auth.py's.

Every challenge is hostile input: over-long values, unknown algorithms, `-sess` variants, a qop
without `auth`, a realm other than the configured one are skipped; when none is left the request
fails with `ChallengeError` (a reason for the log), at a cost bounded by `MAX_CHALLENGES` values of
at most `MAX_CHALLENGE_LENGTH` characters each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trunkline.edge.digest import DigestError, digest_response, parse_credentials, quote
from trunkline.sip.ids import random_bytes
from trunkline.sip.message import Response

# Strongest first: when a carrier offers several (RFC 8760 8.1: one header per algorithm), we answer
# the first of these it offers.
ALGORITHMS = ("SHA-512-256", "SHA-256", "MD5")
MAX_CHALLENGES = 8  # header values read per response; the rest are ignored
MAX_CHALLENGE_LENGTH = 2048  # a longer value is not read at all
MAX_PARAM_LENGTH = 512  # realm, nonce, opaque: echoed back, so kept short
# What we echo and hash: no control characters, and no lone surrogates (bytes that were not UTF-8,
# which the parser keeps as such and which cannot be encoded again).
_PRINTABLE = re.compile(r"[\x20-\x7e\x80-\ud7ff\ue000-\U0010ffff]*\Z")


def printable(text: str) -> bool:
    """May `text` go into a header we send (no control characters, nothing that is not UTF-8)?"""
    return _PRINTABLE.match(text) is not None


class ChallengeError(ValueError):
    """The response's challenge is not one we answer (the request fails as any final answer)."""


@dataclass(frozen=True)
class Challenge:
    proxy: bool  # 407 Proxy-Authenticate (answered with Proxy-Authorization), else 401 WWW-Authenticate
    realm: str
    nonce: str
    algorithm: str  # one of ALGORITHMS
    qop: str | None  # "auth", or None for an RFC 2069 challenge
    opaque: str | None
    stale: bool

    @property
    def answer_header(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"


def read_challenge(response: Response, realm: str | None = None) -> Challenge:
    """The challenge of a 401/407 we would answer: the strongest algorithm offered for `realm` (any
    realm when None). ChallengeError says why there is none."""
    if response.status not in (401, 407):
        raise ChallengeError(f"{response.status} is not a challenge")
    proxy = response.status == 407
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    found: list[Challenge] = []
    why = f"no {name} header"
    for value in response.get_all(name)[:MAX_CHALLENGES]:
        try:
            found.append(parse_challenge(value, proxy, realm))
        except ChallengeError as exc:
            why = str(exc)
    if not found:
        raise ChallengeError(why)
    return min(found, key=lambda c: ALGORITHMS.index(c.algorithm))


def parse_challenge(value: str, proxy: bool, realm: str | None = None) -> Challenge:
    """One WWW-Authenticate / Proxy-Authenticate value (`Digest realm=..., nonce=..., ...`)."""
    if len(value) > MAX_CHALLENGE_LENGTH:
        raise ChallengeError(f"challenge of {len(value)} characters")
    try:
        params = parse_credentials(value)  # the same grammar as credentials (RFC 3261 25.1)
    except DigestError as exc:
        raise ChallengeError(f"unreadable challenge: {exc}") from None
    offered_realm, nonce = params.get("realm"), params.get("nonce")
    if not offered_realm or not nonce:
        raise ChallengeError("challenge without realm or nonce")
    opaque = params.get("opaque")
    for text in (offered_realm, nonce, opaque or ""):
        if len(text) > MAX_PARAM_LENGTH or not printable(text):
            raise ChallengeError("challenge parameter too long or not printable text")
    if realm is not None and offered_realm != realm:
        raise ChallengeError(f"realm {offered_realm!r} is not the configured {realm!r}")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in ALGORITHMS:
        raise ChallengeError(f"algorithm {algorithm[:32]!r} not supported")
    qop: str | None = None
    if "qop" in params:
        options = {option.strip().lower() for option in params["qop"].split(",")}
        if "auth" not in options:
            raise ChallengeError(f"qop {params['qop'][:32]!r} without auth")
        qop = "auth"
    stale = params.get("stale", "").lower() == "true"
    return Challenge(proxy, offered_realm, nonce, algorithm, qop, opaque, stale)


@dataclass
class DigestClient:
    """Our credentials toward one carrier, for one request and its retries or for one dialog: it keeps
    the carrier's last challenge, so a nonce the carrier challenges with again counts on (nc)."""

    username: str
    password: str
    realm: str | None = None  # the Carrier's `spec.auth.realm`: challenges for another are not answered
    last: Challenge | None = field(default=None, repr=False)
    nonce_count: int = 0

    def challenge_of(self, response: Response) -> Challenge:
        return read_challenge(response, self.realm)

    def authorization(self, challenge: Challenge, method: str, uri: str, cnonce: str | None = None) -> str:
        """The credentials answering `challenge` for a request `method uri` (RFC 7616 3.4)."""
        if self.last is None or self.last.nonce != challenge.nonce:
            self.nonce_count = 0
        self.last = challenge
        self.nonce_count += 1
        nc = f"{self.nonce_count:08x}"
        cnonce = cnonce or random_bytes(12).hex()
        if challenge.qop is None:  # RFC 2069: no client nonce, no count
            nc = cnonce = ""
        response = digest_response(challenge.algorithm, self.username, challenge.realm, self.password,
                                   method, uri, challenge.nonce, challenge.qop, nc, cnonce)  # fmt: skip
        parts = [
            f'username="{quote(self.username)}"',
            f'realm="{quote(challenge.realm)}"',
            f'nonce="{quote(challenge.nonce)}"',
            f'uri="{quote(uri)}"',
            f'response="{response}"',
            f"algorithm={challenge.algorithm}",
        ]
        if challenge.qop:
            parts += [f'cnonce="{cnonce}"', f"qop={challenge.qop}", f"nc={nc}"]
        if challenge.opaque is not None:
            parts.append(f'opaque="{quote(challenge.opaque)}"')
        return "Digest " + ", ".join(parts)


@dataclass
class Tries:
    """How often one request was answered with credentials: once per request, and once more when the
    carrier says the nonce was only stale. A further challenge means the credentials are refused."""

    answered: int = 0
    stale_answered: int = 0

    def may_answer(self, challenge: Challenge) -> bool:
        if self.answered == 0:
            self.answered = 1
            return True
        if challenge.stale and self.stale_answered == 0:
            self.stale_answered = 1
            return True
        return False
