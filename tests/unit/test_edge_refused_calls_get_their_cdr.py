"""A call turned away because the store did not answer its admission still gets exactly one CDR,
written once the store answers again (the admission may have run behind the stall: its record and
channel end with it instead of outliving it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import edge_harness as world
from trunkline.core.state import Admission, MemoryStore, StoreUnavailable


class StallingStore(MemoryStore):
    """Admits the call but loses the answer (a script run behind a stall), then fails for a while."""

    failing: bool = True

    async def admit(self, *args: Any, **kwargs: Any) -> Admission:
        await super().admit(*args, **kwargs)
        raise StoreUnavailable("redis: TimeoutError")

    async def end_call_with_cdr(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing:
            raise StoreUnavailable("redis: TimeoutError")
        return await super().end_call_with_cdr(*args, **kwargs)


async def test_a_call_refused_for_the_store_gets_its_cdr_once_the_store_answers(tmp_path: Path) -> None:
    store = StallingStore()
    h = world.build(tmp_path, store=store)
    store.clock = h.stack.clock  # the store's time is the edge's
    await h.stack.deliver(world.invite(call_id="refused"), world.PBX)
    assert h.stack.responses[-1].status == 503
    assert await store.channels_in_use("default/acme") == 1  # the lost admission holds a channel
    await h.stack.advance(5.0)
    assert list(store.cdr_stream) == []  # the store still fails: nothing yet, and no crash
    store.failing = False
    await h.stack.advance(20.0)
    ((line,),) = [list(store.cdr_stream)]
    cdr = json.loads(line)
    assert (cdr["call_id"], cdr["final_status"], cdr["hangup_side"]) == ("refused", 503, "edge")
    assert cdr["hangup_reason"] == "store unavailable at admission"
    assert await store.channels_in_use("default/acme") == 0  # and the channel went with it
    await h.stack.advance(600.0)
    assert len(store.cdr_stream) == 1 and h.edge.ctx.running == 0
