"""Answer-seizure ratio and post-dial delay of each Carrier gateway, from per-minute counts in the
shared store (issue 18, "Beyond"): pure, shared by the edges (which count, and route by them under
`routing: quality`) and the operator (which shows them in the Carrier's status).

Each attempt's end adds to the current minute's bucket of its Carrier, `upkeep_key("figures", ...)`:
per gateway URI, fields `<uri> a` (attempts), `<uri> s` (seizures: answered 2xx), `<uri> p` (attempts
with a post-dial delay: INVITE sent to its first 18x or 2xx), `<uri> d` (their delays summed, ms),
`<uri> h<i>` (delays within PDD_BOUNDS_MS[i], the last one past them all: a histogram for the 90th
percentile). A window of N minutes is the current minute and the N - 1 before it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

FIGURES_TTL = 3660.0  # seconds a minute's bucket lives: just over the longest window
SHORT_WINDOW = 5  # minutes
LONG_WINDOW = 60  # minutes
MAX_PDD_MS = 600_000  # a delay past this (10 min) is counted as this: one outlier cannot overflow a sum
# Upper bounds of the post-dial delay histogram's buckets (ms); one more bucket holds the rest, up to
# MAX_PDD_MS. A 90th percentile reads as the bound of its bucket: "90 % rang within this".
PDD_BOUNDS_MS = (250, 500, 1000, 2000, 4000, 8000, 15000, 30000)
_HISTOGRAM = tuple(f"h{i}" for i in range(len(PDD_BOUNDS_MS) + 1))
_KINDS = frozenset({"a", "s", "p", "d", *_HISTOGRAM})


@dataclass(frozen=True)
class GatewayFigures:
    attempts: int = 0
    seizures: int = 0
    delays: int = 0  # attempts whose post-dial delay was measured
    delay_ms: int = 0  # their delays summed
    histogram: tuple[int, ...] = (0,) * len(_HISTOGRAM)  # delays per bucket of PDD_BOUNDS_MS

    @property
    def asr(self) -> float | None:
        """Seizures / attempts (None without attempts)."""
        return min(1.0, self.seizures / self.attempts) if self.attempts > 0 else None

    @property
    def pdd(self) -> float | None:
        """Mean post-dial delay in seconds (None when no attempt got a ringing or answer)."""
        return self.delay_ms / self.delays / 1000 if self.delays > 0 else None

    @property
    def pdd_p90(self) -> float | None:
        """Seconds within which 90 % of the measured delays came: the upper bound of the histogram
        bucket the 90th percentile falls in (None without delays)."""
        total = sum(self.histogram)
        running = 0
        for bound, count in zip((*PDD_BOUNDS_MS, MAX_PDD_MS), self.histogram, strict=True):
            running += count
            if total and running >= 0.9 * total:
                return bound / 1000
        return None


def attempt_counts(gateway: str, seized: bool, post_dial_delay: float | None) -> dict[str, int]:
    """What one attempt's end adds to its minute's bucket."""
    counts = {f"{gateway} a": 1}
    if seized:
        counts[f"{gateway} s"] = 1
    if post_dial_delay is not None:
        ms = min(MAX_PDD_MS, max(0, round(post_dial_delay * 1000)))
        bucket = next((i for i, bound in enumerate(PDD_BOUNDS_MS) if ms <= bound), len(PDD_BOUNDS_MS))
        counts.update({f"{gateway} p": 1, f"{gateway} d": ms, f"{gateway} h{bucket}": 1})
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
            if not known or kind not in _KINDS:
                continue
            found = sums.get(uri)
            if found is None:
                if len(sums) >= MAX_GATEWAYS:
                    continue
                found = sums[uri] = {}
            found[kind] = found.get(kind, 0) + max(0, count)
    return {
        uri: GatewayFigures(
            s.get("a", 0), s.get("s", 0), s.get("p", 0), s.get("d", 0), tuple(s.get(h, 0) for h in _HISTOGRAM)
        )
        for uri, s in sums.items()
        if s.get("a", 0) > 0
    }
