"""Where a call goes: carriers by longest prefix, targets by priority and weight, and which answers
move a call on to the next target.

All pure: the B2BUA asks, these answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from enum import Enum
from itertools import groupby

from trunkline.core.models import DID, Carrier, Target, Trunk


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


def order_targets(targets: Sequence[Target], rng: random.Random | None = None) -> list[Target]:
    """Lowest priority first; within one priority, RFC 2782's weighted random order: weight-0 targets
    placed first, a random point in [0, sum of weights], the first target whose running sum reaches it
    is next. A weight-0 target thus comes early only by a small chance."""
    rng = rng or random.Random()
    ordered: list[Target] = []
    for _, group in groupby(sorted(targets, key=lambda t: t.priority), key=lambda t: t.priority):
        remaining = sorted(group, key=lambda t: t.weight != 0)
        while remaining:
            point = rng.randint(0, sum(t.weight for t in remaining))
            running = 0
            for index, target in enumerate(remaining):  # noqa: B007 - index is used after the loop
                running += target.weight
                if running >= point:
                    break
            ordered.append(remaining.pop(index))
    return ordered


def outbound_targets(
    number: str, carriers: Iterable[Carrier], rng: random.Random | None = None
) -> list[Target]:
    gateways = [gw for carrier in carriers_for(number, carriers) for gw in carrier.spec.gateways]
    return order_targets(gateways, rng)


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
