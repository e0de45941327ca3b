"""`security_warnings`: wide-open trunks and networks are named; the examples have none."""

from __future__ import annotations

from pathlib import Path

from trunkline.core.manifests import load, security_warnings

ROOT = Path(__file__).resolve().parents[2]

OPEN_TRUNK = """\
apiVersion: trunkline.io/v1alpha1
kind: Trunk
metadata: {name: open}
spec:
  auth: {ipAcl: [0.0.0.0/0, 198.51.100.0/24, "2001::/16"]}
---
apiVersion: trunkline.io/v1alpha1
kind: Carrier
metadata: {name: wide}
spec: {gateways: [{uri: "sip:gw.example.net"}], inboundCidrs: [10.0.0.0/8, 203.0.113.0/24]}
"""


def test_the_examples_have_no_warning() -> None:
    config, problems = load([ROOT / "examples"])
    assert problems == [] and security_warnings(config) == []


def test_a_wide_open_trunk_is_named_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(OPEN_TRUNK)
    config, problems = load([path])
    assert problems == []
    fields = sorted((w.field, str(w)) for w in security_warnings(config))
    assert [f for f, _ in fields] == [
        "spec.auth.ipAcl", "spec.auth.ipAcl", "spec.callsPerSecond", "spec.channels", "spec.inboundCidrs",
        "spec.outbound.allowedPrefixes",
    ]  # fmt: skip
    text = "\n".join(t for _, t in fields)
    assert "0.0.0.0/0" in text and "2001::/16" in text and "10.0.0.0/8" in text
    assert "198.51.100.0/24" not in text and "203.0.113.0/24" not in text
    assert all(t.startswith(f"{path} (document ") and "warning: " in t for _, t in fields)
