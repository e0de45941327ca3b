"""`trunkline validate` semantics: every problem names the file, the document and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from trunkline.core.manifests import load
from trunkline.core.models import DID, Trunk

ROOT = Path(__file__).resolve().parents[2]

SECRET = """
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {username: alice, password: pw}
"""
TRUNK = """
apiVersion: trunkline.io/v1alpha1
kind: Trunk
metadata: {name: alice}
spec:
  auth:
    digest: {credentialsSecret: creds}
"""
DID_DOC = """
apiVersion: trunkline.io/v1alpha1
kind: DID
metadata: {name: d1}
spec: {number: "+14155550100", trunkRef: alice}
"""


def write(tmp_path: Path, *docs: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text("---\n".join(textwrap.dedent(d) for d in docs))
    return path


def problems_of(*paths: Path | str) -> list[str]:
    return [str(p) for p in load(paths)[1]]


def test_examples_are_valid() -> None:
    config, problems = load([ROOT / "examples"])
    assert problems == []
    assert len(config.trunks) == 1 and len(config.dids) == 2 and len(config.carriers) == 1
    trunk = next(iter(config.trunks.values()))
    assert trunk.realm == "acme.trunkline.local"
    assert config.secret_value("default", "acme-pbx-credentials", "username") == "acme"


def test_a_good_set_applies_defaults(tmp_path: Path) -> None:
    config, problems = load([write(tmp_path, SECRET, TRUNK, DID_DOC)])
    assert problems == []
    trunk: Trunk = config.trunks[("default", "alice")]
    assert trunk.realm == "alice"  # default realm: the trunk's name
    assert [c.value for c in trunk.spec.codecs] == ["PCMU", "PCMA"]
    assert [a.value for a in trunk.spec.auth.digest.algorithms] == ["MD5", "SHA-256"]  # type: ignore[union-attr]
    assert trunk.spec.registration.maxExpires == 3600 and trunk.spec.channels is None
    did: DID = config.dids[("default", "d1")]
    assert did.spec.number == "+14155550100"


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (('"+14155550100"', '"14155550100"'), "spec.number", "should match pattern"),
        (('"+14155550100"', '"+0415"'), "spec.number", "should match pattern"),
        (("trunkRef: alice", "trunkRef: alice, colour: red"), "spec.colour", "unknown field"),
    ],
)
def test_bad_did_fields_are_named(tmp_path: Path, edit: tuple[str, str], field: str, message: str) -> None:
    path = write(tmp_path, SECRET, TRUNK, DID_DOC.replace(*edit))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path} (document 3): {field}: ")
    assert message in problem


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ("auth: {ipAcl: [10.0.0.300/8]}", "spec.auth.ipAcl[0]", "is not a CIDR"),
        ("origination: [{uri: 'http://x'}]", "spec.origination[0].uri", "should match pattern"),
        (
            "origination: [{uri: 'sip:pbx.example.com', priority: -1}]",
            "spec.origination[0].priority",
            "greater than or equal to 0",
        ),
        ("transport: carrier-pigeon", "spec.transport", "'udp', 'tcp' or 'tls'"),
        ("codecs: [MP3]", "spec.codecs[0]", "Input should be"),
        ("channels: -1", "spec.channels", "greater than or equal to 0"),
        ("callsPerSecond: -0.5", "spec.callsPerSecond", "greater than or equal to 0"),
        ("outbound: {allowedPrefixes: ['44']}", "spec.outbound.allowedPrefixes[0]", "should match pattern"),
        ("media: {srtp: maybe}", "spec.media.srtp", "'disabled', 'optional' or 'required'"),
    ],
)
def test_bad_trunk_fields_are_named(tmp_path: Path, spec: str, field: str, fragment: str) -> None:
    doc = f"apiVersion: trunkline.io/v1alpha1\nkind: Trunk\nmetadata: {{name: t}}\nspec: {{{spec}}}\n"
    [problem] = problems_of(write(tmp_path, doc))
    assert f"(document 1): {field}: " in problem
    assert fragment in problem


def test_ipv6_cidrs_are_accepted_and_normalised(tmp_path: Path) -> None:
    doc = (
        "apiVersion: trunkline.io/v1alpha1\nkind: Trunk\nmetadata: {name: t}\n"
        "spec: {auth: {ipAcl: ['2001:db8::1/32', 192.0.2.7]}}\n"
    )
    config, problems = load([write(tmp_path, doc)])
    assert problems == []
    assert config.trunks[("default", "t")].spec.auth.ipAcl == ["2001:db8::/32", "192.0.2.7/32"]


def test_unknown_kind_and_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "- just\n- a list\n")
    first, second = problems_of(path)
    assert "(document 1): kind: unknown kind v1/ConfigMap" in first
    assert "(document 2): a manifest must be a mapping" in second


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: Trunk\nspec: [unclosed\n")
    [problem] = problems_of(path)
    assert str(path) in problem and "invalid YAML at line" in problem


def test_did_claimed_twice_missing_trunk_and_secret(tmp_path: Path) -> None:
    twin = DID_DOC.replace("name: d1", "name: d2")
    orphan = (
        DID_DOC.replace("name: d1", "name: d3")
        .replace('"+14155550100"', '"+14155550199"')
        .replace("trunkRef: alice", "trunkRef: bob")
    )
    path = write(tmp_path, TRUNK, DID_DOC, twin, orphan)
    found = problems_of(path)
    assert f"{path} (document 3): spec.number: +14155550100 is already claimed by DID 'd1'" in found
    assert f"{path} (document 4): spec.trunkRef: no Trunk named 'bob'" in found
    assert f"{path} (document 1): spec.auth.digest.credentialsSecret: no Secret named 'creds'" in found


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, SECRET, TRUNK, name="a.yaml")
    b = write(tmp_path, TRUNK, name="b.yaml")
    [problem] = problems_of(a, b)
    assert problem.startswith(
        f"{b} (document 1): metadata.name: Trunk 'alice' is defined twice (first in {a}"
    )


def test_digest_usernames_are_unique_across_trunks(tmp_path: Path) -> None:
    other = TRUNK.replace("name: alice", "name: alice2")
    [problem] = problems_of(write(tmp_path, SECRET, TRUNK, other))
    assert "digest username 'alice' is already used by Trunk 'alice'" in problem


def test_secret_without_password(tmp_path: Path) -> None:
    secret = SECRET.replace(", password: pw", "")
    [problem] = problems_of(write(tmp_path, secret, TRUNK))
    assert "needs keys 'username' and 'password'" in problem


def test_a_carriers_secret_needs_username_and_password(tmp_path: Path) -> None:
    carrier = """
    apiVersion: trunkline.io/v1alpha1
    kind: Carrier
    metadata: {name: pstn}
    spec:
      gateways: [{uri: "sip:127.0.0.1:5090"}]
      auth: {credentialsSecret: creds, realm: carrier.example}
    """
    assert problems_of(write(tmp_path, SECRET, carrier)) == []
    [problem] = problems_of(write(tmp_path, SECRET.replace(", password: pw", ""), carrier))
    assert "spec.auth.credentialsSecret: Secret 'creds' needs keys 'username' and 'password'" in problem


def test_secret_data_must_be_base64(tmp_path: Path) -> None:
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\ndata: {username: '!!notbase64'}\n"
    [problem] = problems_of(write(tmp_path, secret))
    assert "data.username is not base64" in problem


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    found = problems_of(tmp_path / "nope.yaml", tmp_path / "empty")
    assert found == [f"{tmp_path / 'nope.yaml'}: no such file or folder",
                     f"{tmp_path / 'empty'}: folder holds no *.yaml or *.yml file"]  # fmt: skip


def test_carrier_registration_and_health_fields(tmp_path: Path) -> None:
    carrier = """
    apiVersion: trunkline.io/v1alpha1
    kind: Carrier
    metadata: {name: pstn}
    spec:
      gateways: [{uri: "sip:gw.example.net"}]
      registration: {enabled: true}
    """
    [problem] = problems_of(write(tmp_path, carrier))
    assert "spec.registration: registering needs spec.auth (credentials) or a user" in problem
    with_user = carrier.replace("{enabled: true}", '{enabled: true, user: "4420", expires: 120}')
    healthy = with_user.rstrip() + "\n      health: {interval: 1, failuresToDown: 2}\n"
    assert problems_of(write(tmp_path, healthy, name="ok.yaml")) == []
    too_short = with_user.replace("expires: 120", "expires: 30")
    assert any("registration.expires" in p for p in problems_of(write(tmp_path, too_short, name="bad.yaml")))
