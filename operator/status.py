"""Status of Trunks, DIDs and Carriers: pure functions of the resources of one namespace.

Conditions follow the Kubernetes conventions: `Ready` and `Degraded` are always both present, carry
the `observedGeneration` they were computed for, and keep their `lastTransitionTime` unless their
status changes (so a re-sweep that finds nothing new writes nothing). A Trunk's `activeCalls` and
`registeredContacts` are not derived from resources but read from the edges' shared store, and written
apart from the conditions (`counts_patch`).
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from trunkline.core.gateway_figures import LONG_WINDOW, SHORT_WINDOW, GatewayFigures, window
from trunkline.core.manifests import ConfigSet
from trunkline.core.models import (
    CREDENTIALS_LABEL,
    DID,
    RESOURCE_KINDS,
    Carrier,
    Condition,
    Resource,
    ResourceStatus,
    Secret,
    Trunk,
)
from trunkline.core.state import aor_of
from trunkline.operator.addresses import MEDIA_ADDRESS_READY, SIP_ADDRESS_READY, Addresses
from trunkline.operator.verdict import MESSAGE_LIMIT, Verdict

# Reasons a resource is not Ready.
MISSING_SECRET = "MissingSecret"
DUPLICATE_DID = "DuplicateDID"
NO_CARRIER_FOR_PREFIX = "NoCarrierForPrefix"
TRUNK_NOT_FOUND = "TrunkNotFound"
INVALID = "Invalid"  # what the CRD schema cannot catch but the model does
DRAINING = "Draining"
RECONCILED = "Reconciled"

DRAIN_ANNOTATION = "trunkline.io/drain-deadline"
# A Carrier's upkeep, as the edges report it in the shared store (edge/upkeep.py).
REGISTERED = "Registered"  # the condition, and its reason when True
REGISTRATION_FAILED = "RegistrationFailed"
NOT_REPORTED = "NotReported"
GATEWAYS_DOWN = "GatewaysDown"
PLATFORM_READY = "PlatformReady"  # a Trunk's condition: the operator's verdict on the platform


@dataclass(frozen=True)
class StatusProblem:
    reason: str
    message: str


@dataclass(frozen=True)
class CallCounts:
    """Live counts of a trunk, as the edges keep them in the shared store."""

    active_calls: int = 0
    registered_contacts: int = 0


COUNT_FIELDS = ("activeCalls", "registeredContacts")


@dataclass(frozen=True)
class GatewaySeen:
    """One gateway as the probing edge last wrote it."""

    uri: str
    up: bool
    changed_at: float = 0.0  # seconds since the epoch of the last up/down change (0: never)
    status: int = 0  # the last probe's final status (0: none yet)
    latency: float = 0.0  # the last answered probe's round trip, seconds


@dataclass(frozen=True)
class GatewayQuality:
    """One gateway's figures (core/gateway_figures.py) over the last 5 and 60 minutes."""

    uri: str
    short: GatewayFigures  # the last 5 minutes (no attempts: all 0)
    long: GatewayFigures  # the last 60 minutes: at least one attempt


@dataclass(frozen=True)
class CarrierUpkeep:
    """A Carrier's registration, gateway health and gateway figures as the edges keep them in the
    shared store."""

    registered: bool | None = None  # None: no edge reported the registration (off, or not yet)
    registration: str = ""  # where, until when, or why not
    gateways: tuple[GatewaySeen, ...] = ()
    quality: tuple[GatewayQuality, ...] = ()

    @property
    def down(self) -> tuple[str, ...]:
        return tuple(sorted(g.uri for g in self.gateways if not g.up))

    def significant(self) -> tuple[object, ...]:
        """What is worth a status write at once (a probe's round trip alone, or new figures of a
        gateway already shown, wait for the resync: calls would otherwise write the status each round)."""
        health = tuple((g.uri, g.up, g.status) for g in self.gateways)
        return (self.registered, self.registration, health, tuple(q.uri for q in self.quality))


def _at(seconds: float) -> str:
    return now_rfc3339(datetime.datetime.fromtimestamp(seconds, datetime.UTC))


