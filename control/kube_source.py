"""The control service's configuration from the Kubernetes API: `trunkline control --all-namespaces` or
`--namespace NS`, as the operator's Deployment runs it.

Trunks, DIDs, Carriers and Secrets are each listed, then watched. Events go to `KubeConfig`, which
holds what the API has (no I/O: the mapping is tested with plain dicts) and applies the differences
to the ConfigStore, whose watchers (edges, relays) get them at once. Only Secrets labelled
`trunkline.io/credentials` are listed at all, and only those a Trunk or a Carrier references are
published; the others stay in this process's memory and are never logged.

The `kubernetes` client blocks, so each kind's list+watch runs in its own thread and hands what it
reads to the event loop (call_soon_threadsafe keeps each kind's order); the store is only ever
touched on the loop. A watch that ends normally resumes from the last resourceVersion; after an
error, or 410 Gone (resourceVersion too old), the kind is listed afresh and the store made equal to
the list (`replace`), so nothing missed while disconnected survives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from trunkline.control.store import ConfigStore, Item
from trunkline.core.manifests import ConfigSet
from trunkline.core.models import (
    API_VERSION,
    CREDENTIALS_LABEL,
    Carrier,
    Resource,
    Secret,
    Trunk,
    parse_resource,
)

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]  # (namespace, name)
Key = tuple[str, str, str]  # (kind, namespace, name), as in the store


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    plural: str


SECRET = Kind("Secret", "v1", "secrets")
# Listed in this order at start: what is referenced before what references it.
KINDS = (
    SECRET,
    Kind("Carrier", API_VERSION, "carriers"),
    Kind("Trunk", API_VERSION, "trunks"),
    Kind("DID", API_VERSION, "dids"),
)
BY_NAME = {k.kind: k for k in KINDS}

# kubectl copies the whole object into this annotation (a Secret's data too): never publish it.
DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
KEPT_METADATA = ("name", "namespace", "generation", "uid", "labels", "annotations")


# ------------------------------------------------------------------------------------ pure mapping


def normalise(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
    """What the model reads of an API object. resourceVersion, managedFields and status change on
    every status write of the operator; left in, each would reach every edge as a config change.
    apiVersion and kind are set here because list responses omit them on built-in kinds' items."""
    meta = obj.get("metadata") or {}
    metadata = {key: meta[key] for key in KEPT_METADATA if meta.get(key) is not None}
    if "annotations" in metadata:
        metadata["annotations"] = {
            k: v for k, v in metadata["annotations"].items() if k not in DROPPED_ANNOTATIONS
        }
    doc: dict[str, Any] = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata}
    for field in ("data", "stringData") if kind is SECRET else ("spec",):
        if obj.get(field) is not None:
            doc[field] = obj[field]
    return doc


