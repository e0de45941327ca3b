"""Who sent a request and what it may reach, looked up from the example configuration."""

from __future__ import annotations

from pathlib import Path

from trunkline.core.manifests import load
from trunkline.edge.directory import SOURCE_MEMO, Directory

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


def test_source_lookups_are_remembered_within_a_bound() -> None:
    config, _ = load([ROOT / "examples"])
    directory = Directory(config)
    for i in range(3 * SOURCE_MEMO):  # a flood of sources: the memo empties, it never grows past its size
        assert directory.trunk_for_source(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") is None
        assert directory.carrier_for_source(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}") is None
        assert len(directory._trunk_by_source) <= SOURCE_MEMO
        assert len(directory._carrier_by_source) <= SOURCE_MEMO
    for _ in range(2):  # asked again: the same answers, from the memo the second time
        trunk, carrier = directory.trunk_for_source("127.0.0.2"), directory.carrier_for_source("127.0.0.1")
        assert trunk is not None and trunk.name == "acme"
        assert carrier is not None and carrier.name == "pstn-local"
        assert directory.trunk_for_source("127.0.0.3") is None
    assert (
        directory._trunk_by_source["127.0.0.2"] is trunk and directory._trunk_by_source["127.0.0.3"] is None
    )


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