def _number(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def carrier_upkeep(
    registration: Mapping[str, Any] | None,
    health: Mapping[str, Any] | None,
    now: float,
    figures: Sequence[Mapping[str, int]] = (),
) -> CarrierUpkeep:
    """Read the store's upkeep states (`upkeep_key("registration"|"health", ...)`, written by the
    edges) and per-minute gateway figures (`upkeep_key("figures", ...)`, newest minute first)
    defensively: a field of the wrong type reads as unknown, never as an error."""
    registered, message = None, ""
    if registration:
        until, status = registration.get("registered_until"), registration.get("status")
        where = str(registration.get("registrar_uri", ""))[:200]
        if isinstance(until, int | float) and until > now:
            registered = True
            message = f"registered at {where} until {_at(until)}"  # changes only with a refresh
        elif isinstance(status, int):
            registered = False
            failures = registration.get("failures")
            reason = str(registration.get("reason", ""))[:200]
            message = f"last REGISTER to {where}: {status} {reason}".rstrip()
            if isinstance(failures, int) and failures > 0:
                message += f" ({failures} failure(s) in a row; retrying with back-off)"
    stored = (health or {}).get("gateways")
    gateways: list[GatewaySeen] = []
    if isinstance(stored, Mapping):
        for uri, g in list(stored.items())[:64]:
            if isinstance(g, Mapping) and isinstance(g.get("up"), bool):
                seen = GatewaySeen(str(uri)[:512], g["up"], _number(g.get("changed_at")),
                                   int(_number(g.get("status"))), _number(g.get("latency")))  # fmt: skip
                gateways.append(seen)
    short = window(figures, SHORT_WINDOW)
    quality = tuple(
        GatewayQuality(uri, short.get(uri, GatewayFigures()), long)
        for uri, long in window(figures, LONG_WINDOW).items()
    )
    return CarrierUpkeep(registered, message, tuple(gateways), quality)


def upkeep_changes(before: CarrierUpkeep, after: CarrierUpkeep) -> list[tuple[str, str, str]]:
    """The Events a change of upkeep is worth: (Normal|Warning, reason, message) per gateway that went
    up or down and per registration gained or lost."""
    changes = []
    was = {g.uri: g.up for g in before.gateways}
    for g in after.gateways:
        if was.get(g.uri, True) != g.up:  # a gateway starts up (edge/gateway_health.py)
            if g.up:
                changes.append(("Normal", "GatewayUp", f"gateway {g.uri} answers its probes again"))
            else:
                changes.append(
                    ("Warning", "GatewayDown", f"gateway {g.uri} is down (last status {g.status})")
                )
    if after.registered is True and before.registered is not True:
        changes.append(("Normal", REGISTERED, after.registration))
    elif after.registered is False and before.registered is not False:
        changes.append(("Warning", REGISTRATION_FAILED, after.registration))
    return changes


def gateway_statuses(carrier: Carrier, live: CarrierUpkeep) -> list[dict[str, Any]] | None:
    """`status.gateways`: each gateway of the spec, in its order, that was probed (`spec.health`) or
    had attempts in the last 60 minutes (None: none)."""
    seen = {g.uri: g for g in live.gateways} if carrier.spec.health is not None else {}
    figures = {q.uri: q for q in live.quality}
    shown = []
    for gateway in carrier.spec.gateways:
        g, q = seen.get(gateway.uri), figures.get(gateway.uri)
        if g is None and q is None:
            continue
        entry: dict[str, Any] = {"uri": gateway.uri}
        if g is not None:
            entry["state"] = "Up" if g.up else "Down"
            if g.changed_at > 0:
                entry["lastTransitionTime"] = now_rfc3339(
                    datetime.datetime.fromtimestamp(g.changed_at, datetime.UTC)
                )
            if g.status:
                entry["lastStatus"] = g.status
            if g.latency > 0:
                entry["latencyMs"] = round(g.latency * 1000)
        if q is not None:
            entry.update(quality_fields(q.short, "5m"))
            entry.update(quality_fields(q.long, "60m"))
        shown.append(entry)
    return shown or None


def quality_fields(figures: GatewayFigures, suffix: str) -> dict[str, Any]:
    """`attempts<suffix>`, and `asr<suffix>` (a ratio), `pdd<suffix>` and `pdd<suffix>P90` (seconds)
    when known."""
    fields: dict[str, Any] = {f"attempts{suffix}": figures.attempts}
    if figures.asr is not None:
        fields[f"asr{suffix}"] = round(figures.asr, 3)
    if figures.pdd is not None:
        fields[f"pdd{suffix}"] = round(figures.pdd, 3)
    if figures.pdd_p90 is not None:
        fields[f"pdd{suffix}P90"] = figures.pdd_p90
    return fields


def now_rfc3339(clock: datetime.datetime | None = None) -> str:
    moment = clock or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def creation_order(item: Resource) -> tuple[str, str]:
    """Who came first: by creationTimestamp (RFC 3339 sorts as text), then by name."""
    extra = item.metadata.model_extra or {}
    return (str(extra.get("creationTimestamp", "")), item.name)


# ---------------------------------------------------------------- problems per kind


def _secret_problem(
    config: ConfigSet, namespace: str, name: str, keys: tuple[str, ...]
) -> StatusProblem | None:
    secret = config.secrets.get((namespace, name))
    if secret is None:
        return StatusProblem(
            MISSING_SECRET, f"Secret {name!r} not found (with the label {CREDENTIALS_LABEL})"
        )
    missing = [key for key in keys if not secret.get(key)]
    if missing:
        return StatusProblem(MISSING_SECRET, f"Secret {name!r} has no {', '.join(missing)}")
    return None


def trunk_problems(trunk: Trunk, config: ConfigSet) -> list[StatusProblem]:
    problems: list[StatusProblem] = []
    namespace = trunk.metadata.namespace
    digest = trunk.spec.auth.digest
    if digest:
        problem = _secret_problem(config, namespace, digest.credentialsSecret, ("username", "password"))
        if problem:
            problems.append(problem)
    carriers = [c for (ns, _), c in config.carriers.items() if ns == namespace]
    for prefix in trunk.spec.outbound.allowedPrefixes or []:
        # A carrier serves every number of `prefix` if one of its prefixes (or the default route) covers it.
        if not any(
            not c.spec.prefixes or any(prefix.startswith(p) for p in c.spec.prefixes) for c in carriers
        ):
            problems.append(
                StatusProblem(NO_CARRIER_FOR_PREFIX, f"no Carrier serves allowed prefix {prefix}")
            )
    return problems


def duplicate_claims(config: ConfigSet) -> dict[tuple[str, str], DID]:
    """Each DID that claims a number an earlier DID already holds -> the holder."""
    claims: dict[str, list[DID]] = defaultdict(list)
    for did in config.dids.values():
        claims[did.spec.number].append(did)
    losers: dict[tuple[str, str], DID] = {}
    for dids in claims.values():
        first, *rest = sorted(dids, key=creation_order)
        losers.update({did.key: first for did in rest})
    return losers


def did_problems(did: DID, config: ConfigSet, duplicates: dict[tuple[str, str], DID]) -> list[StatusProblem]:
    problems: list[StatusProblem] = []
    holder = duplicates.get(did.key)
    if holder:
        problems.append(
            StatusProblem(DUPLICATE_DID, f"{did.spec.number} is already claimed by DID {holder.name!r}")
        )
    if (did.metadata.namespace, did.spec.trunkRef) not in config.trunks:
        problems.append(StatusProblem(TRUNK_NOT_FOUND, f"Trunk {did.spec.trunkRef!r} not found"))
    return problems


def carrier_problems(carrier: Carrier, config: ConfigSet) -> list[StatusProblem]:
    auth = carrier.spec.auth
    if auth is None:
        return []
    # The edge answers the carrier's digest challenges with both keys (docs/carriers.md).
    problem = _secret_problem(
        config, carrier.metadata.namespace, auth.credentialsSecret, ("username", "password")
    )
    return [problem] if problem else []


# ---------------------------------------------------------------- conditions and status


def _condition(
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    previous: dict[str, Condition],
    now: str,
) -> dict[str, Any]:
    value = "Unknown" if status is None else "True" if status else "False"
    before = previous.get(type_)
    since = (
        before.lastTransitionTime if before and before.status == value and before.lastTransitionTime else now
    )
    # No nulls: the API server prunes them, and the stored status must equal ours or every sweep rewrites it.
    return Condition(
        type=type_, status=value, reason=reason, message=message, lastTransitionTime=since,
        observedGeneration=generation,
    ).model_dump(exclude_none=True)  # fmt: skip


def build_conditions(
    problems: list[StatusProblem],
    generation: int | None,
    previous: list[Condition],
    now: str,
    not_ready: StatusProblem | None = None,
    degraded: list[StatusProblem] | None = None,
) -> list[dict[str, Any]]:
    """Ready and Degraded from a list of problems; `not_ready` is a reason to be unready that is no
    fault, `degraded` faults that leave the resource ready (e.g. a gateway down)."""
    before = {c.type: c for c in previous}
    faults = problems + (degraded or [])
    message = "; ".join(p.message for p in faults)
    first = faults[0].reason if faults else RECONCILED
    blocker = not_ready or (problems[0] if problems else None)
    return [
        _condition("Ready", blocker is None, blocker.reason if blocker else RECONCILED,
                   blocker.message if blocker else "", generation, before, now),
        _condition("Degraded", bool(faults), first, message, generation, before, now),
    ]  # fmt: skip


def _status(
    item: Resource, problems: list[StatusProblem], now: str, not_ready: StatusProblem | None = None
) -> dict[str, Any]:
    previous = item.status.conditions if item.status else []
    return _generation_status(item.metadata.generation, build_conditions(
        problems, item.metadata.generation, previous, now, not_ready))  # fmt: skip


def _generation_status(generation: int | None, conditions: list[dict[str, Any]]) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def drain_problem(trunk: Trunk) -> StatusProblem | None:
    deadline = trunk.metadata.annotations.get(DRAIN_ANNOTATION)
    if deadline is None:
        return None
    return StatusProblem(DRAINING, f"deleted: no new calls; live calls may last until {deadline}")


def build_trunk_status(
    trunk: Trunk,
    config: ConfigSet,
    *,
    now: str,
    platform: Verdict | None = None,
    addresses: Addresses | None = None,
) -> dict[str, Any]:
    """Conditions only: the live counts are written apart (`counts_patch`), on their own schedule.
    With the operator's verdict on the platform, also `PlatformReady`: whether the data plane that
    carries the trunk's calls is deployed as the chart's values say (not part of Ready: a refused
    upgrade leaves the previous data plane running). With what the last apply found about addresses,
    also `SipAddressReady` and `MediaAddressReady`: whether peers outside get an address for the edges
    and for every relay (operator/addresses.py)."""
    status = _status(trunk, trunk_problems(trunk, config), now, drain_problem(trunk))
    previous = {c.type: c for c in (trunk.status.conditions if trunk.status else [])}
    generation = trunk.metadata.generation
    if platform is not None:
        message = "" if platform.applied else f"platform settings refused: {platform.message}"
        status["conditions"].append(
            _condition(PLATFORM_READY, platform.applied, platform.reason, message, generation, previous, now)
        )
    if addresses is not None:
        for type_, check in ((SIP_ADDRESS_READY, addresses.sip), (MEDIA_ADDRESS_READY, addresses.media)):
            message = check.message[:MESSAGE_LIMIT]
            status["conditions"].append(
                _condition(type_, check.ready, check.reason, message, generation, previous, now)
            )
    return status


def build_did_status(
    did: DID, config: ConfigSet, *, now: str, duplicates: dict[tuple[str, str], DID] | None = None
) -> dict[str, Any]:
    duplicates = duplicate_claims(config) if duplicates is None else duplicates
    return _status(did, did_problems(did, config, duplicates), now)


def build_carrier_status(
    carrier: Carrier, config: ConfigSet, *, now: str, upkeep: CarrierUpkeep | None = None
) -> dict[str, Any]:
    """Ready and Degraded (down gateways and a failing registration degrade it), and `Registered`
    while `spec.registration` is on; `upkeep` None: the store's view is not known."""
    live = upkeep or CarrierUpkeep()
    degraded = []
    if live.down:
        degraded.append(StatusProblem(GATEWAYS_DOWN, "gateways down: " + ", ".join(live.down)))
    registering = carrier.spec.registration.enabled
    if registering and live.registered is False:
        degraded.append(StatusProblem(REGISTRATION_FAILED, live.registration))
    previous = carrier.status.conditions if carrier.status else []
    generation = carrier.metadata.generation
    problems = carrier_problems(carrier, config)
    conditions = build_conditions(problems, generation, previous, now, degraded=degraded)
    if registering:
        reason = (
            NOT_REPORTED
            if live.registered is None
            else REGISTERED
            if live.registered
            else REGISTRATION_FAILED
        )
        message = live.registration or "no edge has reported the registration yet"
        before = {c.type: c for c in previous}
        conditions.append(_condition(REGISTERED, live.registered, reason, message, generation, before, now))
    status = _generation_status(generation, conditions)
    status["gateways"] = gateway_statuses(carrier, live)  # None removes a list no longer kept
    return status


def build_invalid_status(
    generation: int | None, previous: list[Condition], message: str, now: str
) -> dict[str, Any]:
    """For an object the API server accepted but the model rejects: reported, never fatal."""
    return _generation_status(
        generation, build_conditions([StatusProblem(INVALID, message)], generation, previous, now)
    )


def drain_deadline(
    annotations: dict[str, str], now: datetime.datetime, grace_seconds: float
) -> datetime.datetime:
    """The deadline a draining trunk already has, or a new one `grace_seconds` from now."""
    existing = annotations.get(DRAIN_ANNOTATION)
    if existing:
        try:
            return datetime.datetime.strptime(existing, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        except ValueError:
            pass  # someone wrote garbage: start a fresh grace period rather than fail
    return now + datetime.timedelta(seconds=grace_seconds)


def drain_done(counts: CallCounts | None, deadline: datetime.datetime, now: datetime.datetime) -> bool:
    """A draining trunk may go when its last call ended or its grace period is over.

    `counts` None: the store cannot say now, so only the deadline ends the drain.
    """
    return (counts is not None and counts.active_calls == 0) or now >= deadline


# ---------------------------------------------------------------- live counts


def registration_aor(trunk: Trunk, username: str | None) -> str | None:
    """The address of record the edges keep the trunk's registered contacts under, or None when they
    keep none: registration off, no digest auth, or no usable credentials (`username` from its Secret;
    the edges take a Secret's credentials only with both a username and a password)."""
    if not (trunk.spec.registration.enabled and trunk.spec.auth.digest and username):
        return None
    return aor_of(username)


def counts_patch(status: Mapping[str, Any] | None, counts: CallCounts | None) -> dict[str, Any] | None:
    """The status merge patch that shows `counts`, or None when the status already does.

    `counts` None means no shared store to read them from: the fields are removed (null in a merge
    patch) rather than left showing a number nobody measures.
    """
    current = status or {}
    wanted: dict[str, int | None] = (
        dict.fromkeys(COUNT_FIELDS)
        if counts is None
        else {"activeCalls": counts.active_calls, "registeredContacts": counts.registered_contacts}
    )
    changed = {key: value for key, value in wanted.items() if current.get(key) != value}
    return changed or None


# ---------------------------------------------------------------- a whole namespace


@dataclass(frozen=True)
class StatusUpdate:
    kind: str
    name: str
    status: dict[str, Any]


def _is_deleting(body: dict[str, Any]) -> bool:
    return bool(body.get("metadata", {}).get("deletionTimestamp"))


def _previous_conditions(body: dict[str, Any]) -> list[Condition]:
    try:
        return ResourceStatus.model_validate(body.get("status") or {}).conditions
    except ValidationError:
        return []  # a status someone else mangled: start afresh


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])


