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
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from trunkline.core.models import DigestAlgorithm
from trunkline.core.state import StateStore
from trunkline.sip.flood import source_group
from trunkline.sip.transaction import random_bytes

_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
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
    """`Digest k=v, k="v"` -> {k: v}, keys lower-cased, quotes and quoted-pairs removed."""
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


class NonceKeys:
    """The keys nonces are signed with: the first signs, every one verifies.

    From a file (`--nonce-secret-file`) holding one key per line, newest first; the file is read
    again when its modification time or size changes (checked at most every `recheck` seconds), so an
    operator rotates by adding a new first line and dropping the last one after a nonce lifetime.
    """

    def __init__(
        self,
        keys: list[bytes] | None = None,
        *,
        path: str | None = None,
        recheck: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.recheck, self.clock = path, recheck, clock
        self._stamp: tuple[int, int] | None = None
        self._checked = -recheck
        self._keys: list[bytes] = list(keys) if keys else []
        if path is not None:
            self._reload(force=True)
        if not self._keys:
            self._keys = [os.urandom(32)]

    @classmethod
    def from_file(cls, path: str, recheck: float = 5.0) -> NonceKeys:
        """Raises OSError (unreadable) or ValueError (no key) at start-up, where it can be reported."""
        return cls(path=path, recheck=recheck)

    @staticmethod
    def parse(text: bytes) -> list[bytes]:
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(b"#")]
        if not keys:
            raise ValueError("no key in the nonce secret file")
        return keys

    def _reload(self, force: bool = False) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if not force and stamp == self._stamp:
                return
            with open(self.path, "rb") as fh:
                keys = self.parse(fh.read(1 << 16))
        except (OSError, ValueError):
            if force:
                raise
            return  # a file being rewritten or removed: keep the keys we have
        self._keys, self._stamp = keys, stamp

    def current(self) -> list[bytes]:
        if self.path is not None:
            now = self.clock()
            if now - self._checked >= self.recheck:
                self._checked = now
                self._reload()
        return self._keys


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
            f'Digest realm="{_quote(realm)}", nonce="{nonce}", algorithm={alg.value}, qop="auth"{tail}'
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


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# -- lockout -------------------------------------------------------------------------------------------
class Lockout(Enum):
    ANSWER = "answer"  # check the credentials, challenge on failure
    FORBID = "forbid"  # 403 without checking: too many failures
    SILENCE = "silence"  # no answer at all: a source that keeps hammering after its 403s


@dataclass(frozen=True)
class LockoutPolicy:
    """Failed-authentication limits within the auth window (`EdgeOptions.auth_window`, 60 s).

    Failures are counted under two keys of the shared store (whose API takes any string "source"):
    the pair (source, username), with IPv6 sources grouped by /64, so a stranger behind the same NAT
    cannot lock a customer's PBX out by guessing another username (or the same one from elsewhere);
    and the username alone, across every source, which stops a distributed guesser. The per-username
    limit is high: reaching it refuses that username everywhere until the window passes (logged).
    """

    per_source_user: int = 10  # then 403
    silence_after: int = 20  # then no answer (per source and username)
    per_user: int = 100  # then 403 for that username from any source

    @staticmethod
    def keys(source: str, username: str) -> tuple[str, str]:
        """(pair key, username key) to pass to `note_auth_failure` / `auth_failures` / `clear_...`."""
        user = username[:128]
        return f"auth|{source_group(source)}|{user}", f"auth-user|{user}"

    def decide(self, pair_failures: int, user_failures: int) -> Lockout:
        if pair_failures >= self.silence_after:
            return Lockout.SILENCE
        if pair_failures >= self.per_source_user or user_failures >= self.per_user:
            return Lockout.FORBID
        return Lockout.ANSWER


class AuthFailures:
    """`LockoutPolicy` over the shared store's failure counters (its API is unchanged: any string key).

    The edge asks `verdict` before it checks credentials (SILENCE: answer nothing, decided before any
    transaction exists), calls `failed` after a failure and `succeeded` after a success.
    """

    def __init__(self, store: StateStore, window: float, policy: LockoutPolicy | None = None) -> None:
        self.store, self.window, self.policy = store, window, policy or LockoutPolicy()

    async def verdict(self, source: str, username: str) -> Lockout:
        pair, user = LockoutPolicy.keys(source, username)
        pair_count = await self.store.auth_failures(pair, self.window)
        if pair_count >= self.policy.silence_after:
            return Lockout.SILENCE
        return self.policy.decide(pair_count, await self.store.auth_failures(user, self.window))

    async def failed(self, source: str, username: str) -> int:
        """Count a failure under both keys; returns the (source, username) count."""
        pair, user = LockoutPolicy.keys(source, username)
        await self.store.note_auth_failure(user, self.window)
        return await self.store.note_auth_failure(pair, self.window)

    async def succeeded(self, source: str, username: str) -> None:
        """Forget this pair's failures (not the username's: a guesser elsewhere is still counted)."""
        await self.store.clear_auth_failures(LockoutPolicy.keys(source, username)[0])


def challenge_realm(
    username: str, realm_of: Callable[[str], str | None], realms: list[str], key: bytes
) -> str:
    """The realm to challenge `username` with: its trunk's realm when the username is known; else one
    of the digest trunks' realms picked by a keyed hash of the username (the same one every time, and
    one a scanner cannot predict), so unknown usernames, known ones and wrong passwords all get a 401/407
    of the same shape with a plausible realm. Answering 403 to unknown usernames, as the edge did,
    tells a scanner which usernames exist. `realms` must not be empty (no digest trunk: no challenge).
    """
    realm = realm_of(username) if username else None
    if realm is not None:
        return realm
    ordered = sorted(set(realms))
    pick = int.from_bytes(hmac.digest(key, b"realm\x00" + username.encode("utf-8", "replace"), "sha256")[:4])
    return ordered[pick % len(ordered)]
