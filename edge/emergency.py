"""Emergency calls at the edge, as pure functions: is this dialled number one, which caller ID it
presents, and where it goes (docs/emergency.md).

An emergency call is never refused by a trunk's policy or limits: the caller-ID policy may still
replace the number shown (a DID is a better call-back number), but it never rejects."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from trunkline.core.emergency import emergency_number
from trunkline.core.models import Carrier, Target, Trunk
from trunkline.edge.numbers import to_e164
from trunkline.edge.policy import check_caller_id
from trunkline.edge.routing import Next, after_final_response, order_targets, outbound_targets


def number_of(user: str | None, installation: Collection[str], trunk: Trunk) -> str | None:
    """The emergency number `user` dialled on `trunk` (the installation's or the trunk's own), as
    dialled; None for any other number."""
    return emergency_number(user, installation, trunk.spec.emergency.numbers)


def caller_of(trunk: Trunk, presented: str, dids: Iterable[str]) -> str:
    """The caller ID of an emergency call: what the policy allows or replaces it with, else the
    number presented (when it reads as one: a peer's other text never goes on), never a refusal."""
    e164 = to_e164(presented, trunk.spec.numbering)
    caller, _ = check_caller_id(trunk, e164, dids)
    return caller or e164 or "anonymous"


def targets(number: str, carriers: Iterable[Carrier]) -> list[Target]:
    """The gateways of the carriers marked `emergency: true` (by priority and weight, as one list),
    then, should they all fail, the normal route of the number as dialled (the default route's
    gateways; a carrier marked for emergencies is not tried twice)."""
    carriers = list(carriers)
    marked = [gw for carrier in carriers if carrier.spec.emergency for gw in carrier.spec.gateways]
    normal = outbound_targets(number, [c for c in carriers if not c.spec.emergency])
    return order_targets(marked) + normal


def tries_next(call_is_emergency: bool, status: int) -> bool:
    """Whether a final failure moves the call on to its next target. An emergency call is given up
    only once every route failed: a 403, 404 or 486 from one carrier is no reason to leave the caller
    without help while another carrier may take the call."""
    return call_is_emergency or after_final_response(status) is Next.TRY_NEXT
