"""`trunkline up` calling out through carrier gateways that demand digest authentication (a real UDP
gateway process per test, tests/support/challenging_gateway.py, and SIPp as the PBX): the edge
answers 407 to the INVITE and 401 to its BYE with the Carrier's credentials, for MD5, SHA-256 and
SHA-512-256 (with qop=auth, and MD5 without); refused credentials fail over to the next gateway;
credentials go neither to a challenge for another realm nor to a trunk's PBX; SIPp's own digest check
(`verifyauth`, MD5) takes our credentials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import sipp
from tests.support.challenging_gateway import ChallengingGateway
from tests.support.ports import free_port
from tests.support.trunkline_up import Up, manifests
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

USER, PASSWORD, REALM = "trunk-acme", "carrier-pw", "carrier.example"


def with_carrier_auth(text: str, realm: str | None = REALM) -> str:
    """The standard manifests with credentials (and a realm) on the Carrier."""
    docs = [json.loads(d) for d in text.split("\n---\n")]
    auth: dict[str, object] = {"credentialsSecret": "pstn-creds"}
    if realm:
        auth["realm"] = realm
    for doc in docs:
        if doc["kind"] == "Carrier":
            doc["spec"]["auth"] = auth
    docs.append({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "pstn-creds", "labels": {"trunkline.io/credentials": ""}},
                 "stringData": {"username": USER, "password": PASSWORD}})  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


def call_out(tmp_path: Path, up: Up) -> sipp.SippResult:
    return sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", hold_ms=500)


@pytest.mark.parametrize(
    ("algorithms", "qop"),
    [(("MD5",), True), (("SHA-256",), True), (("SHA-512-256",), True), (("MD5",), False),
     (("MD5", "SHA-256", "SHA-512-256"), True)],
)  # fmt: skip
def test_a_challenged_call_is_answered_end_to_end(
    tmp_path: Path, carrier_port: int, algorithms: tuple[str, ...], qop: bool
) -> None:
    up = Up(tmp_path / "up", with_carrier_auth(manifests(carrier_port, free_port()))).start()
    try:
        with ChallengingGateway(carrier_port, USER, PASSWORD, algorithms=algorithms, qop=qop) as gateway:
            result = call_out(tmp_path, up)
            [cdr] = up.wait_cdrs(1, timeout=20)
            wait_for(lambda: len(gateway.of("BYE")) == 2 or None, "the BYE answered with credentials")
    finally:
        up.stop()
    assert result.ok, result.output + up.output()
    first, second = gateway.of("INVITE")
    assert (first.credentials, first.answered) == (None, 407)
    assert second.good and second.answered == 200, second
    assert (second.call_id, second.from_tag, second.cseq) == (first.call_id, first.from_tag, first.cseq + 1)
    assert second.branch != first.branch
    strongest = next(a for a in ("SHA-512-256", "SHA-256", "MD5") if a in algorithms)
    assert second.credentials is not None and f"algorithm={strongest}" in second.credentials
    acks = gateway.of("ACK")
    assert any(a.cseq == first.cseq and a.branch == first.branch for a in acks), acks  # the 407's ACK
    [ack_of_2xx] = {(a.cseq, a.credentials) for a in acks if a.cseq == second.cseq}
    assert ack_of_2xx[1] == second.credentials  # the 2xx's ACK carries the INVITE's credentials
    bye_challenged, bye_answered = gateway.of("BYE")
    assert (bye_challenged.answered, bye_answered.answered, bye_answered.good) == (401, 200, True)
    assert bye_answered.cseq == bye_challenged.cseq + 1 and bye_answered.call_id == first.call_id
    assert cdr["status"] == 200 and [a["status"] for a in cdr["attempts"]] == [407, 200], cdr  # type: ignore[index]


def test_stale_nonce_gets_one_more_try(tmp_path: Path, carrier_port: int) -> None:
    up = Up(tmp_path / "up", with_carrier_auth(manifests(carrier_port, free_port()))).start()
    try:
        with ChallengingGateway(carrier_port, USER, PASSWORD, stale_once=True) as gateway:
            result = call_out(tmp_path, up)
            [cdr] = up.wait_cdrs(1, timeout=20)
    finally:
        up.stop()
    assert result.ok, result.output + up.output()
    assert [(i.cseq, i.answered) for i in gateway.of("INVITE")] == [(1, 407), (2, 407), (3, 200)]
    assert [a["status"] for a in cdr["attempts"]] == [407, 407, 200], cdr  # type: ignore[index]


def test_refused_credentials_fail_over_to_the_next_gateway(tmp_path: Path) -> None:
    first_port, second_port = free_port(), free_port()
    text = with_carrier_auth(manifests([first_port, second_port], free_port()))
    up = Up(tmp_path / "up", text).start()
    try:
        with (
            ChallengingGateway(first_port, USER, "not-what-we-have") as refusing,
            ChallengingGateway(second_port, USER, PASSWORD, challenge_in_dialog=False) as taking,
        ):
            result = call_out(tmp_path, up)
            [cdr] = up.wait_cdrs(1, timeout=20)
    finally:
        up.stop()
    assert result.ok, result.output + up.output()
    # One answer to the refusing gateway's challenge, no loop: its second 407 moves the call on.
    tried = [(i.credentials is not None, i.answered) for i in refusing.of("INVITE")]
    assert tried == [(False, 407), (True, 407)]
    assert [i.answered for i in taking.of("INVITE")] == [407, 200]
    assert [a["status"] for a in cdr["attempts"]] == [407, 407, 407, 200], cdr  # type: ignore[index]


@pytest.mark.parametrize(("gateway_password", "gateway_realm", "invites"),
                         [("not-what-we-have", REALM, 2), (PASSWORD, "elsewhere.example", 1)])  # fmt: skip
def test_without_another_gateway_the_caller_gets_the_carriers_status(
    tmp_path: Path, carrier_port: int, gateway_password: str, gateway_realm: str, invites: int
) -> None:
    up = Up(tmp_path / "up", with_carrier_auth(manifests(carrier_port, free_port()))).start()
    try:
        with ChallengingGateway(carrier_port, USER, gateway_password, realm=gateway_realm) as gateway:
            result = sipp.uac_expect(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", 407)
            [cdr] = up.wait_cdrs(1, timeout=20)
    finally:
        up.stop()
    assert result.ok, result.output + up.output()
    seen = gateway.of("INVITE")
    assert len(seen) == invites, seen  # a challenge for another realm is not answered at all
    assert cdr["status"] == 407 and len(cdr["attempts"]) == invites, cdr  # type: ignore[arg-type]


def test_a_trunks_pbx_never_gets_the_carriers_credentials(tmp_path: Path, pbx_port: int) -> None:
    """An inbound call whose PBX target challenges: its 407 goes back to the carrier as it is."""
    up = Up(tmp_path / "up", with_carrier_auth(manifests(free_port(), pbx_port))).start()
    try:
        with ChallengingGateway(pbx_port, USER, PASSWORD, realm=REALM, host="127.0.0.4") as pbx:
            result = sipp.uac_expect(tmp_path / "carrier", up.sip, "127.0.0.1", "+14155550100", 407,
                                     caller="+442071234567")  # fmt: skip
            up.wait_cdrs(1, timeout=20)
    finally:
        up.stop()
    assert result.ok, result.output + up.output()
    assert [(i.credentials, i.answered) for i in pbx.of("INVITE")] == [(None, 407)]


def test_in_dialog_requests_toward_the_carrier_are_answered_too(tmp_path: Path, carrier_port: int) -> None:
    """re-INVITE and INFO from the PBX reach the carrier through its challenges (407, 401); the
    carrier then hangs up."""
    up = Up(tmp_path / "up", with_carrier_auth(manifests(carrier_port, free_port()))).start()
    try:
        with ChallengingGateway(carrier_port, USER, PASSWORD, hang_up_after_info=True) as gateway:
            result = sipp.uac(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567",
                              scenario="pbx_midcall.xml", hold_ms=500)  # fmt: skip
            [cdr] = up.wait_cdrs(1, timeout=20)
    finally:
        up.stop()
    assert result.ok, result.output + up.output()
    flow = [(s.method, s.cseq, s.answered) for s in gateway.seen if s.method != "ACK"]
    assert flow == [("INVITE", 1, 407), ("INVITE", 2, 200), ("INVITE", 3, 407), ("INVITE", 4, 200),
                    ("INFO", 5, 401), ("INFO", 6, 200)], flow  # fmt: skip
    assert all(s.good for s in gateway.seen if s.answered == 200)
    acks = [s.cseq for s in gateway.of("ACK")]
    assert 3 in acks and 4 in acks, acks  # the re-INVITE's 407 (transaction layer) and its 200 (edge)
    assert cdr["hung_up"] == "callee", cdr


@pytest.mark.parametrize(("password", "answered"), [(PASSWORD, True), ("not-what-sipp-has", False)])
def test_sipp_verifies_the_md5_credentials(
    tmp_path: Path, carrier_port: int, password: str, answered: bool
) -> None:
    """SIPp's own digest check (`verifyauth`) as the carrier: an implementation other than ours."""
    text = with_carrier_auth(manifests(carrier_port, free_port())).replace(PASSWORD, password)
    up = Up(tmp_path / "up", text).start()
    carrier = sipp.uas(tmp_path / "carrier", "127.0.0.1", carrier_port, "-m", "1",
                       scenario="carrier_challenges_md5.xml")  # fmt: skip
    try:
        if answered:
            result = call_out(tmp_path, up)
        else:
            result = sipp.uac_expect(tmp_path / "pbx", up.sip, "127.0.0.2", "+442071234567", 403)
        [cdr] = up.wait_cdrs(1, timeout=20)
    finally:
        carrier_out = sipp.stop(carrier, finish_within=10)
        up.stop()
    assert result.ok, result.output + carrier_out + up.output()
    assert [a["status"] for a in cdr["attempts"]] == [401, 200 if answered else 403], cdr  # type: ignore[index]
