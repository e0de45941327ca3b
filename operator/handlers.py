"""kopf handlers: thin glue between watch events and the reconcilers.

- Any event on a Trunk, DID, Carrier or credentials Secret asks for a sweep of its namespace;
  requests coalesce (a burst of events, including our own status writes, is one sweep).
- Deleting a Trunk goes through the `trunkline.io/drain` finalizer: the trunk is annotated with a
  drain deadline (the control service hands it to the edges, which take no new calls on it), and the
  finalizer goes once its calls have ended or the deadline has passed.
- A resync loop re-applies the data plane (repairing drift and picking up platform changes) and
  re-sweeps every namespace seen.
- With the edges' shared store (`--redis`), a daemon per Trunk copies its live counts (calls holding a
  channel, registered contacts) into its status every `counts_interval`, writing only changes, and a
  drain waits for the trunk's calls. Without the store the operator knows no counts: the status has
  none, and a drain ends at once.
- With the store, a loop reads every Carrier's registration and gateway health as the edges keep
  them (edge/upkeep.py) every `counts_interval` and asks for a sweep when they change: the Carrier's
  `Registered` and `Degraded` conditions follow. It reads the gateways' figures too (answer-seizure
  ratio, post-dial delay: core/gateway_figures.py); new values of those show at the next resync.
Nothing here raises on a bad object: problems end up in status or in the log.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from trunkline.core import telemetry
from trunkline.core.gateway_figures import LONG_WINDOW
from trunkline.core.models import API_VERSION, GROUP, VERSION, Secret, Trunk
from trunkline.core.state import StateStore, StoreUnavailable, trunk_key, upkeep_key
from trunkline.core.state_redis import RedisStore
from trunkline.operator.addresses import MEDIA_ADDRESS_READY, SIP_ADDRESS_READY, Addresses
from trunkline.operator.kube import Kube, connect
from trunkline.operator.reconcile import apply_platform_configmap, sweep_namespace, warning_event
from trunkline.operator.status import (
    DRAIN_ANNOTATION,
    CallCounts,
    CarrierUpkeep,
    carrier_upkeep,
    counts_patch,
    drain_deadline,
    drain_done,
    now_rfc3339,
    registration_aor,
    upkeep_changes,
)
from trunkline.operator.verdict import MESSAGE_LIMIT, Verdict, verdict, verdict_patch

log = logging.getLogger(__name__)

FINALIZER = "trunkline.io/drain"
CREDENTIAL_SECRET_TYPES = ("Opaque", "kubernetes.io/basic-auth")

# The API server refuses an object we built from the platform (a bad quantity, label...): the
# platform's fault, so a refusal like a model error. Other errors are the connection's or the RBAC's.
REFUSING_STATUSES = (400, 422)
UNCONVERTIBLE_OBJECT = ("failed to convert new object", "failed to create typed patch object")

registry = kopf.OperatorRegistry()


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
                with telemetry.span("reconcile namespace", {"k8s.namespace.name": namespace}):
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
    store: StateStore | None = None  # the edges' shared store; None: live counts are unknown
    counts_interval: float = 15.0
    kube: Kube = field(init=False)
    sweeper: Sweeper = field(init=False)
    _resync_task: asyncio.Task[None] | None = None
    _store_ok: bool = True
    upkeep: dict[tuple[str, str], CarrierUpkeep] = field(default_factory=dict)  # by Carrier key
    carriers: dict[tuple[str, str], str] = field(default_factory=dict)  # the Carriers seen: key -> uid
    _upkeep_task: asyncio.Task[None] | None = None
    _refused: str | None = None  # the reason last reported for the platform, while it is refused
    # The last verdict on the platform (None: none yet, or no --platform): the Trunks' PlatformReady.
    platform_verdict: Verdict | None = None
    # What the last applied platform found about addresses: the Trunks' SipAddressReady and
    # MediaAddressReady (kept through a refusal: they describe the data plane still running).
    addresses: Addresses | None = None
    _addresses_reported: dict[str, str] = field(default_factory=dict)  # condition -> message posted

    def start(self) -> None:
        self.kube = Kube(connect())
        self.sweeper = Sweeper(
            lambda ns: sweep_namespace(
                self.kube, ns, self.platform_verdict, dict(self.upkeep), self.addresses
            )
        )
        self._resync_task = asyncio.get_running_loop().create_task(self._resync_loop())
        if self.store is not None:
            self._upkeep_task = asyncio.get_running_loop().create_task(self._upkeep_loop())

    async def stop(self) -> None:
        self.sweeper.cancel()
        if self._resync_task:
            self._resync_task.cancel()
        if self._upkeep_task:
            self._upkeep_task.cancel()
        if isinstance(self.store, RedisStore):
            await self.store.close()

    async def read_counts(self, namespace: str, name: str, aor: str | None) -> CallCounts | None:
        """A trunk's live counts from the store; None when it cannot say (logged once per outage)."""
        assert self.store is not None
        try:
            calls = await self.store.channels_in_use(trunk_key(namespace, name))
            contacts = await self.store.registered_contacts(aor) if aor else 0
        except StoreUnavailable as exc:
            if self._store_ok:
                log.warning("live counts unavailable; trunk statuses keep their last counts: %s", exc)
            self._store_ok = False
            return None
        if not self._store_ok:
            log.info("live counts available again")
        self._store_ok = True
        return CallCounts(calls, contacts)

    async def read_upkeep(self, namespace: str, name: str) -> CarrierUpkeep | None:
        """A Carrier's upkeep from the store; None when it cannot say."""
        assert self.store is not None
        try:
            registration = await self.store.upkeep(upkeep_key("registration", namespace, name))
            health = await self.store.upkeep(upkeep_key("health", namespace, name))
            figures = await self.store.counts_per_minute(upkeep_key("figures", namespace, name), LONG_WINDOW)
        except StoreUnavailable:
            return None
        return carrier_upkeep(registration, health, time.time(), figures)

    async def _upkeep_loop(self) -> None:
        """Follow the Carriers' upkeep in the store; a change asks for a sweep of the namespace, which
        writes the conditions (one writer of the status: the sweep)."""
        while True:
            for key in sorted(self.carriers):
                seen = await self.read_upkeep(*key)
                if seen is None or key not in self.carriers:
                    continue
                before = self.upkeep.get(key)
                self.upkeep[key] = seen  # a new round trip alone shows at the next sweep (resync)
                if before is None or seen.significant() != before.significant():
                    self.sweeper.request(key[0])
                if before is not None:
                    await self._post_changes(key, upkeep_changes(before, seen))
            await asyncio.sleep(self.counts_interval)

    async def _post_changes(self, key: tuple[str, str], changes: list[tuple[str, str, str]]) -> None:
        """An Event on the Carrier per gateway up/down and registration gained/lost."""
        if not changes:
            return
        uid = self.carriers.get(key)
        if uid is None:
            return  # deleted meanwhile
        carrier = {"apiVersion": API_VERSION, "kind": "Carrier",
                   "metadata": {"namespace": key[0], "name": key[1], "uid": uid}}  # fmt: skip
        try:
            for event_type, reason, message in changes:
                event = warning_event(carrier, reason, message, now_rfc3339(), event_type)
                await asyncio.to_thread(self.kube.create, event)
        except ApiException as exc:
            log.error("Carrier %s/%s: cannot post an Event: %s %s", *key, exc.status, exc.reason)

    async def write_counts(self, namespace: str, name: str, status: Any, counts: CallCounts | None) -> None:
        patch = counts_patch(status, counts)
        if patch is None:
            return
        body = {"status": patch}
        try:
            await asyncio.to_thread(
                self.kube.merge_patch, API_VERSION, Trunk.KIND, namespace, name, body, sub="status"
            )
        except ApiException as exc:
            if exc.status != 404:  # gone: nothing to show counts on
                log.error("Trunk %s/%s: cannot write counts: %s %s", namespace, name, exc.status, exc.reason)

    async def _resync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            if self.platform:
                await self.apply_platform(*self.platform)
            if loop.time() >= next_sweep:
                for namespace in sorted(self.sweeper.known):
                    self.sweeper.request(namespace)
                next_sweep = loop.time() + self.resync
            # Sooner while the edges wait for their load balancer's address (operator/addresses.py).
            found = self.addresses
            await asyncio.sleep(found.next_apply(self.resync) if found else self.resync)

    async def apply_platform(self, namespace: str, name: str) -> None:
        """Apply the platform, then record the verdict on its ConfigMap (operator/verdict.py)."""
        try:
            configmap = await asyncio.to_thread(self.kube.get, "v1", "ConfigMap", namespace, name)
        except ApiException as exc:
            log.error("platform %s/%s not applied: %s %s", namespace, name, exc.status, exc.reason)
            return
        if configmap is None:  # nothing to record a verdict or an Event on
            log.error("platform %s/%s not applied: the ConfigMap is not found", namespace, name)
            return
        refusal: str | None = None
        try:
            attributes = {"k8s.namespace.name": namespace, "k8s.configmap.name": name}
            with telemetry.span("reconcile platform", attributes):
                found = await asyncio.to_thread(apply_platform_configmap, self.kube, configmap)
            self._record_addresses(found)
            await self._report_addresses(configmap, found)
        except ValueError as exc:  # a bad platform: keep running, the chart's owner must fix it
            refusal = str(exc)
        except ApiException as exc:
            if not refused_by_api_server(exc):  # unreachable, forbidden...: not the platform's fault
                log.error("platform %s/%s not applied: %s", namespace, name, api_error_message(exc))
                return
            refusal = f"the API server refused an object: {api_error_message(exc)}"
        if refusal is None:
            self._refused = None
        else:
            log.error("platform %s/%s not applied: %s", namespace, name, refusal)
            await self._report_refusal(configmap, refusal)
        await self._record_verdict(configmap, verdict(configmap, refusal))

    def _record_addresses(self, found: Addresses) -> None:
        before, self.addresses = self.addresses, found
        if before != found:  # their Trunks' address conditions
            for check in (found.sip, found.media):
                if check.ready is not True:
                    log.warning("%s: %s", check.reason, check.message)
            for namespace in sorted(self.sweeper.known):
                self.sweeper.request(namespace)

    async def _report_addresses(self, configmap: dict[str, Any], found: Addresses) -> None:
        """A Warning Event on the platform ConfigMap per address problem, once until it changes or is
        solved (a problem that comes back is posted again)."""
        for kind, check in ((SIP_ADDRESS_READY, found.sip), (MEDIA_ADDRESS_READY, found.media)):
            if check.ready is not False:
                self._addresses_reported.pop(kind, None)
                continue
            if self._addresses_reported.get(kind) == check.message:
                continue
            event = warning_event(configmap, check.reason, check.message, now_rfc3339())
            try:
                await asyncio.to_thread(self.kube.create, event)
            except ApiException as exc:
                meta = configmap["metadata"]
                log.error("platform %s/%s: cannot post an Event: %s %s",
                          meta["namespace"], meta["name"], exc.status, exc.reason)  # fmt: skip
                continue
            self._addresses_reported[kind] = check.message

    async def _record_verdict(self, configmap: dict[str, Any], new: Verdict) -> None:
        before, self.platform_verdict = self.platform_verdict, new
        if before is None or (before.applied, before.message) != (new.applied, new.message):
            for namespace in sorted(self.sweeper.known):  # their Trunks' PlatformReady condition
                self.sweeper.request(namespace)
        patch = verdict_patch(configmap, new)
        if patch is None:
            return
        meta = configmap["metadata"]
        try:
            await asyncio.to_thread(
                self.kube.merge_patch, "v1", "ConfigMap", meta["namespace"], meta["name"], patch
            )
        except ApiException as exc:
            log.error("platform %s/%s: cannot record its status: %s %s",
                      meta["namespace"], meta["name"], exc.status, exc.reason)  # fmt: skip

    async def _report_refusal(self, configmap: dict[str, Any], why: str) -> None:
        """A Warning Event on the platform ConfigMap (`kubectl describe configmap`, `kubectl get events`),
        once per distinct reason rather than every resync."""
        if why == self._refused:
            return
        meta = configmap["metadata"]
        event = warning_event(configmap, "PlatformRefused", f"data plane not deployed: {why}", now_rfc3339())
        try:
            await asyncio.to_thread(self.kube.create, event)
        except ApiException as exc:
            log.error("platform %s/%s: cannot post an Event: %s %s",
                      meta["namespace"], meta["name"], exc.status, exc.reason)  # fmt: skip
            return
        self._refused = why


