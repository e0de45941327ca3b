"""Numbering plans and digest options with SIPp peers through `trunkline up`.

A Trunk's plan turns the national caller (From or P-Asserted-Identity) and callee numbers its PBX sends
into E.164: what the carrier's SIPp receives and what the CDR records. Without a plan the same numbers
are refused (484 for the callee, 403 for a caller that is then no number of the trunk's) and nothing
reaches the carrier. A Carrier's plan does the same for both numbers of a call from the carrier. A Trunk
with an explicit `digest.realm` and only `MD5` challenges with exactly that, and a SIPp PBX with the
credentials gets through; one offering only `SHA-256` offers nothing an MD5-only PBX (SIPp) can answer.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_edge_numbering_and_digest import with_carrier_numbering
from tests.support import sipp
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests

US_PLAN = {"countryCode": "1"}  # national prefix 0, international prefix 00 (the defaults)


def received_invite(workdir: Path) -> tuple[str, str]:
    """(Request-URI user, From user) of the first INVITE a SIPp UAS run with -trace_msg received."""
    [log] = workdir.glob("*_messages.log")
    text = log.read_text(errors="replace")
    uri = re.search(r"^INVITE sips?:([^@;>\s]+)@\S* SIP/2\.0\s*$", text, re.M)
    sender = re.search(r"^From:[^\n]*<sips?:([^@;>]+)@", text, re.M)
    assert uri and sender, text[-3000:]
    return uri.group(1), sender.group(1)


def sent_challenges(workdir: Path) -> list[str]:
    """The Proxy-Authenticate headers a SIPp UAC run with -trace_msg received."""
    [log] = workdir.glob("*_messages.log")
    return re.findall(r"^Proxy-Authenticate:\s*(.*?)\s*$", log.read_text(errors="replace"), re.M | re.I)


def start_carrier(workdir: Path, port: int) -> subprocess.Popen[str]:
    return sipp.uas(workdir, "127.0.0.1", port, "-trace_msg")


def with_pai(workdir: Path) -> str:
    """pbx_call.xml whose INVITEs carry `P-Asserted-Identity: <sip:[pai]@...>` (-key pai NUMBER)."""
    text = (sipp.SCENARIOS / "pbx_call.xml").read_text()
    marker = "Max-Forwards: 70\n      Content-Type: application/sdp"
    assert text.count(marker) == 2
    text = text.replace(marker, "P-Asserted-Identity: <sip:[pai]@[local_ip]>\n      " + marker)
    return str(sipp.write_scenario(workdir, "pbx_call_pai.xml", text))


@pytest.mark.parametrize(
    ("caller", "pai", "callee", "expected"),
    [
        # National caller (the trunk's DID 0 415...) and national callee (0 212...).
        ("04155550100", None, "02125550123", ("+14155550100", "+12125550123")),
        # The caller in P-Asserted-Identity (it wins over From), national; an international callee.
        ("pbx", "04155550101", "00442071234567", ("+14155550101", "+442071234567")),
    ],
)
def test_a_trunks_plan_converts_both_numbers_from_a_sipp_pbx(
    tmp_path: Path, caller: str, pai: str | None, callee: str, expected: tuple[str, str]
) -> None:
    carrier_port = free_port()
    up = Up(tmp_path / "up", manifests(carrier_port, free_port(), numbering=US_PLAN), ["--no-relay"]).start()
    carrier = start_carrier(tmp_path / "carrier", carrier_port)
    try:
        extra = ["-key", "pai", pai] if pai else []
        scenario = with_pai(tmp_path / "pbx") if pai else "pbx_call.xml"
        result = sipp.uac(
            tmp_path / "pbx", up.sip, "127.0.0.2", callee, *extra, caller=caller, scenario=scenario
        )
        assert result.ok, result.output + up.output()
        [cdr] = up.wait_cdrs(1, timeout=20)
    finally:
        sipp.stop(carrier, finish_within=5)
        up.stop()
    rendered_caller, rendered_callee = expected
    assert received_invite(tmp_path / "carrier") == (rendered_callee, rendered_caller)
    assert (cdr["caller"], cdr["callee"]) == expected


@pytest.mark.parametrize(
    ("caller", "callee", "status", "rule"),
    [
        ("+14155550100", "02125550123", 484, "rule=number"),  # a national callee is no number
        ("04155550100", "+12125550123", 403, "rule=callerId"),  # a national caller is none of its DIDs
    ],
)
def test_without_a_plan_national_numbers_are_refused(
    tmp_path: Path, caller: str, callee: str, status: int, rule: str
) -> None:
    carrier_port = free_port()
    up = Up(tmp_path / "up", manifests(carrier_port, free_port()), ["--no-relay"]).start()
    carrier = start_carrier(tmp_path / "carrier", carrier_port)
    try:
        result = sipp.uac_expect(tmp_path / "pbx", up.sip, "127.0.0.2", callee, status, caller=caller)
        assert result.ok, result.output + up.output()
    finally:
        out = sipp.stop(carrier)
        up.stop()
    assert sipp.received(out, "INVITE") == 0
    assert rule in up.output()


def test_a_carriers_plan_converts_both_numbers_of_a_sipp_carriers_call(tmp_path: Path) -> None:
    carrier_port, pbx_port = free_port(), free_port()
    text = with_carrier_numbering(manifests(carrier_port, pbx_port), US_PLAN)
    up = Up(tmp_path / "up", text, ["--no-relay"]).start()
    pbx = sipp.uas(tmp_path / "pbx", "127.0.0.4", pbx_port, "-trace_msg")
    try:
        # Both national: the DID 0 415 555 0100, the caller 0 212 555 0123.
        result = sipp.uac(tmp_path / "carrier", up.sip, "127.0.0.1", "04155550100", caller="02125550123")
        assert result.ok, result.output + up.output()
        [cdr] = up.wait_cdrs(1, timeout=20)
    finally:
        sipp.stop(pbx, finish_within=5)
        up.stop()
    assert received_invite(tmp_path / "pbx") == ("+14155550100", "+12125550123")
    assert (cdr["caller"], cdr["callee"]) == ("+12125550123", "+14155550100")


def digest_trunk(carrier_port: int, algorithms: list[str]) -> str:
    digest = {"credentialsSecret": "acme-creds", "realm": "voice.example", "algorithms": algorithms}
    return manifests(carrier_port, free_port(), auth={"digest": digest, "ipAcl": ["127.0.0.2/32"]})


def test_a_sipp_pbx_answers_the_trunks_realm_and_md5_only_challenge(tmp_path: Path) -> None:
    carrier_port = free_port()
    up = Up(tmp_path / "up", digest_trunk(carrier_port, ["MD5"]), ["--no-relay"]).start()
    carrier = start_carrier(tmp_path / "carrier", carrier_port)
    try:
        # From 127.0.0.3: not in the trunk's IP ACL, so digest it is.
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.3", "+442071234567", "-au", "acme", "-ap",
                          "s3cret-acme", "-trace_msg")  # fmt: skip
        assert result.ok, result.output + up.output()
        [cdr] = up.wait_cdrs(1, timeout=20)
    finally:
        sipp.stop(carrier, finish_within=5)
        up.stop()
    [challenge] = sent_challenges(tmp_path / "pbx")  # one algorithm: one challenge
    assert 'realm="voice.example"' in challenge and "algorithm=MD5" in challenge, challenge
    assert received_invite(tmp_path / "carrier")[0] == "+442071234567"
    assert cdr["callee"] == "+442071234567"


def test_a_sha256_only_trunk_keeps_out_an_md5_only_pbx(tmp_path: Path) -> None:
    carrier_port = free_port()
    up = Up(tmp_path / "up", digest_trunk(carrier_port, ["SHA-256"]), ["--no-relay"]).start()
    carrier = start_carrier(tmp_path / "carrier", carrier_port)
    try:
        result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.3", "+442071234567", "-au", "acme", "-ap",
                          "s3cret-acme", "-trace_msg", timeout=10)  # fmt: skip
    finally:
        out = sipp.stop(carrier)
        up.stop()
    # SIPp cannot answer SHA-256 (an MD5-only PBX); the edge's refusal of an MD5 answer to this trunk
    # is test_edge_numbering_and_digest.py's.
    assert not result.ok and "authentication must use MD5" in result.output, result.output
    [challenge] = sent_challenges(tmp_path / "pbx")
    assert 'realm="voice.example"' in challenge and "algorithm=SHA-256" in challenge, challenge
    assert sipp.received(out, "INVITE") == 0
    assert up.cdrs() == [] or all(c["attempts"] == [] for c in up.cdrs())
