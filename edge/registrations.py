"""Registered contacts per trunk for /metrics (`trunkline_registrations{trunk}`).

Bindings live in the shared store (every edge answers for them), so each edge counts them there:
every `count_registrations_every` seconds for every trunk whose PBXs register (bindings also lapse
on their own), and at once for the trunk a REGISTER just changed. One store read per registering
trunk per interval; the label is the trunk's name, so the series follow the configuration.
"""

from __future__ import annotations

import logging

from trunkline.core.logs import event
from trunkline.core.models import Trunk
from trunkline.core.state import aor_of
from trunkline.edge.context import EdgeContext

log = logging.getLogger("trunkline.edge")


async def refresh(ctx: EdgeContext) -> None:
    """Count every registering trunk's contacts; a store that fails keeps the last figures."""
    counts: dict[str, int] = {}
    try:
        for trunk, username in ctx.directory.registering():
            counts[trunk.name] = counts.get(trunk.name, 0) + await ctx.store.registered_contacts(
                aor_of(username)
            )
    except Exception as exc:
        event(log, logging.WARNING, "could not count registrations", error=str(exc))
        return
    ctx.metrics.set_registrations(counts)


async def refresh_one(ctx: EdgeContext, trunk: Trunk, username: str) -> None:
    """The trunk a REGISTER just changed."""
    try:
        count = await ctx.store.registered_contacts(aor_of(username))
    except Exception as exc:
        event(log, logging.WARNING, "could not count registrations", trunk=trunk.name, error=str(exc))
        return
    ctx.metrics.set_registered(trunk.name, count)


async def keep_counting(ctx: EdgeContext) -> None:
    while True:
        await refresh(ctx)
        await ctx.sleep(ctx.options.count_registrations_every)
