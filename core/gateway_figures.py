"""Answer-seizure ratio and post-dial delay of each Carrier gateway, from per-minute counts in the
shared store (issue 18, "Beyond"): pure, shared by the edges (which count, and route by them under
`routing: quality`) and the operator (which shows them in the Carrier's status).

Each attempt's end adds to the current minute's bucket of its Carrier, `upkeep_key("figures", ...)`:
per gateway URI, fields `<uri> a` (attempts), `<uri> s` (seizures: answered 2xx), `<uri> p` (attempts
with a post-dial delay: INVITE sent to its first 18x or 2xx), `<uri> d` (their delays summed, ms).
A window of N minutes is the current minute and the N - 1 before it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

FIGURES_TTL = 3660.0  # seconds a minute's bucket lives: just over the longest window
SHORT_WINDOW = 5  # minutes
LONG_WINDOW = 60  # minutes
MAX_PDD_MS = 600_000  # a delay past this (10 min) is counted as this: one outlier cannot overflow a sum


@dataclass(frozen=True)
class GatewayFigures:
    attempts: int = 0
    seizures: int = 0
    delays: int = 0  # attempts whose post-dial delay was measured
    delay_ms: int = 0  # their delays summed

    @property
    def asr(self) -> float | None:
        """Seizures / attempts (None without attempts)."""
        return min(1.0, self.seizures / self.attempts) if self.attempts > 0 else None

    @property
    def pdd(self) -> float | None:
        """Mean post-dial delay in seconds (None when no attempt got a ringing or answer)."""
        return self.delay_ms / self.delays / 1000 if self.delays > 0 else None


def attempt_counts(gateway: str, seized: bool, post_dial_delay: float | None) -> dict[str, int]:
    """What one attempt's end adds to its minute's bucket."""
    counts = {f"{gateway} a": 1}
    if seized:
        counts[f"{gateway} s"] = 1
    if post_dial_delay is not None:
        counts[f"{gateway} p"] = 1
        counts[f"{gateway} d"] = min(MAX_PDD_MS, max(0, round(post_dial_delay * 1000)))
    return counts


MAX_GATEWAYS = 64  # a Carrier's gateways at most (CarrierSpec): what a read without a list keeps
MAX_URI = 512


def window(
    buckets: Sequence[Mapping[str, int]], minutes: int, gateways: Collection[str] | None = None
) -> dict[str, GatewayFigures]:
    """The figures over the first `minutes` buckets (newest first, as the store reads them) of
    `gateways` (None: of any gateway, at most MAX_GATEWAYS of them: whoever reads without the
    Carrier's list still gets a bounded answer). A field of another gateway or of no known kind is
    ignored, a negative count reads as 0."""
    sums: dict[str, dict[str, int]] = {}
    for bucket in buckets[: max(0, minutes)]:
        for key, count in bucket.items():
            uri, _, kind = key.rpartition(" ")
            known = uri in gateways if gateways is not None else 0 < len(uri) <= MAX_URI
            if not known or kind not in ("a", "s", "p", "d"):
                continue
            found = sums.get(uri)
            if found is None:
                if len(sums) >= MAX_GATEWAYS:
                    continue
                found = sums[uri] = {}
            found[kind] = found.get(kind, 0) + max(0, count)
    return {
        uri: GatewayFigures(s.get("a", 0), s.get("s", 0), s.get("p", 0), s.get("d", 0))
        for uri, s in sums.items()
        if s.get("a", 0) > 0
    }
