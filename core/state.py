"""Call state shared by every edge: channels, call rate, nonces, auth failures, registrations, dialogs.

One interface, two stores: `MemoryStore` (the embedded default, one process) here, and a Redis store
for a cluster. Every record that a call holds has a TTL that the call's refreshes extend, so state
whose owner vanished (a killed pod) expires instead of leaking.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


@dataclass(frozen=True)
class Binding:
    """A registered contact of an address of record."""

    contact: str  # the Contact URI to send requests to
    expires_at: float  # store clock seconds
    source: str = ""  # "udp:1.2.3.4:5060": where the REGISTER came from (NAT pinning, RFC 3581)
    call_id: str = ""
    cseq: int = 0


def aor_of(username: str) -> str:
    """The address of record a trunk registers as (its digest username): its bindings live under this
    key in the store, written by the edges' registrar and counted by the operator."""
    return f"sip:{username}"


def trunk_key(namespace: str, name: str) -> str:
    """How a trunk's counters are keyed in the store: names are unique only within a namespace."""
    return f"{namespace}/{name}"


class Admission(StrEnum):
    ADMITTED = "admitted"
    OVER_RATE = "callsPerSecond"  # the names of the limits in the Trunk spec
    NO_CHANNEL = "channels"
    DUPLICATE = "callId"  # a live call already has this Call-ID (RFC 3261 8.2.2.2: 482)


class CallEnd(StrEnum):
    """What `end_call_with_cdr` did."""

    ENDED = "ended"  # this caller ended the call: its CDR is in the stream
    LOST = "lost"  # a newer owner holds the call (a higher epoch): stand down, write nothing
    ALREADY_ENDED = "already-ended"  # someone ended it before: its CDR is already in the stream


CallState = dict[str, Any]  # what an edge needs to carry a call on: see edge/handover.py
ENDED_TTL = 3600.0  # how long an ended call's marker refuses a second end (and a second CDR)
CDR_STREAM_MAXLEN = 1_000_000  # the CDR stream is trimmed (approximately) to this many entries
# The epoch a call end replayed from an edge's spool is offered with: that call ended on the SIP side
# (BYEs answered or sent, or the caller refused), so its end wins over an edge that took the record
# over since; that holder finds the call ended at its next fenced step and stands down.
SPOOLED_END_EPOCH = 2**52


class StoreUnavailable(Exception):
    """The store did not answer in time or failed: the caller degrades (see core/state_redis.py)."""


