"""bench/edge_ab.py in a few seconds: two edges side by side (this build as its own reference), one
round of IP ACL calls on each, their CPU per call and ratio printed (bench/README-edge.md)."""

from __future__ import annotations

import re

import pytest

from bench import edge_ab
from tests.support.processes import TRUNKLINE


@pytest.mark.timeout(300)
def test_one_round_reports_both_edges_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    code = edge_ab.main(["--reference", TRUNKLINE, "--rate", "5", "--seconds", "2", "--rounds", "1",
                         "--only", "IP ACL calls"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    row = re.search(r"^\s+0 IP ACL calls\s+(\S+)\s+(\S+)\s+(\S+)\s+\((\d+)/(\d+) / (\d+)/(\d+)\)$", out, re.M)
    assert row is not None, out
    this_ok, attempts, reference_ok = int(row[4]), int(row[5]), int(row[6])
    assert attempts == 10 and this_ok > 0 and reference_ok > 0, out  # both edges carried calls
    assert "median ratio this/reference, IP ACL calls:" in out, out
    assert "digest" not in out and "REGISTER" not in out, out  # --only
