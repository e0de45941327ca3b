"""Secure defaults (docs/security.md) through `trunkline up` and SIPp: a Trunk without `channels`,
`callsPerSecond` or `outbound.allowedPrefixes` is held to 30 channels, 5 calls/s and no outbound
numbers (503/403 as a cap written down gets), and the platform's flags change those defaults."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests

CALLEE = "+442071234567"


def busy(up: Up) -> float:
    found = re.search(r'^trunkline_component_busy\{component="edge"\} (\S+)', up.metrics(), re.M)
    return float(found.group(1)) if found else -1.0


def test_a_trunk_without_channels_is_held_to_30(tmp_path: Path) -> None:
    carrier = free_port()
    up = Up(tmp_path / "up", manifests(carrier, free_port()), ["--no-relay"]).start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier)
    # 30 calls held long, placed under the default rate (4/s < 5/s); SIPp keeps at most 30 open
    # and replaces any refused one, so the edge reaches its 30 channels even on a slow machine.
    holder = sipp.uac_process(tmp_path / "hold", up.sip, "127.0.0.2", CALLEE, "-l", "30", "-r", "4",
                              calls=60, hold_ms=90_000)  # fmt: skip
    try:
        up.wait_busy(30, timeout=90)
        refused = sipp.uac_expect(tmp_path / "31st", up.sip, "127.0.0.2", CALLEE, 503)
        assert refused.ok, refused.output + up.output()
        assert busy(up) == 30.0  # never a 31st
    finally:
        sipp.stop(holder)
        sipp.stop(gateway)
        up.stop()
    assert "rule=channels" in up.output() and "all 30 in use" in up.output()


def test_a_trunk_without_calls_per_second_is_held_to_5(tmp_path: Path) -> None:
    carrier = free_port()
    # Unlimited channels, written down: only the default rate can refuse.
    up = Up(tmp_path / "up", manifests(carrier, free_port(), channels=0), ["--no-relay"]).start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier)
    try:
        # 60 calls as fast as SIPp sends them (200/s): at 5/s with a one-second bucket, most wait in vain.
        burst = sipp.uac(tmp_path / "burst", up.sip, "127.0.0.2", CALLEE, "-r", "200", calls=60, hold_ms=0)
        # SIPp has ended: each answered call's record follows its BYE (the refused get none here).
        answered = [r for r in up.wait_cdrs(60, timeout=5) if r.get("status") == 200]
    finally:
        sipp.stop(gateway)
        up.stop()
    refused = up.output().count("rule=callsPerSecond")
    assert len(answered) >= 5 and refused >= 1 and len(answered) < 60, (len(answered), burst.output)
    assert "over 5/s" in up.output()


def test_unlimited_written_down_is_unlimited(tmp_path: Path) -> None:
    """channels: 0, callsPerSecond: 0 and allowedPrefixes ["+"]: the burst above all goes through, to a
    number no list names."""
    carrier = free_port()
    spec = {"channels": 0, "callsPerSecond": 0, "outbound": {"allowedPrefixes": ["+"]}}
    up = Up(tmp_path / "up", manifests(carrier, free_port(), **spec), ["--no-relay"]).start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier)
    try:
        burst = sipp.uac(tmp_path / "burst", up.sip, "127.0.0.2", "+5511987654321", "-r", "50",
                         calls=60, hold_ms=0)  # fmt: skip
    finally:
        sipp.stop(gateway)
        up.stop()
    assert burst.ok, burst.output + up.output()
    assert "rule=callsPerSecond" not in up.output() and "rule=allowedPrefixes" not in up.output()


def test_a_trunk_without_allowed_prefixes_calls_nowhere_until_the_platform_says(tmp_path: Path) -> None:
    carrier = free_port()
    text = manifests(carrier, free_port(), outbound={"callerId": "dids-only"})  # no allowedPrefixes
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier)
    try:
        up = Up(tmp_path / "strict", text, ["--no-relay"]).start()
        try:
            refused = sipp.uac_expect(tmp_path / "refused", up.sip, "127.0.0.2", CALLEE, 403)
        finally:
            up.stop()
        assert refused.ok, refused.output + up.output()
        assert "rule=allowedPrefixes" in up.output() and "may call no number" in up.output()
        # The platform's default list (the chart's edge.trunkDefaults.allowedPrefixes) opens +44 only.
        home = Up(tmp_path / "home", text, ["--no-relay", "--default-allowed-prefix", "+44"]).start()
        try:
            uk = sipp.uac(tmp_path / "uk", home.sip, "127.0.0.2", CALLEE)
            us = sipp.uac_expect(tmp_path / "us", home.sip, "127.0.0.2", "+12125550100", 403)
        finally:
            home.stop()
        assert uk.ok, uk.output + home.output()
        assert us.ok, us.output + home.output()
    finally:
        sipp.stop(gateway)