def refused_by_api_server(exc: ApiException) -> bool:
    """An object built from the platform is bad: 400/422, or the 500 server-side apply answers when a
    field does not convert to its type (e.g. a CPU quantity "lots"): the same every time, so a refusal."""
    if exc.status in REFUSING_STATUSES:
        return True
    message = api_error_message(exc)
    return exc.status == 500 and any(marker in message for marker in UNCONVERTIBLE_OBJECT)


def api_error_message(exc: ApiException) -> str:
    """The API server's own words (its Status `message`: which object, which field), bounded."""
    try:
        message = json.loads(exc.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        message = f"{exc.status} {exc.reason}"
    return str(message)[:MESSAGE_LIMIT]


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
    await _state(memo).stop()


def _is_credentials(body: kopf.Body, **_: Any) -> bool:
    return body.get("type", "Opaque") in CREDENTIAL_SECRET_TYPES


@kopf.index("v1", "secrets", when=_is_credentials, registry=registry)
def credential_usernames(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], str]:
    """(namespace, Secret name) -> the username, for the trunks' addresses of record (kopf keeps this
    index current from the Secrets watch, so a count costs no API call). Only credentials the edges
    accept: a username and a password."""
    try:
        secret = Secret.model_validate(dict(body))
    except ValidationError:
        return {}
    username = secret.get("username")
    return {(namespace, name): username} if username and secret.get("password") else {}