class StateStore(Protocol):
    async def acquire_channel(self, trunk: str, call: str, limit: int | None, ttl: float) -> bool:
        """Take one of `limit` channels of `trunk` for `call` (None: unlimited); False when all are in use."""
        ...

    async def refresh_channel(self, trunk: str, call: str, ttl: float) -> None: ...

    async def release_channel(self, trunk: str, call: str) -> None: ...

    async def channels_in_use(self, trunk: str) -> int: ...

    async def take_call_slot(self, trunk: str, per_second: float | None) -> bool:
        """Admit one new call under a rate of `per_second` (None: unlimited)."""
        ...

    async def first_use(self, key: str, ttl: float) -> bool:
        """True the first time `key` is seen within `ttl` (nonce-count replay protection)."""
        ...

    async def note_auth_failure(self, source: str, window: float) -> int:
        """Count a failed authentication from `source`; returns the failures within `window` seconds."""
        ...

    async def auth_failures(self, source: str, window: float) -> int: ...

    async def auth_failures_of(self, sources: Sequence[str], window: float) -> list[int]:
        """`auth_failures` of each source, in one round trip (the lockout asks two per request)."""
        ...

    async def clear_auth_failures(self, source: str) -> None: ...

    async def put_binding(self, aor: str, binding: Binding) -> None: ...

    async def remove_binding(self, aor: str, contact: str) -> None: ...

    async def bindings(self, aor: str) -> list[Binding]: ...

    async def registered_contacts(self, aor: str) -> int:
        """How many live bindings `aor` has (a Trunk's status shows it)."""
        ...

    # -- calls: the records that let any edge carry any call -----------------------------------------
    # A call is owned by the edge that holds it in memory. Owners prove they live with `keep_alive`;
    # the calls of an owner that stopped doing so are handed to the next edge that calls it.

    async def admit(
        self, trunk: str, call: str, channels: int | None, per_second: float | None,
        owner: str, record: CallState, ttl: float,
    ) -> Admission:  # fmt: skip
        """Call rate, then a channel, then the call's record owned by `owner`: one atomic step.
        A call whose record is live (at any edge) is not admitted again: DUPLICATE."""
        ...

    async def save_call(
        self, trunk: str, call: str, owner: str, record: CallState, dialogs: list[str], ttl: float,
        epoch: int = 0,
    ) -> bool:  # fmt: skip
        """Write the call's record, findable by each of `dialogs`; record and channel now live `ttl`.
        Fenced: False, and nothing written, when a newer epoch holds the call or it has ended."""
        ...

    async def adopt_call(self, dialog: str, owner: str) -> CallState | None:
        """The record of the call that has `dialog`, handed over to `owner` with a new epoch (the
        record's "epoch"): its previous holder stands down at its next fenced write, timer or end.
        None when there is no such call."""
        ...

    async def end_call(self, trunk: str, call: str, owner: str, dialogs: list[str]) -> None:
        """Forget the call and free its channel."""
        ...

    async def keep_alive(self, owner: str, ttl: float, predecessors: str = "") -> list[CallState]:
        """`owner` lives for `ttl` more seconds. Returns the records of calls whose owners did not say so
        in time while the store answered, now owned by `owner` with a new epoch each (each orphan goes
        to exactly one edge). `predecessors` (a prefix, e.g. "<pod>/"): owners named with it, other than
        `owner`, count as lapsed now: earlier processes of the same pod, which a restart killed."""
        ...

    # -- fencing and the end of a call: exactly one CDR per call -------------------------------------
    async def bump_epoch(self, call: str) -> int | None:
        """Raise the call's epoch by one and return it (None: no such call). Whoever takes a call over
        bumps it; the previous holder's next `call_epoch` check or end then finds it stale."""
        ...

    async def call_epoch(self, call: str) -> int | None:
        """The call's current epoch (0 until first bumped); None when there is no record."""
        ...

    async def end_call_with_cdr(
        self, call: str, epoch: int, cdr_json: str, *, trunk: str = "", dialogs: Sequence[str] = ()
    ) -> CallEnd:
        """One atomic step: if `epoch` is not stale and the call was not ended yet, mark it ended (for
        ENDED_TTL), append `cdr_json` to the CDR stream, forget the call and free its channel in
        `trunk`. A call whose record already expired still gets its CDR (its owner is gone, nobody can
        hold a newer epoch). Stale epoch: LOST; ended before: ALREADY_ENDED; neither writes anything."""
        ...

    # -- upkeep: work one edge of all does for the installation (carrier registration, gateway probes)
    async def hold_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take the lease `name` for `owner` when nobody holds it, or renew it when `owner` does; it
        lapses after `ttl` seconds without renewal. False: another owner holds it."""
        ...

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up, only when `owner` holds it."""
        ...

    async def put_upkeep(self, name: str, state: dict[str, Any], ttl: float) -> None:
        """Publish the upkeep state `name` (e.g. a carrier's registration) for every edge and the
        operator to read; it is forgotten after `ttl` seconds unless written again."""
        ...

    async def upkeep(self, name: str) -> dict[str, Any] | None:
        """The upkeep state `name`, or None when nobody wrote it within its TTL."""
        ...

    async def count_call_failure(self, name: str, gateway: str, failed: bool, ttl: float) -> int:
        """Count a call to `gateway` that failed (408, 5xx, no answer) in a row in `name` and return
        the count, or reset it (`failed` False: the gateway answered) and return 0. Forgotten after
        `ttl` seconds without news."""
        ...

    async def call_failures(self, name: str) -> dict[str, int]:
        """The gateways' calls failed in a row, as `count_call_failure` keeps them."""
        ...

    # -- figures per minute: attempts, seizures and post-dial delay of each Carrier gateway ----------
    async def count_per_minute(self, name: str, counts: Mapping[str, int], ttl: float) -> None:
        """Add `counts` (field -> increment) into the bucket `name` of the current minute (store clock),
        one step; each minute's bucket is forgotten `ttl` seconds after its last write."""
        ...

    async def counts_per_minute(self, name: str, minutes: int) -> list[dict[str, int]]:
        """The buckets `name` of the last `minutes` minutes (at most MAX_MINUTES), the current minute
        first; a minute nobody counted in is an empty dict."""
        ...

    def now(self) -> float: ...


