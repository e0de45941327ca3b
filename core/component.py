"""What every long-running part of a trunkline process (control, edge, media) looks like to the process
that runs it: `trunkline up` runs several in one process, `trunkline edge` etc. run one each.

Lifecycle: start() -> [ready() True] -> drain() (stop taking new work, let live work finish) ->
stop() (release everything). `busy()` is the live work a drain waits for (calls, relay sessions).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    def ready(self) -> bool: ...

    def busy(self) -> int: ...

    async def drain(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class ExplainsReadiness(Protocol):
    """A component that can say why it is not ready (shown by /readyz)."""

    def why_not_ready(self) -> str | None: ...
