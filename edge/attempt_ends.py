"""What the end of an attempt to a Carrier gateway is counted as: on /metrics by outcome, in the calls
the gateway failed in a row (edge/call_failures.py, health) and in its figures in the shared store
(edge/gateway_figures.py, answer-seizure ratio and post-dial delay)."""

from __future__ import annotations

from trunkline.core.models import Carrier
from trunkline.edge import call_failures
from trunkline.edge.call import Call
from trunkline.edge.context import EdgeContext
from trunkline.sip.message import Response


def attempt_ended(
    ctx: EdgeContext, call: Call, carrier: Carrier, gateway: str, response: Response | None
) -> None:
    """An attempt to a gateway of `carrier` ended with `response` (None: no answer): counted on
    /metrics by outcome, in the calls it failed in a row (health), and in the store's figures (the
    caller's CANCEL says nothing about the gateway: left out of the figures)."""
    ctx.metrics.attempt(carrier.name, gateway, attempt_outcome(call, response))
    call_failures.call_ended(ctx, call, gateway, response)
    if not call.cancelled:
        ctx.figures.attempt_ended(carrier, gateway, response, call.b_post_dial_delay)


def attempt_outcome(call: Call, response: Response | None) -> str:
    if call.cancelled:
        return "cancelled"
    if response is None:
        return "timeout"
    return "answered" if 200 <= response.status < 300 else "rejected"