MAX_MINUTES = 120  # the most minute buckets one read returns: bounded cost


def upkeep_key(kind: str, namespace: str, name: str) -> str:
    """The lease and state name of one kind of upkeep ("registration", "health") of one Carrier."""
    return f"upkeep:{kind}:{namespace}/{name}"


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Call:
    record: CallState
    owner: str
    expires_at: float
    dialogs: list[str] = field(default_factory=list)
    epoch: int = 0


_PURGE_MIN = 64


@dataclass
class MemoryStore:
    """All state in this process's memory: for `trunkline up` and tests. Not shared between processes."""

    clock: Callable[[], float] = time.monotonic
    _channels: dict[str, dict[str, float]] = field(default_factory=dict)
    _purge_at: dict[str, int] = field(default_factory=dict)  # channels of a trunk that trigger a purge
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _seen: dict[str, float] = field(default_factory=dict)
    # (expiry, key) of `_seen`, oldest first: expired keys leave in O(log n) each, never by a full scan
    # (a busy trunk holds a nonce lifetime's worth of keys, tens of thousands).
    _seen_expiry: list[tuple[float, str]] = field(default_factory=list)
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _bindings: dict[str, dict[str, Binding]] = field(default_factory=dict)
    _calls: dict[str, _Call] = field(default_factory=dict)
    _dialogs: dict[str, str] = field(default_factory=dict)  # dialog key -> call
    _owners: dict[str, float] = field(default_factory=dict)  # owner -> lives until
    _ended: dict[str, float] = field(default_factory=dict)  # call -> marker lives until
    _ended_expiry: list[tuple[float, str]] = field(default_factory=list)
    _leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (owner, until)
    _upkeep: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)  # name -> (state, until)
    _call_failures: dict[str, tuple[dict[str, int], float]] = field(default_factory=dict)
    # name -> minute -> (counts, forgotten at)
    _minutes: dict[str, dict[int, tuple[dict[str, int], float]]] = field(default_factory=dict)
    # The CDR stream: the embedded default has no exporter, so this only bounds what tests can read.
    cdr_stream: deque[str] = field(default_factory=lambda: deque(maxlen=10_000))

    def now(self) -> float:
        return self.clock()

    def _live_channels(self, trunk: str) -> dict[str, float]:
        now = self.clock()
        calls = self._channels.setdefault(trunk, {})
        for call in [c for c, expiry in calls.items() if expiry <= now]:
            del calls[call]
        self._purge_at[trunk] = max(_PURGE_MIN, 2 * len(calls))
        return calls

    def _channels_of(self, trunk: str) -> dict[str, float]:
        """A trunk's channels, expired ones included until they double in number since the last purge
        (calls release theirs; only a lost edge's expire): a full pass per call cost O(live calls)."""
        calls = self._channels.get(trunk)
        if calls is None or len(calls) >= self._purge_at.get(trunk, _PURGE_MIN):
            return self._live_channels(trunk)
        return calls

    async def acquire_channel(self, trunk: str, call: str, limit: int | None, ttl: float) -> bool:
        calls, now = self._channels_of(trunk), self.clock()
        if limit is not None and calls.get(call, now) <= now and len(calls) >= limit:
            calls = self._live_channels(trunk)  # at the limit: count only the live ones
            if call not in calls and len(calls) >= limit:
                return False
        calls[call] = now + ttl
        return True

    async def refresh_channel(self, trunk: str, call: str, ttl: float) -> None:
        calls = self._channels_of(trunk)
        now = self.clock()
        if calls.get(call, now) > now:  # live (an expired channel is not brought back)
            calls[call] = now + ttl

    async def release_channel(self, trunk: str, call: str) -> None:
        self._channels.get(trunk, {}).pop(call, None)

    async def channels_in_use(self, trunk: str) -> int:
        return len(self._live_channels(trunk))

    async def take_call_slot(self, trunk: str, per_second: float | None) -> bool:
        # A token bucket holding at most one second's worth of calls (at least one call).
        if per_second is None:
            return True
        now, burst = self.clock(), max(1.0, per_second)
        bucket = self._buckets.setdefault(trunk, _Bucket(burst, now))
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * per_second)
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    async def first_use(self, key: str, ttl: float) -> bool:
        now = self.clock()
        seen, expiry = self._seen, self._seen_expiry
        while expiry and expiry[0][0] <= now:
            at, old = heapq.heappop(expiry)
            if seen.get(old) == at:
                del seen[old]
        if seen.get(key, 0.0) > now:
            return False
        seen[key] = now + ttl
        heapq.heappush(expiry, (now + ttl, key))
        return True

    async def note_auth_failure(self, source: str, window: float) -> int:
        now = self.clock()
        recent = [t for t in self._failures.get(source, []) if t > now - window]
        recent.append(now)
        self._failures[source] = recent[-1000:]
        return len(recent)

    async def auth_failures(self, source: str, window: float) -> int:
        since = self.clock() - window
        return sum(1 for t in self._failures.get(source, []) if t > since)

    async def auth_failures_of(self, sources: Sequence[str], window: float) -> list[int]:
        return [await self.auth_failures(source, window) for source in sources]

    async def clear_auth_failures(self, source: str) -> None:
        self._failures.pop(source, None)

    async def put_binding(self, aor: str, binding: Binding) -> None:
        self._bindings.setdefault(aor, {})[binding.contact] = binding

    async def remove_binding(self, aor: str, contact: str) -> None:
        self._bindings.get(aor, {}).pop(contact, None)

    async def bindings(self, aor: str) -> list[Binding]:
        now = self.clock()
        live = {c: b for c, b in self._bindings.get(aor, {}).items() if b.expires_at > now}
        self._bindings[aor] = live
        return sorted(live.values(), key=lambda b: -b.expires_at)

    async def registered_contacts(self, aor: str) -> int:
        now = self.clock()
        return sum(1 for b in self._bindings.get(aor, {}).values() if b.expires_at > now)

    async def admit(
        self, trunk: str, call: str, channels: int | None, per_second: float | None,
        owner: str, record: CallState, ttl: float,
    ) -> Admission:  # fmt: skip
        live = self._calls.get(call)
        if live is not None and live.expires_at > self.clock():
            return Admission.DUPLICATE
        if not await self.take_call_slot(trunk, per_second):
            return Admission.OVER_RATE
        if not await self.acquire_channel(trunk, call, channels, ttl):
            return Admission.NO_CHANNEL
        self._calls[call] = _Call(record, owner, self.clock() + ttl)
        return Admission.ADMITTED

    async def save_call(
        self, trunk: str, call: str, owner: str, record: CallState, dialogs: list[str], ttl: float,
        epoch: int = 0,
    ) -> bool:  # fmt: skip
        if self._is_ended(call):
            return False
        old = self._live_call(call)
        if old is not None and old.epoch > epoch:
            return False
        self._calls[call] = _Call(record, owner, self.clock() + ttl, list(dialogs), old.epoch if old else 0)
        for dialog in dialogs:
            self._dialogs[dialog] = call
        await self.refresh_channel(trunk, call, ttl)
        return True

    def _live_call(self, call: str) -> _Call | None:
        entry = self._calls.get(call)
        if entry is not None and entry.expires_at <= self.clock():
            self._forget(call)
            return None
        return entry

    def _forget(self, call: str) -> None:
        entry = self._calls.pop(call, None)
        for dialog in entry.dialogs if entry else []:
            self._dialogs.pop(dialog, None)

    async def adopt_call(self, dialog: str, owner: str) -> CallState | None:
        entry = self._live_call(self._dialogs.get(dialog, ""))
        if entry is None:
            return None
        entry.owner = owner
        entry.epoch += 1
        return {**entry.record, "epoch": entry.epoch}

    async def end_call(self, trunk: str, call: str, owner: str, dialogs: list[str]) -> None:
        self._forget(call)
        for dialog in dialogs:
            self._dialogs.pop(dialog, None)
        await self.release_channel(trunk, call)

    async def keep_alive(self, owner: str, ttl: float, predecessors: str = "") -> list[CallState]:
        now = self.clock()
        self._owners[owner] = now + ttl
        dead = {o for o, until in self._owners.items()
                if until <= now or (predecessors and o != owner and o.startswith(predecessors))}  # fmt: skip
        for o in dead:
            del self._owners[o]
        orphans = [c for c, e in self._calls.items() if e.owner in dead and e.expires_at > now]
        adopted = []
        for call in orphans:
            entry = self._calls[call]
            entry.owner, entry.epoch = owner, entry.epoch + 1
            adopted.append({**entry.record, "epoch": entry.epoch})
        return adopted

    async def bump_epoch(self, call: str) -> int | None:
        entry = self._live_call(call)
        if entry is None:
            return None
        entry.epoch += 1
        return entry.epoch

    async def call_epoch(self, call: str) -> int | None:
        entry = self._live_call(call)
        return None if entry is None else entry.epoch

    def _is_ended(self, call: str) -> bool:
        now, ended, expiry = self.clock(), self._ended, self._ended_expiry
        while expiry and expiry[0][0] <= now:
            at, old = heapq.heappop(expiry)
            if ended.get(old) == at:
                del ended[old]
        return call in ended

    async def end_call_with_cdr(
        self, call: str, epoch: int, cdr_json: str, *, trunk: str = "", dialogs: Sequence[str] = ()
    ) -> CallEnd:
        # No await before the last write: one step of the event loop, so atomic within this process.
        if self._is_ended(call):
            return CallEnd.ALREADY_ENDED
        entry = self._live_call(call)
        if entry is not None and entry.epoch > epoch:
            return CallEnd.LOST
        until = self.clock() + ENDED_TTL
        self._ended[call] = until
        heapq.heappush(self._ended_expiry, (until, call))
        self.cdr_stream.append(cdr_json)
        self._forget(call)
        for dialog in dialogs:
            self._dialogs.pop(dialog, None)
        if trunk:
            self._channels.get(trunk, {}).pop(call, None)
        return CallEnd.ENDED

    async def hold_lease(self, name: str, owner: str, ttl: float) -> bool:
        now = self.clock()
        held = self._leases.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._leases[name] = (owner, now + ttl)
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        held = self._leases.get(name)
        if held is not None and held[0] == owner:
            del self._leases[name]

    async def put_upkeep(self, name: str, state: dict[str, Any], ttl: float) -> None:
        self._upkeep[name] = (dict(state), self.clock() + ttl)

    async def upkeep(self, name: str) -> dict[str, Any] | None:
        found = self._upkeep.get(name)
        if found is None or found[1] <= self.clock():
            self._upkeep.pop(name, None)
            return None
        return dict(found[0])

    async def count_call_failure(self, name: str, gateway: str, failed: bool, ttl: float) -> int:
        counts = (await self.call_failures(name)) if name in self._call_failures else {}
        if failed:
            counts[gateway] = counts.get(gateway, 0) + 1
        else:
            counts.pop(gateway, None)
        self._call_failures[name] = (counts, self.clock() + ttl)
        return counts.get(gateway, 0)

    async def call_failures(self, name: str) -> dict[str, int]:
        found = self._call_failures.get(name)
        if found is None or found[1] <= self.clock():
            self._call_failures.pop(name, None)
            return {}
        return dict(found[0])

    async def count_per_minute(self, name: str, counts: Mapping[str, int], ttl: float) -> None:
        now = self.clock()
        buckets = self._minutes.setdefault(name, {})
        for minute in [m for m, (_, until) in buckets.items() if until <= now]:
            del buckets[minute]
        minute = int(now // 60)
        found = buckets.get(minute, ({}, 0.0))[0]
        for key, increment in counts.items():
            found[key] = found.get(key, 0) + increment
        buckets[minute] = (found, now + ttl)

    async def counts_per_minute(self, name: str, minutes: int) -> list[dict[str, int]]:
        now = self.clock()
        buckets, minute = self._minutes.get(name, {}), int(now // 60)
        shown = []
        for ago in range(max(0, min(minutes, MAX_MINUTES))):
            found = buckets.get(minute - ago)
            shown.append(dict(found[0]) if found is not None and found[1] > now else {})
        return shown
