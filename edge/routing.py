"""Where a call goes: carriers by longest prefix, targets by priority and weight, and which answers
move a call on to the next target.

All pure: the B2BUA asks, these answer.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from enum import Enum
from typing import Protocol, TypeVar

from trunkline.core.gateway_figures import GatewayFigures
from trunkline.core.models import DID, QUALITY_MIN_ATTEMPTS, Carrier, CarrierRouting, Target, Trunk
from trunkline.sip.uri import SipUri


def lookup_uri(uri: SipUri, transport: str) -> SipUri:
    """The URI to resolve (RFC 3263) for a target of a trunk whose `spec.transport` is `transport`.
    Precedence (docs/media.md): the URI's own `;transport=`, then `sips:` (TLS); then a trunk set to
    tcp or tls pins the lookup to that transport (SRV for it, then A/AAAA; no NAPTR, so DNS cannot
    move the call to another transport); udp, the default, leaves the choice to NAPTR/SRV."""
    if uri.params.get("transport") or uri.scheme == "sips" or transport == "udp":
        return uri
    return dataclasses.replace(uri, params={**uri.params, "transport": transport})


def carriers_for(number: str, carriers: Iterable[Carrier]) -> list[Carrier]:
    """The carriers whose longest matching prefix is the longest of all (a carrier with no prefixes is
    the default route, matching with length 0). Ties keep the given order."""
    best_len, best = -1, []
    for carrier in carriers:
        lengths = [len(p) for p in carrier.spec.prefixes if number.startswith(p)]
        length = max(lengths) if lengths else (0 if not carrier.spec.prefixes else -1)
        if length > best_len:
            best_len, best = length, [carrier]
        elif length == best_len and length >= 0:
            best.append(carrier)
    return best if best_len >= 0 else []


class Weighted(Protocol):
    @property
    def priority(self) -> int: ...

    @property
    def weight(self) -> int: ...


W = TypeVar("W", bound=Weighted)


def weighted_order(items: Sequence[W], rng: random.Random) -> list[W]:
    """RFC 2782 order (for SRV records and for our own targets alike): lowest priority first; within
    one priority, weight-0 items placed first, a number drawn in [0, sum of weights], and the first
    item whose running sum reaches it is next. A weight-0 item so comes early only by a small chance,
    and when all weights are 0 the given order stays."""
    ordered: list[W] = []
    for priority in sorted({item.priority for item in items}):
        remaining = sorted((i for i in items if i.priority == priority), key=lambda i: i.weight != 0)
        while remaining:
            point = rng.randint(0, sum(i.weight for i in remaining))
            running = 0
            for index, item in enumerate(remaining):  # noqa: B007 - index is used after the loop
                running += item.weight
                if running >= point:
                    break
            ordered.append(remaining.pop(index))
    return ordered


# One generator for the process: a new `random.Random()` per call seeds itself from os.urandom, which
# costs more than the ordering. Load spreading needs no cryptographic strength.
_RNG = random.Random()


def order_targets(targets: Sequence[Target], rng: random.Random | None = None) -> list[Target]:
    return weighted_order(targets, rng or _RNG)


def by_quality(
    ordered: Sequence[W], uri_of: Callable[[W], str], figures: Mapping[str, GatewayFigures], minimum: int
) -> list[W]:
    """`ordered` (priorities ascending) with, within each priority, the items whose `figures` count at
    least `minimum` attempts sorted by answer-seizure ratio, best first, among the places they hold;
    the others keep their places, and so do ties (a stable sort)."""
    result = list(ordered)

    def asr(item: W) -> float | None:
        """The item's ratio, None when it has too few attempts to be ranked."""
        found = figures.get(uri_of(item))
        return found.asr if found is not None and found.attempts >= minimum else None

    start = 0
    while start < len(result):
        end = start
        while end < len(result) and result[end].priority == result[start].priority:
            end += 1
        places = [i for i in range(start, end) if asr(result[i]) is not None]
        best_first = sorted((result[i] for i in places), key=lambda item: -(asr(item) or 0.0))
        for place, item in zip(places, best_first, strict=True):
            result[place] = item
        start = end
    return result


def outbound_targets(
    number: str,
    carriers: Iterable[Carrier],
    rng: random.Random | None = None,
    down: Mapping[tuple[str, str], Collection[str]] | None = None,
    quality: Mapping[tuple[str, str], Mapping[str, GatewayFigures]] | None = None,
) -> list[Target]:
    """The gateways of the carriers for `number`, ordered; those the health probes found `down` (by
    carrier key, gateway URIs) are skipped, unless every one is down: then all are tried in order.
    The gateways of a carrier with `routing: quality` are then ranked by their `quality` figures (by
    carrier key: the last 5 minutes') within their priority (`by_quality`)."""
    matched = carriers_for(number, carriers)
    gateways = [gw for carrier in matched for gw in carrier.spec.gateways]
    if down:
        alive = [gw for c in matched for gw in c.spec.gateways if gw.uri not in down.get(c.key, ())]
        gateways = alive or gateways
    ordered = order_targets(gateways, rng)
    if quality:
        figures = {uri: found for c in matched if c.spec.routing is CarrierRouting.QUALITY
                   for uri, found in quality.get(c.key, {}).items()}  # fmt: skip
        if figures:
            ordered = by_quality(ordered, lambda t: t.uri, figures, QUALITY_MIN_ATTEMPTS)
    return ordered


def inbound_targets(trunk: Trunk, did: DID, rng: random.Random | None = None) -> list[Target]:
    """Origination targets for a DID (its own list overrides the trunk's). Registered contacts come
    before these; the caller puts them first."""
    targets = did.spec.origination if did.spec.origination is not None else trunk.spec.origination
    return order_targets(targets, rng)


class Next(Enum):
    TRY_NEXT = "try the next target"
    RELAY = "relay the answer to the caller"


# 486 Busy Here, 600 Busy Everywhere, 603 Decline: the callee said no; trying elsewhere would ring
# another phone for a call the callee refused (jambonz/sbc-outbound#198).
_CALLEE_REFUSED = {486, 600, 603}


def after_final_response(status: int) -> Next:
    """What a final non-2xx answer from a target means for the call.

    5xx (a server problem) and 408 (no answer) try the next target; 3xx (we do not follow redirects:
    the Contact would leak the other side's topology) too. Every other 4xx and 6xx is the callee's
    answer and goes back to the caller as it is."""
    if status in _CALLEE_REFUSED:
        return Next.RELAY
    if status == 408 or 500 <= status < 600 or 300 <= status < 400:
        return Next.TRY_NEXT
    return Next.RELAY