def describe(exc: Exception) -> str:
    """Why the model refused an object, by field and rule only: pydantic's own message quotes the
    input, which for a Secret is its value."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<object>'}: {err['msg']}" for err in exc.errors()
        )
    return type(exc).__name__ if isinstance(exc, KeyError) else str(exc)


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def references(item: Resource) -> frozenset[ObjectKey]:
    """The Secrets (namespace, name) a resource needs."""
    ns = item.metadata.namespace
    if isinstance(item, Trunk) and item.spec.auth.digest is not None:
        return frozenset({(ns, item.spec.auth.digest.credentialsSecret)})
    if isinstance(item, Carrier) and item.spec.auth is not None:
        return frozenset({(ns, item.spec.auth.credentialsSecret)})
    return frozenset()


class KubeConfig:
    """What the API server holds (as far as we have read it), and the store kept equal to it.

    A version of an object the model rejects is logged and skipped: the last good version, if any,
    stays (as a refused reload of files keeps the running configuration); deleting the object removes
    it. `synced` is set once every kind has been listed (in each of `namespaces`; None: all at once).
    """

    def __init__(self, store: ConfigStore, namespaces: Sequence[str] | None = None) -> None:
        self.store = store
        self.namespaces: tuple[str | None, ...] = tuple(namespaces) if namespaces else (None,)
        self.resources: dict[Key, Resource] = {}
        self.secrets: dict[ObjectKey, Secret] = {}  # all in scope; published only when referenced
        self.synced = asyncio.Event()
        self._listed: set[tuple[str, str | None]] = set()
        self._refs: dict[Key, frozenset[ObjectKey]] = {}
        self._ref_count: Counter[ObjectKey] = Counter()
        self._published: set[ObjectKey] = set()

    # -- from the watch threads (on the loop)

    def relist(self, kind: str, objects: list[dict[str, Any]], namespace: str | None = None) -> int:
        """A fresh list of one kind (in `namespace`; None: all) replaces what we had of it; returns the
        changes sent to watchers."""
        spec = BY_NAME[kind]

        def listed(ns: str) -> bool:
            return namespace is None or ns == namespace

        if spec is SECRET:
            fresh_secrets = {k: v for k, v in self.secrets.items() if not listed(k[0])}
            for obj in objects:
                secret = self._parse(spec, obj)
                ref = object_key(obj)
                if isinstance(secret, Secret):
                    fresh_secrets[ref] = secret
                elif ref in self.secrets:
                    fresh_secrets[ref] = self.secrets[ref]
            self.secrets = fresh_secrets
        else:
            kept = {k: v for k, v in self.resources.items() if k[0] != kind or not listed(k[1])}
            for obj in objects:
                ns, name = object_key(obj)
                key = (kind, ns, name)
                item = self._parse(spec, obj)
                if isinstance(item, Resource):
                    kept[key] = item
                elif key in self.resources:
                    kept[key] = self.resources[key]
            self.resources = kept
            self._refs = {k: references(v) for k, v in self.resources.items()}
            self._ref_count = Counter(ref for refs in self._refs.values() for ref in refs)
        config = self.config_set()
        self._published = set(config.secrets)
        changes = self.store.replace(config)
        self._listed.add((kind, namespace))
        if not self.synced.is_set() and self._listed >= {(k, ns) for k in BY_NAME for ns in self.namespaces}:
            self.synced.set()
            log.info("configuration from the Kubernetes API: %s", config.summary())
        return changes

    def apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) of one kind."""
        spec = BY_NAME[kind]
        ns, name = object_key(obj)
        if spec is SECRET:
            self._apply_secret(event_type, (ns, name), obj)
            return
        key = (kind, ns, name)
        if event_type == "DELETED":
            self.resources.pop(key, None)
            self.store.delete(*key)
            self._set_refs(key, frozenset())
            self._retract_secrets()
            return
        item = self._parse(spec, obj)
        if not isinstance(item, Resource):
            return
        self.resources[key] = item
        self._set_refs(key, references(item))
        # Referenced Secrets first, unreferenced ones last: a watcher applying changes in order never
        # sees a resource whose Secret is missing.
        self._publish_secrets()
        self.store.upsert(item)
        self._retract_secrets()

    # -- derived state

    def referenced(self) -> set[ObjectKey]:
        return {ref for ref, count in self._ref_count.items() if count > 0}

    def config_set(self) -> ConfigSet:
        config = ConfigSet()
        for item in self.resources.values():
            config.add(item)
        for ref in self.referenced():
            if ref in self.secrets:
                config.add(self.secrets[ref])
        return config

    # -- internals

    def _apply_secret(self, event_type: str, key: ObjectKey, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            self.secrets.pop(key, None)
            if key in self._published:
                self._published.discard(key)
                self.store.delete("Secret", *key)
            return
        secret = self._parse(SECRET, obj)
        if not isinstance(secret, Secret):
            return
        self.secrets[key] = secret
        if self._ref_count[key] > 0:
            self._published.add(key)
            self.store.upsert(secret)

    def _set_refs(self, key: Key, refs: frozenset[ObjectKey]) -> None:
        old = self._refs.pop(key, frozenset())
        self._ref_count.subtract(old)
        self._ref_count.update(refs)
        if refs:
            self._refs[key] = refs

    def _publish_secrets(self) -> None:
        for ref in self.referenced() - self._published:
            if ref in self.secrets:
                self._published.add(ref)
                self.store.upsert(self.secrets[ref])

    def _retract_secrets(self) -> None:
        for ref in self._published - self.referenced():
            self._published.discard(ref)
            self.store.delete("Secret", *ref)

    @staticmethod
    def _parse(kind: Kind, obj: dict[str, Any]) -> Item | None:
        ns, name = object_key(obj)
        try:
            return parse_resource(normalise(kind, obj))
        except (KeyError, ValueError, ValidationError) as exc:
            log.error("skipping %s %s/%s: the model rejects it: %s", kind.kind, ns, name, describe(exc))
            return None


# ------------------------------------------------------------------------------------ I/O

WATCH_SECONDS = 300  # the API server ends each watch after this; we resume from where it stopped
READ_TIMEOUT = WATCH_SECONDS + 30  # no byte for this long (not even the end): the connection is dead
CONNECT_TIMEOUT = 10
LIST_PAGE = 500
MAX_BACKOFF = 10.0


def connect() -> ApiClient:
    """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG. kubernetes.config.ConfigException when
    neither is usable."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        # Read now: the client's default is $KUBECONFIG as it was when `kubernetes` was imported.
        kubernetes.config.load_kube_config(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return ApiClient()


def collection_path(kind: Kind, namespace: str | None) -> str:
    base = "/api/v1" if kind.api_version == "v1" else f"/apis/{kind.api_version}"
    return f"{base}/namespaces/{namespace}/{kind.plural}" if namespace else f"{base}/{kind.plural}"


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class KubeSource:
    """List and watch every kind in `namespace` (None: all namespaces; several: each of them, with
    Roles there and no cluster-wide rights) into `config`."""

    def __init__(self, store: ConfigStore, namespace: str | Sequence[str] | None, api: ApiClient) -> None:
        namespaces = [namespace] if isinstance(namespace, str) else list(namespace or [])
        self.config = KubeConfig(store, namespaces)
        self.namespaces = self.config.namespaces
        self.api = api
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: dict[str, Any] = {}  # the open watch response per kind, to cut on stop
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def synced(self) -> asyncio.Event:
        return self.config.synced

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # urllib3 logs each of its own retries; our one line per failed attempt says enough.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        scope = ", ".join(ns for ns in self.namespaces if ns) or "all namespaces"
        log.info("reading the configuration from the Kubernetes API (%s)", scope)
        for namespace in self.namespaces:
            for kind in KINDS:
                # Daemon threads: a watch blocked in a read must not keep the process alive at exit.
                thread = threading.Thread(
                    target=self._run, args=(kind, namespace), name=f"watch-{kind.plural}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    async def stop(self) -> None:
        self._stopping.set()
        for response in list(self._responses.values()):
            try:
                response.shutdown()  # unblocks a read in progress (urllib3 >= 2.3)
            except Exception:  # best effort; the threads are daemons anyway
                pass
        await asyncio.to_thread(self._join, 5.0)

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- in the watch threads

    def _post(self, callback: Callable[..., object], *args: object) -> bool:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: we are shutting down
            return False
        return True

    def _run(self, kind: Kind, namespace: str | None) -> None:
        delay = 0.0
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    objects, version = self._list(kind, namespace)
                    if not self._post(self.config.relist, kind.kind, objects, namespace):
                        return
                for event_type, obj in self._watch(kind, namespace, version):
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event_type in ("ADDED", "MODIFIED", "DELETED") and not self._post(
                        self.config.apply, kind.kind, event_type, obj
                    ):
                        return
                    delay = 0.0
                continue  # the server's watch timeout: resume from `version`
            except Gone:
                log.info("watch of %s expired (410 Gone); listing again", kind.plural)
                version = None
                continue
            except ApiException as exc:
                log.warning("%s: HTTP %s %s; listing again", kind.plural, exc.status, exc.reason)
            except Exception as exc:  # connection errors of every kind: retry, never die
                if self._stopping.is_set():
                    return
                log.warning("%s: %s: %s; listing again", kind.plural, type(exc).__name__, exc)
            version = None
            delay = min(max(delay * 2, 0.2), MAX_BACKOFF)
            self._stopping.wait(delay)

    def _request(self, path: str, query: list[tuple[str, str]], read_timeout: float) -> Any:
        method, url, headers, body, post = self.api.param_serialize(
            "GET",
            path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            method, url, headers, body, post, _request_timeout=(CONNECT_TIMEOUT, read_timeout)
        )
        if not 200 <= response.status <= 299:
            data: bytes = response.read()  # type: ignore[no-untyped-call]
            if response.status == 410:
                raise Gone()
            raise ApiException(
                status=response.status, reason=response.reason, body=data.decode(errors="replace")
            )
        return response

    def _list(self, kind: Kind, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every object of `kind` in scope (paged), and the resourceVersion to watch from."""
        objects: list[dict[str, Any]] = []
        query = [("limit", str(LIST_PAGE)), *_selector(kind)]
        while True:
            page = json.loads(self._request(collection_path(kind, namespace), query, 60).read())
            objects.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return objects, str(meta.get("resourceVersion", ""))
            query = [("limit", str(LIST_PAGE)), ("continue", meta["continue"]), *_selector(kind)]

    def _watch(self, kind: Kind, namespace: str | None, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        query = [
            ("watch", "1"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
            *_selector(kind),
        ]
        response = self._request(collection_path(kind, namespace), query, READ_TIMEOUT)
        raw = response.response  # the urllib3 response, read as it arrives
        watch = f"{kind.kind}/{namespace or ''}"
        self._responses[watch] = raw
        try:
            # stop() sets _stopping, then cuts the responses it finds: checking after registering
            # ours means either it cuts this one or we see the flag; never a watch left open.
            if self._stopping.is_set():
                return
            for line in _lines(raw):
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                yield str(event.get("type")), obj
        finally:
            self._responses.pop(watch, None)
            # close() first: a connection left mid-stream must not go back to the pool for reuse.
            raw.close()
            raw.release_conn()


def _selector(kind: Kind) -> list[tuple[str, str]]:
    """Only the Secrets labelled as credentials are ever read (a label removed: a DELETED event)."""
    return [("labelSelector", CREDENTIALS_LABEL)] if kind is SECRET else []


def _lines(response: Any) -> Iterator[bytes]:
    """The watch stream's events: one JSON document per line, arriving in chunks of any size."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buffer.strip():
        yield buffer
