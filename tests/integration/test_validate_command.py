"""`trunkline validate` as a user runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_examples_validate(trunkline_bin: str) -> None:
    result = subprocess.run([trunkline_bin, "validate", "-f", str(ROOT / "examples")], capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == "ok: 1 trunk(s), 2 DID(s), 1 carrier(s), 1 secret(s)\n"


def test_problems_exit_1_naming_file_document_field(trunkline_bin: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "apiVersion: trunkline.io/v1alpha1\nkind: Carrier\nmetadata: {name: c}\n"
        "spec: {gateways: [{uri: 'sip:gw.example.net'}], inboundCidrs: [not-a-cidr]}\n"
    )
    result = subprocess.run([trunkline_bin, "validate", "-f", str(tmp_path)], capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bad} (document 1): spec.inboundCidrs[0]: 'not-a-cidr' is not a CIDR (e.g. 203.0.113.0/24 or "
        "2001:db8::/32) (got 'not-a-cidr')",
        "1 problem(s)",
    ]


def test_wide_open_trunk_warns_but_validates(trunkline_bin: str, tmp_path: Path) -> None:
    trunk = tmp_path / "open.yaml"
    trunk.write_text(
        "apiVersion: trunkline.io/v1alpha1\nkind: Trunk\nmetadata: {name: open}\n"
        "spec: {channels: 0, callsPerSecond: 0, outbound: {allowedPrefixes: ['+']}}\n"
    )
    result = subprocess.run([trunkline_bin, "validate", "-f", str(tmp_path)], capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and lines[-1] == "ok: 1 trunk(s), 0 DID(s), 0 carrier(s), 0 secret(s)"
    assert all("warning: " in line for line in lines[:4])
    assert any("spec.outbound.allowedPrefixes" in line and "any number" in line for line in lines)
    assert any("no Carrier can take emergency calls" in line for line in lines)
    # A carrier marked for emergency calls (even one serving only some prefixes) silences that one.
    (tmp_path / "psap.yaml").write_text(
        "apiVersion: trunkline.io/v1alpha1\nkind: Carrier\nmetadata: {name: psap}\n"
        "spec: {gateways: [{uri: 'sip:127.0.0.1:5090'}], prefixes: ['+1'], emergency: true}\n"
    )
    result = subprocess.run([trunkline_bin, "validate", "-f", str(tmp_path)], capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 0 and "emergency" not in result.stdout, result.stdout
