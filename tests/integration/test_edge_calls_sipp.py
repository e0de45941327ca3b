"""Calls through `trunkline up` between real SIPp processes: the trunk's flows end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.trunkline_up import Up, manifests


@pytest.fixture
def up(tmp_path: Path, carrier_port: int, pbx_port: int) -> Iterator[Up]:
    running = Up(tmp_path / "up", manifests(carrier_port, pbx_port)).start()
    yield running
    running.stop()


def test_outbound_call_by_ip_acl(up: Up, tmp_path: Path, carrier_port: int) -> None:
    carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_port)
    try:
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", calls=3)
    finally:
        carrier_out = sipp.stop(carrier)
    assert result.ok, result.output + carrier_out + up.output()
    cdrs = up.wait_cdrs(3)
    assert len(cdrs) == 3
    assert {c["direction"] for c in cdrs} == {"outbound"} and {c["hung_up"] for c in cdrs} == {"caller"}
    assert all(c["callee"] == "+442071234567" and c["status"] == 200 for c in cdrs)


def test_outbound_call_with_digest_auth(up: Up, tmp_path: Path, carrier_port: int) -> None:
    carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_port)
    try:
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.3", "+14155551234",
                          "-au", "acme", "-ap", "s3cret-acme", calls=2)  # fmt: skip
    finally:
        carrier_out = sipp.stop(carrier)
    assert result.ok, result.output + carrier_out + up.output()
    assert len(up.wait_cdrs(2)) == 2


def test_inbound_call_to_a_did(up: Up, tmp_path: Path, pbx_port: int) -> None:
    pbx = sipp.uas(tmp_path / "pbx", "127.0.0.4", pbx_port)
    try:
        result = sipp.uac(tmp_path / "carrier", up.sip, "127.0.0.1", "+14155550100", caller="+442071234567")
    finally:
        pbx_out = sipp.stop(pbx)
    assert result.ok, result.output + pbx_out + up.output()
    [cdr] = up.wait_cdrs(1)
    assert (cdr["direction"], cdr["caller"], cdr["callee"]) == ("inbound", "+442071234567", "+14155550100")
