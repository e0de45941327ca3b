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
  channels: 0
  callsPerSecond: 0
  outbound: {allowedPrefixes: ["+", "+44", "+88"]}
---
apiVersion: trunkline.io/v1alpha1
kind: Trunk
metadata: {name: unset}
spec: {}  # the platform's defaults hold it: nothing to warn about
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
        "spec.outbound.allowedPrefixes", "spec.outbound.allowedPrefixes",
    ]  # fmt: skip
    text = "\n".join(t for _, t in fields)
    assert "0: unlimited concurrent calls" in text and "0: unlimited call rate" in text
    assert '"+": this trunk may call any number' in text and "+88 opens +881, +882, +883" in text
    assert "+44" not in text.replace('["+1", "+44"]', "")
    assert "0.0.0.0/0" in text and "2001::/16" in text and "10.0.0.0/8" in text
    assert "198.51.100.0/24" not in text and "203.0.113.0/24" not in text
    assert all(t.startswith(f"{path} (document ") and "warning: " in t for _, t in fields)
