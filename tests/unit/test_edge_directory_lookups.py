"""Who sent a request and what it may reach, looked up from the example configuration."""

from __future__ import annotations

from pathlib import Path

from trunkline.core.manifests import load
from trunkline.edge.directory import Directory

ROOT = Path(__file__).resolve().parents[2]


def test_lookups_on_the_examples() -> None:
    config, problems = load([ROOT / "examples"])
    assert problems == []
    directory = Directory(config)
    creds = directory.credentials("acme")
    assert creds is not None and creds.trunk.name == "acme" and creds.password == "s3cret-acme"
    assert directory.credentials("nobody") is None
    trunk = directory.trunk_for_source("127.0.0.2")
    assert trunk is not None and trunk.name == "acme"
    assert directory.trunk_for_source("127.0.0.3") is None
    carrier = directory.carrier_for_source("127.0.0.1")
    assert carrier is not None and carrier.name == "pstn-local"
    assert directory.carrier_for_source("127.0.0.2") is None
    did = directory.did("+14155550101")
    assert did is not None and did.spec.trunkRef == "acme" and directory.trunk_of(did) is trunk
    assert directory.did("+19999999999") is None
    assert directory.numbers_of(trunk) == ["+14155550100", "+14155550101"]
    assert directory.username_of(trunk) == "acme"


def test_trunks_with_one_name_in_two_namespaces_stay_apart() -> None:
    config, _ = load([ROOT / "examples"])
    other = next(iter(config.trunks.values())).model_copy(deep=True)
    other.metadata.namespace = "team-b"
    config.add(other)
    directory = Directory(config)
    assert len(directory.trunks) == 2
    did = directory.did("+14155550100")
    assert did is not None and directory.trunk_of(did) is config.trunks[("default", "acme")]
    assert directory.numbers_of(other) == []
