"""The control service's state: the configuration (ConfigStore) and the relay directory.

ConfigStore holds every Trunk, DID, Carrier and Secret, fed from manifest files now and from the
Kubernetes operator later (both call `replace`, `upsert` or `delete`). Each change gets the next
revision and goes to every watcher. A watcher subscribes and takes its snapshot in one step (no
await in between), so it sees every change after its snapshot exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trunkline.core.manifests import ConfigSet, ManifestProblem, load
from trunkline.core.models import Resource, Secret

Item = Resource | Secret
Key = tuple[str, str, str]  # (kind, namespace, name)

DEFAULT_KINDS = frozenset({"Trunk", "DID", "Carrier"})  # Secrets only when asked for by name
ALL_KINDS = DEFAULT_KINDS | {"Secret"}
WATCH_QUEUE = 4096  # changes buffered per watcher before it is cut off (and must re-watch)


@dataclass(frozen=True)
class Entry:
    """One resource as the store serves it: its JSON is made once, not once per watcher."""

    kind: str
    namespace: str
    name: str
    generation: int
    json: str  # "" for a deletion

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)


@dataclass(frozen=True)
class Change:
    revision: int
    deleted: bool
    entry: Entry


class WatcherOverflow(Exception):
    """The watcher fell more than WATCH_QUEUE changes behind; it must watch again (new snapshot)."""


@dataclass(eq=False)
class Watch:
    kinds: frozenset[str]
    queue: asyncio.Queue[Change | None] = field(default_factory=lambda: asyncio.Queue(WATCH_QUEUE))

    async def next(self) -> Change:
        change = await self.queue.get()
        if change is None:
            raise WatcherOverflow("fell behind the configuration changes; watch again")
        return change


def key_of(item: Item) -> Key:
    kind = item.kind if isinstance(item, Secret) else item.KIND
    return (kind, item.metadata.namespace, item.metadata.name)


def check_kinds(kinds: Iterable[str]) -> frozenset[str]:
    """The kinds a watcher asked for; ValueError for an unknown one."""
    wanted = frozenset(kinds) or DEFAULT_KINDS
    unknown = wanted - ALL_KINDS
    if unknown:
        raise ValueError(f"unknown kind(s) {sorted(unknown)}; expected some of {sorted(ALL_KINDS)}")
    return wanted


class ConfigStore:
    def __init__(self) -> None:
        self.revision = 0
        self._entries: dict[Key, Entry] = {}
        self._items: dict[Key, Item] = {}
        self._watches: set[Watch] = set()

    def items(self) -> list[Item]:
        return list(self._items.values())

    def get(self, kind: str, namespace: str, name: str) -> Item | None:
        return self._items.get((kind, namespace, name))

    def upsert(self, item: Item) -> bool:
        """Add or replace one resource; False when it is unchanged (no revision, no event)."""
        key = key_of(item)
        old = self._items.get(key)
        if old == item:
            return False
        old_entry = self._entries.get(key)
        generation = getattr(item.metadata, "generation", None) or (
            old_entry.generation + 1 if old_entry else 1
        )
        entry = Entry(*key, generation, item.model_dump_json())
        self._items[key], self._entries[key] = item, entry
        self._publish(deleted=False, entry=entry)
        return True

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        entry = self._entries.pop((kind, namespace, name), None)
        if entry is None:
            return False
        del self._items[entry.key]
        self._publish(deleted=True, entry=Entry(kind, namespace, name, entry.generation, ""))
        return True

    def replace(self, config: ConfigSet) -> int:
        """Make the store equal to `config`; returns the number of changes sent to watchers."""
        items: list[Item] = [*config.trunks.values(), *config.dids.values(), *config.carriers.values()]
        items.extend(config.secrets.values())
        wanted = {key_of(item): item for item in items}
        changes = sum(self.delete(*key) for key in list(self._items) if key not in wanted)
        # Referenced kinds first, so a watcher applying changes in order never sees a dangling reference.
        order = {"Secret": 0, "Carrier": 1, "Trunk": 2, "DID": 3}
        for key in sorted(wanted, key=lambda k: order[k[0]]):
            changes += self.upsert(wanted[key])
        return changes

    def load_files(self, paths: Iterable[str | Path]) -> list[ManifestProblem]:
        """Replace the configuration with the manifests' (only when they have no problem)."""
        config, problems = load(paths)
        if not problems:
            self.replace(config)
        return problems

    def watch(self, kinds: frozenset[str]) -> tuple[Watch, int, list[Entry]]:
        """Subscribe; returns the watch, the revision and the snapshot it starts from."""
        watch = Watch(kinds)
        self._watches.add(watch)
        snapshot = [entry for entry in self._entries.values() if entry.kind in kinds]
        return watch, self.revision, snapshot

    def unwatch(self, watch: Watch) -> None:
        self._watches.discard(watch)

    def _publish(self, deleted: bool, entry: Entry) -> None:
        self.revision += 1
        change = Change(self.revision, deleted, entry)
        for watch in list(self._watches):
            if entry.kind not in watch.kinds:
                continue
            try:
                watch.queue.put_nowait(change)
            except asyncio.QueueFull:  # never block the writer on a slow reader: cut it off
                self._watches.discard(watch)
                watch.queue.get_nowait()
                watch.queue.put_nowait(None)


@dataclass(frozen=True)
class RelayLoad:
    capacity: int
    active_sessions: int
    draining: bool = False


@dataclass
class Relay:
    relay_id: str
    grpc_address: str
    media_address: str
    load: RelayLoad
    last_seen: float


class RelayDirectory:
    """The relays that registered, and which of them is healthy: heartbeat within `timeout`."""

    def __init__(self, timeout: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._relays: dict[str, Relay] = {}

    def register(self, relay_id: str, grpc_address: str, media_address: str, load: RelayLoad) -> None:
        self._relays[relay_id] = Relay(relay_id, grpc_address, media_address, load, self._clock())

    def heartbeat(self, relay_id: str, load: RelayLoad) -> bool:
        """False for an unknown relay (it must register again)."""
        relay = self._relays.get(relay_id)
        if relay is None:
            return False
        relay.load, relay.last_seen = load, self._clock()
        return True

    def healthy(self) -> Iterator[Relay]:
        now = self._clock()
        for relay in self._relays.values():
            if now - relay.last_seen <= self.timeout:
                yield relay
            # Stale relays stay listed: a late heartbeat brings them back without a new Register.

    def pick(self, exclude: Iterable[str] = ()) -> Relay | None:
        """The healthy, not draining relay with room and the lowest share of its capacity in use."""
        skip = set(exclude)
        candidates = [
            relay
            for relay in self.healthy()
            if relay.relay_id not in skip
            and not relay.load.draining
            and relay.load.active_sessions < relay.load.capacity
        ]
        if not candidates:
            return None
        return min(
            candidates, key=lambda r: (r.load.active_sessions / r.load.capacity, r.load.active_sessions)
        )
