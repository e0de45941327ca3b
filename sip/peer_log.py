"""The log of what peers do wrong at the protocol level (a datagram that does not parse, a message
refused, a connection closed or refused), which any peer can cause at will: without a bound, a flood
of spoofed sources would be a flood of log lines. Its lines go through a token bucket (RATE a second,
bursts of BURST); the lines left out are counted, and the next line let through says how many. A
refused message is still answered or dropped as before: only its line is left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

RATE = 20.0  # lines a second, sustained
BURST = 100.0  # lines at once after a quiet spell


class LineBudget(logging.Filter):
    """A token bucket over the lines of one logger; consulted only for lines its level lets through."""

    def __init__(
        self, rate: float = RATE, burst: float = BURST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = burst, clock()
        self.left_out = 0  # since the last line let through

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            self.left_out += 1
            return False
        self.tokens -= 1.0
        if self.left_out:
            record.msg, record.args = f"{record.getMessage()} ({self.left_out} such lines left out)", None
            self.left_out = 0
        return True


peer_log = logging.getLogger("trunkline.sip.peers")
budget = LineBudget()
peer_log.addFilter(budget)
