"""kopf handlers: thin glue between watch events and the reconcilers.

- Any event on a Trunk, DID, Carrier or credentials Secret asks for a sweep of its namespace;
  requests coalesce (a burst of events, including our own status writes, is one sweep).
- Deleting a Trunk goes through the `trunkline.io/drain` finalizer: the trunk is annotated with a
  drain deadline (the control service hands it to the edges, which take no new calls on it), and the
  finalizer goes once its calls have ended or the deadline has passed.
- A resync loop re-applies the data plane (repairing drift and picking up platform changes) and
  re-sweeps every namespace seen, where live call counts will be refreshed.
Nothing here raises on a bad object: problems end up in status or in the log.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from trunkline.core.models import API_VERSION, GROUP, VERSION, Trunk
from trunkline.operator.kube import Kube, connect
from trunkline.operator.reconcile import reconcile_platform, sweep_namespace
from trunkline.operator.status import DRAIN_ANNOTATION, CallCounts, drain_deadline, drain_done, now_rfc3339

log = logging.getLogger(__name__)

FINALIZER = "trunkline.io/drain"
CREDENTIAL_SECRET_TYPES = ("Opaque", "kubernetes.io/basic-auth")

registry = kopf.OperatorRegistry()


def call_counts(namespace: str, name: str) -> CallCounts:
    """Live calls and registered contacts of a trunk.

    Hook for the control service, which will report them (from Redis); until then every trunk reads 0,
    so a drain ends at once.
    """
    return CallCounts()


class Sweeper:
    """Coalesces sweep requests per namespace and runs them one at a time, off the event loop."""

    def __init__(self, work: Callable[[str], object], delay: float = 0.2, retry: float = 5.0) -> None:
        self.work = work
        self.delay = delay
        self.retry = retry
        self.known: set[str] = set()
        self._pending: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def request(self, namespace: str) -> None:
        self.known.add(namespace)
        if namespace in self._pending:
            return
        self._pending.add(namespace)
        task = asyncio.get_running_loop().create_task(self._run(namespace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, namespace: str) -> None:
        await asyncio.sleep(self.delay)
        async with self._locks.setdefault(namespace, asyncio.Lock()):
            # Cleared before the work: an event during it must cause one more sweep.
            self._pending.discard(namespace)
            try:
                await asyncio.to_thread(self.work, namespace)
            except Exception:
                log.exception("sweep of namespace %s failed; retrying in %.0f s", namespace, self.retry)
                asyncio.get_running_loop().call_later(self.retry, self.request, namespace)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


@dataclass
class State:
    """What the handlers share (kopf's operator-level memo)."""

    platform: tuple[str, str] | None  # (namespace, name) of the platform ConfigMap
    drain_grace: float = 300.0
    resync: float = 60.0
    counts: Callable[[str, str], CallCounts] = call_counts
    kube: Kube = field(init=False)
    sweeper: Sweeper = field(init=False)
    _resync_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.kube = Kube(connect())
        self.sweeper = Sweeper(lambda ns: sweep_namespace(self.kube, ns, self.counts))
        self._resync_task = asyncio.get_running_loop().create_task(self._resync_loop())

    def stop(self) -> None:
        self.sweeper.cancel()
        if self._resync_task:
            self._resync_task.cancel()

    async def _resync_loop(self) -> None:
        while True:
            if self.platform:
                await self.apply_platform(*self.platform)
            for namespace in sorted(self.sweeper.known):
                self.sweeper.request(namespace)
            await asyncio.sleep(self.resync)

    async def apply_platform(self, namespace: str, name: str) -> None:
        try:
            await asyncio.to_thread(reconcile_platform, self.kube, namespace, name)
        except ValueError as exc:  # a bad platform: keep running, the chart's owner must fix it
            log.error("platform %s/%s not applied: %s", namespace, name, exc)
        except ApiException as exc:
            log.error("platform %s/%s not applied: %s %s", namespace, name, exc.status, exc.reason)


def _state(memo: Any) -> State:
    state: State = memo.state
    return state


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # An own registry has none of kopf's default login handlers: log in as our Kube client does.
    return kopf.login_via_client(**kwargs)


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Our CRDs are installed with the chart, before the operator: no need to watch CRDs or list
    # namespaces for new ones, and so no cluster-wide rights in namespace scope.
    settings.scanning.disabled = True
    # Events are posted for problems only; successes are in the log and the status.
    settings.posting.level = logging.WARNING
    _state(memo).start()


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    _state(memo).stop()


def _is_credentials(body: kopf.Body, **_: Any) -> bool:
    return body.get("type", "Opaque") in CREDENTIAL_SECRET_TYPES


@kopf.on.event(GROUP, VERSION, "trunks", registry=registry)
@kopf.on.event(GROUP, VERSION, "dids", registry=registry)
@kopf.on.event(GROUP, VERSION, "carriers", registry=registry)
@kopf.on.event("v1", "secrets", when=_is_credentials, registry=registry)
async def changed(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        _state(memo).sweeper.request(namespace)


@kopf.on.delete(GROUP, VERSION, "trunks", registry=registry)
async def drain(
    meta: kopf.Meta, namespace: str | None, name: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    assert namespace is not None  # trunks are namespaced
    state = _state(memo)
    now = datetime.datetime.now(datetime.UTC)
    annotations = dict(meta.annotations)
    deadline = drain_deadline(annotations, now, state.drain_grace)
    stamp = now_rfc3339(deadline)
    if annotations.get(DRAIN_ANNOTATION) != stamp:
        patch = {"metadata": {"annotations": {DRAIN_ANNOTATION: stamp}}}
        await asyncio.to_thread(state.kube.merge_patch, API_VERSION, Trunk.KIND, namespace, name, patch)
        state.sweeper.request(namespace)  # status: Draining; its DIDs: TrunkNotFound
    counts = state.counts(namespace, name)
    if not drain_done(counts, deadline, now):
        left = (deadline - now).total_seconds()
        raise kopf.TemporaryError(
            f"draining: {counts.active_calls} live call(s)", delay=max(1.0, min(15.0, left))
        )
    logger.info("drained; removing the finalizer")
