"""Each attempt to a Carrier gateway counted into the shared store's per-minute figures
(core/gateway_figures.py), off the call's path: the write is spawned, at most `max_pending` of them in
flight; past that (a slow store) or when the store fails, the attempt's figures are dropped and
counted (`trunkline_gateway_figures_dropped`), never waited for."""

from __future__ import annotations

from collections.abc import Callable, Coroutine

from trunkline.core.gateway_figures import FIGURES_TTL, attempt_counts
from trunkline.core.models import Carrier
from trunkline.core.state import StateStore, StoreUnavailable, upkeep_key
from trunkline.sip.message import Response

CHALLENGES = (401, 407)  # not an outcome: the attempt answering the challenge is the one counted
# The callee's or the dialled number's answer, not the gateway's: the gateway did its job. Counted,
# they would let a tenant lower the preferred gateway's ratio for every tenant (calls to busy or
# unknown numbers) and reorder `routing: quality`; left out, the ratio is over the attempts whose
# outcome is the network's (the idea of ITU-T E.411's network effectiveness ratio).
CALLEE_CAUSED = frozenset({404, 410, 480, 484, 486, 600, 603, 604})


class FigureRecorder:
    def __init__(
        self,
        store: StateStore,
        spawn: Callable[[Coroutine[object, object, None]], None],
        dropped: Callable[[], None],
        max_pending: int = 256,
    ) -> None:
        self.store, self.spawn, self.dropped, self.max_pending = store, spawn, dropped, max_pending
        self.pending = 0

    def attempt_ended(
        self, carrier: Carrier, gateway: str, response: Response | None, post_dial_delay: float | None
    ) -> None:
        """An INVITE to `gateway` of `carrier` (one of its configured gateways: bounded fields) ended
        with `response` (None: no answer). The caller leaves out attempts the caller cancelled."""
        if response is not None and (response.status in CHALLENGES or response.status in CALLEE_CAUSED):
            return
        if not any(g.uri == gateway for g in carrier.spec.gateways):
            return
        if self.pending >= self.max_pending:
            self.dropped()
            return
        seized = response is not None and 200 <= response.status < 300
        counts = attempt_counts(gateway, seized, post_dial_delay)
        self.pending += 1
        self.spawn(self._write(upkeep_key("figures", *carrier.key), counts))

    async def _write(self, name: str, counts: dict[str, int]) -> None:
        try:
            await self.store.count_per_minute(name, counts, FIGURES_TTL)
        except StoreUnavailable:
            self.dropped()
        finally:
            self.pending -= 1
