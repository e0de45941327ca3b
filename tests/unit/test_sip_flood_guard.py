"""FloodGuard: per-source token buckets, IPv6 /64 grouping, cool-down, exempt/per-CIDR budgets, LRU cap."""

from __future__ import annotations

import pytest

from trunkline.sip.flood import BURST_SECONDS, Budget, FloodGuard, FloodRule, source_group


def test_source_groups() -> None:
    assert source_group("192.0.2.1") == "192.0.2.1"
    assert source_group("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert source_group("[2001:db8:1:2::9]") == "2001:db8:1:2::/64"
    assert source_group("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_group("garbage") == "garbage"


def test_a_source_within_budget_is_admitted_for_ever() -> None:
    guard = FloodGuard(Budget(rate=10, bytes_per_second=10_000, cooldown=30))
    now = 0.0
    for _ in range(1000):  # 5 messages/s, well under 10/s
        assert guard.admit("192.0.2.1", 500, now)
        now += 0.2
    assert guard.counters.dropped_rate == 0 and guard.counters.admitted == 1000


def test_a_burst_over_the_rate_starts_a_cooldown() -> None:
    guard = FloodGuard(Budget(rate=10, bytes_per_second=1e9, cooldown=30))
    admitted = sum(guard.admit("192.0.2.1", 100, 0.0) for _ in range(100))
    assert admitted == int(10 * BURST_SECONDS)
    assert guard.counters.cooldowns == 1
    assert not guard.admit("192.0.2.1", 100, 29.0)  # still cooling down, however slowly it sends
    assert guard.counters.dropped_cooldown >= 1
    assert guard.admit("192.0.2.1", 100, 30.5)  # back, with full buckets
    assert guard.admit("192.0.2.2", 100, 0.0)  # other sources never noticed


def test_the_byte_budget_counts_too() -> None:
    guard = FloodGuard(Budget(rate=1000, bytes_per_second=60_000, cooldown=10))
    sent = 0
    while guard.admit("192.0.2.1", 60_000, 0.0):
        sent += 1
    assert sent == int(BURST_SECONDS)  # the bucket holds two seconds of bytes


def test_ipv6_sources_share_their_64() -> None:
    guard = FloodGuard(Budget(rate=5, bytes_per_second=1e9, cooldown=10))
    admitted = sum(guard.admit(f"2001:db8:1:2::{i:x}", 100, 0.0) for i in range(1, 50))
    assert admitted == int(5 * BURST_SECONDS)
    assert guard.admit("2001:db8:1:3::1", 100, 0.0)


def test_exempt_and_per_cidr_budgets() -> None:
    rules = (
        FloodRule(("203.0.113.0/24",), Budget(exempt=True)),
        FloodRule(("198.51.100.0/24",), Budget(rate=100, bytes_per_second=1e9)),
        FloodRule(("198.51.100.7/32",), Budget(rate=1, bytes_per_second=1e9)),  # most specific wins
    )
    guard = FloodGuard(Budget(rate=1, bytes_per_second=1e9, cooldown=10), rules)
    assert all(guard.admit("203.0.113.9", 1000, 0.0) for _ in range(10_000))
    assert guard.tracked == 0  # exempt sources cost no state
    assert sum(guard.admit("198.51.100.8", 100, 0.0) for _ in range(500)) == int(100 * BURST_SECONDS)
    assert sum(guard.admit("198.51.100.7", 100, 0.0) for _ in range(500)) == int(1 * BURST_SECONDS)
    assert sum(guard.admit("192.0.2.1", 100, 0.0) for _ in range(500)) == int(1 * BURST_SECONDS)


def test_tracked_sources_are_bounded() -> None:
    guard = FloodGuard(Budget(rate=1, bytes_per_second=1e9), max_sources=1000)
    for i in range(5000):
        guard.admit(f"10.0.{i // 256}.{i % 256}", 100, 0.0)
    assert guard.tracked == 1000 and guard.counters.evicted == 4000


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError):
        Budget(rate=0)
    with pytest.raises(ValueError):
        FloodGuard(max_sources=0)