def _changed(body: dict[str, Any], status: dict[str, Any]) -> bool:
    current = body.get("status") or {}
    return any(current.get(key) != value for key, value in status.items())


def plan_statuses(
    objects: dict[str, list[dict[str, Any]]],
    secrets: list[dict[str, Any]],
    *,
    now: str,
    upkeep: Mapping[tuple[str, str], CarrierUpkeep] | None = None,
    platform: Verdict | None = None,
    addresses: Addresses | None = None,
) -> list[StatusUpdate]:
    """The status writes one namespace needs: `objects` maps kind -> API bodies, `secrets` its Secrets,
    `platform` the operator's last verdict on the platform (None: no PlatformReady condition),
    `addresses` what its last apply found (None: no address conditions).

    A body the API server accepted but the model rejects gets an Invalid status and takes no part in
    the checks of the others; a Trunk being deleted takes no part either (its DIDs lose their trunk).
    """
    config = ConfigSet()
    parsed: list[tuple[dict[str, Any], Resource]] = []
    updates: list[StatusUpdate] = []
    for kind, bodies in objects.items():
        for body in bodies:
            try:
                item = RESOURCE_KINDS[kind].model_validate(body)
            except ValidationError as exc:
                meta = body.get("metadata", {})
                invalid = build_invalid_status(
                    meta.get("generation"), _previous_conditions(body), _describe(exc), now
                )
                if _changed(body, invalid):
                    updates.append(StatusUpdate(kind, meta.get("name", ""), invalid))
                continue
            parsed.append((body, item))
            if not (kind == "Trunk" and _is_deleting(body)):
                config.add(item)
    for body in secrets:
        if CREDENTIALS_LABEL not in ((body.get("metadata") or {}).get("labels") or {}):
            continue  # control does not read it: to the edges it does not exist
        try:
            config.add(Secret.model_validate(body))
        except ValidationError:
            continue  # not a Secret we could read: as good as missing
    duplicates = duplicate_claims(config)
    for body, item in parsed:
        if isinstance(item, Trunk):
            status = build_trunk_status(item, config, now=now, platform=platform, addresses=addresses)
        elif isinstance(item, DID):
            status = build_did_status(item, config, now=now, duplicates=duplicates)
        else:
            assert isinstance(item, Carrier)
            status = build_carrier_status(item, config, now=now, upkeep=(upkeep or {}).get(item.key))
        if _changed(body, status):
            updates.append(StatusUpdate(item.kind, item.name, status))
    return updates
