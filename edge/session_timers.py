"""Session timers (RFC 4028): a session not refreshed in time ends; and the longest call
(`max_duration`). Both are timers of the SIP stack's clock."""

from __future__ import annotations

from trunkline.edge.call import Call
from trunkline.edge.context import EdgeContext
from trunkline.edge.ending import expire
from trunkline.sip.message import Response


def start_session_timer(ctx: EdgeContext, call: Call, response: Response) -> None:
    """A 2xx that (re)negotiated a session interval: the session is refreshed now."""
    header = response.get("Session-Expires")
    if not header:
        return
    value = header.split(";")[0].strip()
    if not value.isdigit():
        return
    call.session_seconds = float(value)
    call.session_refreshed = ctx.clock()
    arm_session_expiry(ctx, call)


def arm_session_expiry(ctx: EdgeContext, call: Call) -> None:
    if call.session_timer is not None:
        call.session_timer.cancel()
    left = call.session_refreshed + call.session_seconds - ctx.clock()
    call.session_timer = ctx.stack.call_later(
        max(0.0, left), lambda: ctx.spawn(expire(ctx, call, "session timer expired"))
    )


def arm_limit(ctx: EdgeContext, call: Call) -> None:
    assert call.record.answer is not None
    left = call.record.answer + ctx.options.max_duration - ctx.clock()
    call.limit_timer = ctx.stack.call_later(
        max(0.0, left), lambda: ctx.spawn(expire(ctx, call, "maximum call duration"))
    )
