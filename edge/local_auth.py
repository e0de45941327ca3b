"""This edge's own, bounded memory of failed authentications and used nonces: what the lockout and
replay checks of an emergency call's digest use while the shared store does not answer (edge/auth.py),
so that a store outage opens neither password guessing nor replays (docs/emergency.md).

Bounded in keys (the oldest key goes first) and in entries per key: a flood of sources or nonces
costs a fixed amount of memory, and at worst forgets the oldest of them sooner."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

MAX_FAILURE_KEYS = 10_000  # (source, username) pairs and usernames, each with its recent failures
MAX_FAILURES_PER_KEY = 64  # more than any lockout threshold: the count only has to reach it
MAX_NONCES = 50_000  # used nonce/response keys, each kept for its lifetime


class LocalAuthState:
    """The failure counters and first-use marks of `StateStore`, in this process's memory."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_failure_keys: int = MAX_FAILURE_KEYS,
        max_nonces: int = MAX_NONCES,
    ) -> None:
        self.clock, self.max_failure_keys, self.max_nonces = clock, max_failure_keys, max_nonces
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._used: OrderedDict[str, float] = OrderedDict()  # key -> used until (insertion order)

    async def note_auth_failure(self, source: str, window: float) -> int:
        now = self.clock()
        recent = self._failures.pop(source, None) or deque(maxlen=MAX_FAILURES_PER_KEY)
        recent.append(now)
        self._failures[source] = recent  # the most recent key last
        while len(self._failures) > self.max_failure_keys:
            self._failures.popitem(last=False)
        return sum(1 for at in recent if at > now - window)

    async def auth_failures(self, source: str, window: float) -> int:
        since = self.clock() - window
        return sum(1 for at in self._failures.get(source, ()) if at > since)

    async def auth_failures_of(self, sources: Sequence[str], window: float) -> list[int]:
        return [await self.auth_failures(source, window) for source in sources]

    async def clear_auth_failures(self, source: str) -> None:
        self._failures.pop(source, None)

    async def first_use(self, key: str, ttl: float) -> bool:
        """True the first time `key` is used within `ttl` seconds (then it is marked used)."""
        now = self.clock()
        until = self._used.get(key)
        if until is not None and until > now:
            return False
        self._used.pop(key, None)
        self._used[key] = now + ttl
        while len(self._used) > self.max_nonces:
            self._used.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._failures) + len(self._used)
