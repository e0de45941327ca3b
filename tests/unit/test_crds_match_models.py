"""The CRDs in the chart are exactly what the pydantic models generate, and are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trunkline.core.crds import build_crd, render_all
from trunkline.core.models import DID, Trunk

CRD_DIR = Path(__file__).resolve().parents[2] / "charts" / "trunkline" / "crds"


def test_checked_in_crds_equal_generated() -> None:
    generated = render_all()
    on_disk = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    assert on_disk == generated, "CRDs drifted: run `python -m trunkline.core.crds charts/trunkline/crds`"


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += walk(value, f"{path}.{key}")
        if "items" in node:
            found += walk(node["items"], f"{path}[]")
    return found


def test_schemas_are_structural() -> None:
    for text in render_all().values():
        schema = yaml.safe_load(text.split("\n", 1)[1])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in walk(schema):
            assert "type" in node, f"{path} has no type"
            assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & node.keys(), path


def test_validation_rules_reach_the_schema() -> None:
    did = build_crd(DID)["spec"]["versions"][0]
    spec = did["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["number"]["pattern"] == r"^\+[1-9][0-9]{1,14}$"
    assert set(spec["required"]) == {"number", "trunkRef"}
    assert [c["name"] for c in did["additionalPrinterColumns"]] == ["Number", "Trunk", "Ready", "Age"]
    assert did["subresources"] == {"status": {}}

    trunk = build_crd(Trunk)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    acl = trunk["properties"]["auth"]["properties"]["ipAcl"]["items"]
    assert acl == {"type": "string", "format": "cidr"}
    assert trunk["properties"]["transport"]["enum"] == ["udp", "tcp", "tls"]
    assert trunk["properties"]["transport"]["default"] == "udp"
    assert trunk["properties"]["channels"]["minimum"] == 0  # 0: unlimited, written down
    cps = trunk["properties"]["callsPerSecond"]
    assert cps["minimum"] == 0 and "exclusiveMinimum" not in cps
    prefixes = trunk["properties"]["outbound"]["properties"]["allowedPrefixes"]
    assert "default" not in prefixes and prefixes["items"]["pattern"] == r"^\+[0-9]{0,15}$"
