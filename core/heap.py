"""The garbage collector set for a long-running server process, once it has started.

Everything allocated by start-up (modules, models, the configuration) lives as long as the process: it
is frozen out of the collector's generations (`gc.freeze`), so that no collection walks it again. The
young generation's threshold is raised from 700 allocations: a call makes a few hundred objects, almost
all freed by reference counting, and a collection every few messages found nothing but cost CPU.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000  # net container allocations between young collections (CPython's default: 700)


def settle() -> None:
    """Collect what start-up left, freeze the survivors and raise the young threshold."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
