"""What a flood costs with the flood guard in front of parsing, on one core.

Run: .venv/bin/python bench/flood_guard.py [seconds]
Prints, per message: the guard's verdict alone for a source in cool-down (what every message of a
flood costs once it is detected), for a well-behaved source, and for 100,000 spoofed sources (LRU
churn); next to parsing the same ~900-byte INVITE (what each message would cost without the guard).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from trunkline.sip import parse_message
from trunkline.sip.flood import Budget, FloodGuard

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from sip_parse import INVITE  # the benchmark message of bench/sip_parse.py


def per_call(fn: Callable[[int], object], seconds: float) -> float:
    """Best nanoseconds per call over several rounds."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    n = 20_000
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - start) / n * 1e9)
    return best


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    flooded = FloodGuard(Budget(rate=50, bytes_per_second=200_000, cooldown=30))
    while flooded.admit("198.51.100.66", len(INVITE), 0.0):
        pass
    calm = FloodGuard(Budget(rate=1e9, bytes_per_second=1e12))
    spoofed = FloodGuard(Budget(), max_sources=100_000)
    spoofed_sources = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(400_000)]
    size = len(INVITE)
    for source in spoofed_sources:  # past the cap: every new source now evicts the oldest
        spoofed.admit(source, size, 0.0)

    def dropped(i: int) -> object:
        return flooded.admit("198.51.100.66", size, 1.0)

    def admitted(i: int) -> object:
        return calm.admit("192.0.2.1", size, i * 1e-3)

    def churn(i: int) -> object:
        return spoofed.admit(spoofed_sources[i % 400_000], size, 0.0)

    rows = [
        ("guard, source in cool-down (dropped)", per_call(dropped, seconds)),
        ("guard, well-behaved source (admitted)", per_call(admitted, seconds)),
        ("guard, 400k spoofed sources (LRU)", per_call(churn, seconds)),
        ("parse_message of the INVITE", per_call(lambda i: parse_message(INVITE), seconds)),
    ]
    for name, ns in rows:
        print(f"{name:40s}: {ns / 1000:8.2f} us/message")
    print(f"{'parse / dropped':40s}: {rows[3][1] / rows[0][1]:8.1f}x")
    print(f"tracked sources after the spoofed run     : {spoofed.tracked:,} (cap 100,000)")


if __name__ == "__main__":
    main()
