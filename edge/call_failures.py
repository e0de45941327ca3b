"""Calls that a probed gateway failed in a row (Carrier `spec.health`), counted in the shared store by
every edge: the edge holding the Carrier's probes takes a gateway with `failuresToDown` of them down
(edge/upkeep.py), as if its probes had failed."""

from __future__ import annotations

import contextlib

from trunkline.core.state import StoreUnavailable, upkeep_key
from trunkline.edge.call import Call
from trunkline.edge.context import EdgeContext
from trunkline.edge.gateway_health import answered
from trunkline.sip.message import Response

CALL_FAILURES_TTL = 3600.0  # a gateway's calls failed in a row are forgotten after this long


def call_ended(ctx: EdgeContext, call: Call, gateway: str, response: Response | None) -> None:
    """A call's attempt to `gateway` ended with `response` (None: no answer): counted in a row for
    the carrier whose gateways are probed when it failed (408, 5xx, no answer), reset otherwise. The
    caller's CANCEL says nothing about the gateway."""
    if call.cancelled:
        return
    status = response.status if response is not None else None
    probed = [c for c in ctx.directory.carriers if c.spec.health]
    carrier = next((c for c in probed if any(g.uri == gateway for g in c.spec.gateways)), None)
    if carrier is None:
        return
    failed = status is None or not answered(status)
    ctx.spawn(_count_call(ctx, upkeep_key("calls", *carrier.key), gateway, failed))


async def _count_call(ctx: EdgeContext, name: str, gateway: str, failed: bool) -> None:
    with contextlib.suppress(StoreUnavailable):  # one count less: routing goes on either way
        await ctx.store.count_call_failure(name, gateway, failed, CALL_FAILURES_TTL)