def _aor(body: kopf.Body, kwargs: dict[str, Any]) -> str | None:
    # kopf hands each handler every index as a keyword argument named after the index's function.
    usernames: kopf.Index[tuple[str | None, str], str] = kwargs["credential_usernames"]
    try:
        trunk = Trunk.model_validate(dict(body))
    except ValidationError:
        return None  # its status says Invalid; the edges take no registrations for it
    digest = trunk.spec.auth.digest
    if digest is None:
        return None
    found: Iterable[str] = usernames.get((trunk.metadata.namespace, digest.credentialsSecret), [])
    return registration_aor(trunk, next(iter(found), None))


@kopf.daemon(GROUP, VERSION, "trunks", id="live-counts", registry=registry)
async def live_counts(
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    """Keep the trunk's activeCalls and registeredContacts in step with the store. A daemon rather
    than a timer: its period comes from the command line, and its rounds do not each log a line.
    `body` is live (kopf updates it from the watch), so each round compares with the current status."""
    assert namespace is not None  # trunks are namespaced
    state = _state(memo)
    while not stopped:
        if state.store is None:
            await state.write_counts(namespace, name, body.get("status"), None)  # none known: show none
        else:
            counts = await state.read_counts(namespace, name, _aor(body, kwargs))
            if counts is not None:  # else the store is out of reach: keep the last counts
                await state.write_counts(namespace, name, body.get("status"), counts)
        await stopped.wait(state.counts_interval)


@kopf.on.event(GROUP, VERSION, "carriers", id="carrier-seen", registry=registry)
async def carrier_seen(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """Keep the set of Carriers whose upkeep the store is read for (an event handler, not a daemon:
    a kopf daemon would put a finalizer on every Carrier)."""
    if namespace is None:
        return
    state = _state(memo)
    if event.get("type") == "DELETED":
        state.carriers.pop((namespace, name), None)
        state.upkeep.pop((namespace, name), None)
    else:
        state.carriers[(namespace, name)] = str(body.get("metadata", {}).get("uid", ""))


@kopf.on.event(GROUP, VERSION, "trunks", registry=registry)
@kopf.on.event(GROUP, VERSION, "dids", registry=registry)
@kopf.on.event(GROUP, VERSION, "carriers", registry=registry)
@kopf.on.event("v1", "secrets", when=_is_credentials, registry=registry)
async def changed(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        _state(memo).sweeper.request(namespace)


@kopf.on.delete(GROUP, VERSION, "trunks", registry=registry)
async def drain(
    body: kopf.Body,
    meta: kopf.Meta,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
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
    counts: CallCounts | None = CallCounts()  # without the store no calls are known: nothing to wait for
    if state.store is not None:
        counts = await state.read_counts(namespace, name, _aor(body, kwargs))
        if counts is not None:  # kopf has stopped the trunk's live-counts daemon: show the drain here
            await state.write_counts(namespace, name, body.get("status"), counts)
    if not drain_done(counts, deadline, now):
        left = (deadline - now).total_seconds()
        calls = "an unknown number of" if counts is None else str(counts.active_calls)
        raise kopf.TemporaryError(
            f"draining: {calls} live call(s)", delay=max(1.0, min(state.counts_interval, left))
        )
    logger.info("drained; removing the finalizer")
