"""Failed-authentication lockout and the realm unknown usernames are challenged with: what an edge
decides about a source before (and after) it checks digest credentials (docs/security.md)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from trunkline.sip.flood import source_group


class AuthCounters(Protocol):
    """The failure counters of the shared store (`StateStore`), or this edge's own while the store
    does not answer an emergency call (`edge/local_auth.py`)."""

    async def note_auth_failure(self, source: str, window: float) -> int: ...

    async def auth_failures(self, source: str, window: float) -> int: ...

    async def auth_failures_of(self, sources: Sequence[str], window: float) -> list[int]: ...

    async def clear_auth_failures(self, source: str) -> None: ...


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

    def __init__(self, store: AuthCounters, window: float, policy: LockoutPolicy | None = None) -> None:
        self.store, self.window, self.policy = store, window, policy or LockoutPolicy()
        self._clean: str | None = None  # a pair `verdict` found without failures: nothing to forget

    async def verdict(self, source: str, username: str) -> Lockout:
        pair, user = LockoutPolicy.keys(source, username)
        # Both counts in one round trip: a request the policy silences on its pair count alone
        # costs one more key read, every other one a round trip less.
        pair_count, user_count = await self.store.auth_failures_of([pair, user], self.window)
        self._clean = pair if pair_count == 0 else None
        if pair_count >= self.policy.silence_after:
            return Lockout.SILENCE
        return self.policy.decide(pair_count, user_count)

    async def failed(self, source: str, username: str) -> int:
        """Count a failure under both keys; returns the (source, username) count."""
        pair, user = LockoutPolicy.keys(source, username)
        await self.store.note_auth_failure(user, self.window)
        return await self.store.note_auth_failure(pair, self.window)

    async def succeeded(self, source: str, username: str) -> None:
        """Forget this pair's failures (not the username's: a guesser elsewhere is still counted); no
        round trip when `verdict` found none."""
        pair = LockoutPolicy.keys(source, username)[0]
        if pair != self._clean:
            await self.store.clear_auth_failures(pair)


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
